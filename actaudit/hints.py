"""Fix suggestions for the commonest data mistakes: a channels-last array, a shape without its batch axis.

Pure shape arithmetic (no torch, no onnx), shared by both backends and the API so that
the same mistake gets the same advice whatever the model's format.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

_LAYOUTS: dict[tuple[int, ...], str] = {
    (0, 2, 3, 1): "NCHW data for an NHWC model",
    (0, 3, 1, 2): "NHWC data for an NCHW model",
}


def _perm_text(perm: tuple[int, ...]) -> str:
    name = _LAYOUTS.get(perm) or ("NLC data for an NCL model" if perm == (0, 2, 1) else "a permuted layout")
    return f"it looks like {name}: transpose it with np.transpose(x, {perm}), or x.permute{perm} for a tensor"


def layout_hint(given: Sequence[int], expected: Sequence[int | None]) -> str | None:
    """How to permute ``given`` (batch axis first and kept) so that it matches ``expected``; ``None`` if no way.

    ``expected`` may hold ``None`` for free dimensions. Only the identity-free permutations
    that keep the batch axis are tried (ranks up to 6).
    """
    n = len(given)
    if n != len(expected) or n < 3 or n > 6:
        return None
    for rest in itertools.permutations(range(1, n)):
        perm = (0, *rest)
        if perm == tuple(range(n)):
            continue
        if all(e is None or given[p] == e for p, e in zip(perm, expected, strict=True)):
            # A free dim matches anything: insist the fixed dims decide it (no guessing on ?x?x?x?).
            if all(e is None for e in expected[1:]):
                return None
            return _perm_text(perm)
    return None


def move_axis_hint(given: Sequence[int], axis: int, size: int) -> str | None:
    """``given[axis]`` should be ``size``: the permutation that brings another axis of that size there."""
    n = len(given)
    if not 0 < axis < n or given[axis] == size:
        return None
    for k in range(n - 1, 0, -1):
        if k != axis and given[k] == size:
            order = [i for i in range(n) if i != k]
            order.insert(axis, k)
            return _perm_text(tuple(order))
    return None


def batch_axis_hint(given: Sequence[int], expected: Sequence[int | None]) -> str | None:
    """``given`` is ``expected`` without its leading batch axis."""
    if len(given) + 1 != len(expected):
        return None
    if all(e is None or e == g for g, e in zip(given, expected[1:], strict=True)):
        dims = "x".join(str(d) for d in given)
        return f"the shape lacks the batch axis: write 1x{dims}, the leading dim being the batch"
    return None


def cast_note(name: str, given: str, want: str) -> str:
    """The warning for an integer array fed to a float input: the numbers are kept, not rescaled."""
    return (
        f"input {name!r} is {given} but the model takes {want}: its values were cast as they are "
        f"(not rescaled); if the model expects normalised inputs, convert the data first, "
        f"e.g. x.astype(np.float32) / 255"
    )


FLOAT_CAST = "converted calibration data"


def float_cast_note(name: str, given: str, want: str) -> str:
    """The note for float data of another precision than the model's: rounded, nothing else changes."""
    return (
        f"{FLOAT_CAST}: input {name!r} is {given}, the model computes in {want}; its values were rounded "
        f"to {want} (store the data as {want} to skip the conversion)"
    )


def dtype_hint(message: str, dtypes: Sequence[str]) -> str | None:
    """A torch dtype mismatch ("Input type (unsigned char) and bias type (float)") caused by integer data."""
    low = message.lower()
    if "type" not in low or not any(d.startswith(("uint", "int")) for d in dtypes):
        return None
    if "should be the same" in low or "expected scalar type" in low or "dtype" in low:
        return (
            "the calibration data is an integer array and the model computes in floating point: convert it "
            "first, e.g. x.astype(np.float32) / 255; nothing is cast silently"
        )
    return None
