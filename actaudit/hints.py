"""Fix suggestions for the commonest data mistakes: a channels-last array, a shape without its batch axis.

Pure shape arithmetic (no torch, no onnx), shared by both backends and the API so that
the same mistake gets the same advice whatever the model's format.
"""

from __future__ import annotations

import itertools
import math
import re
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
# The note of an audit whose ReLU sites were measured from their output (--relu-from-output).
RELU_FROM_OUTPUT = "ReLU sites measured from their output"


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


# torch's two wordings of "a conv layer got data of the wrong rank" (eager/scripted, and traced graphs).
_CONV_RANK = re.compile(r"Expected \d+D \(unbatched\) or (\d+)D \(batched\) input to conv(\d)d")
_CONV_WEIGHT = re.compile(r"Expected (\d+)-dimensional input for \d+-dimensional weight \[([\d, ]+)\]")
_SPATIAL = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def conv_rank(message: str) -> tuple[int, list[int] | None] | None:
    """The batched input rank a conv layer asked for in a torch error, and its weight's shape if named."""
    m = _CONV_RANK.search(message)
    if m:
        return int(m.group(1)), None
    w = _CONV_WEIGHT.search(message)
    if w:
        return int(w.group(1)), [int(d) for d in w.group(2).split(",")]
    return None


def conv_input_hint(given: Sequence[int], rank: int, weight: Sequence[int] | None) -> str | None:
    """A conv layer refused data of another rank (a flat array fed to a CNN): the input shape it takes.

    ``weight`` is the conv's weight shape (out, in/groups, *kernel) when known; its second dim
    names the channels. Flat samples whose size splits into equal spatial sides get a ready reshape.
    """
    spatial = _SPATIAL.get(rank - 2)
    if spatial is None or len(given) == rank:
        return None
    channels = weight[1] if weight is not None and len(weight) == rank else None
    layout = "x".join(["N", "C" if channels is None else str(channels), *spatial])
    conv = f"conv{rank - 2}d" + ("" if weight is None else f", weight {'x'.join(map(str, weight))},")
    text = f"the model's {conv} takes {rank}-D input {layout}"
    per = math.prod(given[1:])
    if len(given) != 2 or channels is None or per % channels:
        return text + f": reshape the data ({'x'.join(map(str, given))}) to {rank}-D, the batch axis first"
    side = round((per // channels) ** (1 / len(spatial)))
    if channels * side ** len(spatial) == per:
        dims = ", ".join([str(side)] * len(spatial))
        square = " if they are square" if len(spatial) > 1 else ""
        return text + f": reshape the flat samples, e.g. x.reshape(-1, {channels}, {dims}){square}"
    return text + f": reshape each flat sample's {per} values to {channels}x{'x'.join(spatial)}"
