"""Activations that torch spells as several ops: SiLU as ``x * sigmoid(x)`` (or ``x * sigmoid(β·x)``),
softsign as ``x / (1 + |x|)``, GELU's tanh approximation as ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``.
Weak keys only: an entry dies with the tensor it is keyed on."""

from __future__ import annotations

import math

import torch
from torch.utils.weak import WeakIdKeyDictionary

SiteKey = tuple[str, int]


class SpelledOut:
    """Recognises the multi-op spellings of SiLU and softsign as the ops run."""

    def __init__(self) -> None:
        self.sigmoid_out: WeakIdKeyDictionary = WeakIdKeyDictionary()  # held sigmoid output -> (key, input)
        self.scaled_of: WeakIdKeyDictionary = WeakIdKeyDictionary()  # β·x -> (x, β)
        # softsign has no ATen op: it runs as x / (1 + |x|); these map |x| and 1 + |x| back to x.
        self._abs_of: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._one_plus_abs_of: WeakIdKeyDictionary = WeakIdKeyDictionary()

        self.gelu = TanhGelu()

    def end_forward(self) -> None:
        self.sigmoid_out = WeakIdKeyDictionary()
        self.gelu = TanhGelu()  # a chain never spans two forwards

    def sigmoid_output(self, key: SiteKey, x: object, out: torch.Tensor) -> None:
        """A held sigmoid site's output: a Mul of it by its own input makes the site a SiLU."""
        self.sigmoid_out[out] = (key, x)

    def mul(self, args: tuple[object, ...], out: torch.Tensor) -> tuple[SiteKey, float] | None:
        """``x * sigmoid(x)`` or ``x * sigmoid(β·x)`` (β a positive constant): (the sigmoid site, β)."""
        a, b = args[0], args[1]
        for t, c in ((a, b), (b, a)):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                beta = _scalar_value(c)
                if beta is not None:
                    self.scaled_of[out] = (t, beta)
        if not self.sigmoid_out:
            return None
        for g, other in ((a, b), (b, a)):
            if not isinstance(g, torch.Tensor) or g not in self.sigmoid_out:
                continue
            key, z = self.sigmoid_out[g]
            if other is z:
                return key, 1.0
            if isinstance(other, torch.Tensor) and z in self.scaled_of and self.scaled_of[z][0] is other:
                beta = float(self.scaled_of[z][1])
                if beta > 0:
                    return key, beta
        return None

    def track_softsign(self, name: str, args: tuple[object, ...], out: object) -> None:
        if not isinstance(out, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
            return
        if name == "abs" and args[0].is_floating_point():
            self._abs_of[out] = args[0]
        elif name == "add" and args[0] in self._abs_of and len(args) > 1 and _is_one(args[1]):
            self._one_plus_abs_of[out] = self._abs_of[args[0]]

    def is_softsign(self, args: tuple[object, ...]) -> bool:
        return (
            len(args) == 2
            and isinstance(args[1], torch.Tensor)
            and args[1] in self._one_plus_abs_of
            and self._one_plus_abs_of[args[1]] is args[0]
        )


# GELU's tanh approximation (Hendrycks & Gimpel 2016): tanh(√(2/π)·(x + 0.044715·x³)). GPT-2's
# ``gelu_new`` and transformers' NewGELU/FastGELU/AccurateGELU/GELUTanh(python) spell it with these ops.
GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715
_CHECKED = 8192  # elements compared by is_tanh_gelu
_ADDS = frozenset(["add", "add_", "__add__", "__radd__", "__iadd__"])
_ARITH = _ADDS | {"pow", "__pow__", "mul", "mul_", "__mul__", "__rmul__", "__imul__"}


class TanhGelu:
    """Follows the argument of a tanh back to one tensor ``x`` through the ops of GELU's tanh form.

    A chain starts at ``pow(x, 3)``, ``x * x``, or ``x`` times one of the formula's constants; it
    goes on through Mul/Add/Pow whose tensor operands all come from the same ``x`` (or are ``x``).
    :meth:`root` then names that ``x``; :func:`is_tanh_gelu` checks the values themselves.
    """

    def __init__(self) -> None:
        self.root_of: WeakIdKeyDictionary = WeakIdKeyDictionary()  # chain tensor -> (x, nonlinear)
        # ids of chain tensors: a cheap first test (an id may outlive its tensor; root_of decides)
        self._ids: set[int] = set()

    def track(self, name: str, args: tuple[object, ...], out: object) -> None:
        if name not in _ARITH or not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return
        if name in _ADDS and not any(id(t) in self._ids for t in args[:2]):
            return  # an addition never starts a chain: most of a model's arithmetic stops here
        tensors = [a for a in args[:2] if isinstance(a, torch.Tensor) and _scalar_value(a) is None]
        consts = [v for a in args[:2] if (v := _scalar_value(a)) is not None]
        if not tensors:
            return
        found = [self.root_of.get(t) for t in tensors]
        roots = {id(f[0] if f is not None else t) for f, t in zip(found, tensors, strict=True)}
        if len(roots) != 1:
            return
        x = found[0][0] if found[0] is not None else tensors[0]
        nonlinear = any(f is not None and f[1] for f in found)
        if name.startswith(("pow", "__pow__")):
            if consts != [3.0]:
                return
            nonlinear = True
        elif len(tensors) == 2 and name not in _ADDS:
            nonlinear = True  # x·x, or a product of two pieces of the chain
        elif all(f is None for f in found) and not any(_near(c, GELU_A) or _near(c, GELU_C) for c in consts):
            return  # a chain starts only at the formula's own constants: plain arithmetic stays untracked
        if tuple(out.shape) == tuple(x.shape):
            self.root_of[out] = (x, nonlinear)
            self._ids.add(id(out))

    def root(self, z: torch.Tensor) -> torch.Tensor | None:
        """The ``x`` that a tanh argument ``z`` was computed from through a cubic term, or None."""
        found = self.root_of.get(z)
        return found[0] if found is not None and found[1] else None


def is_tanh_gelu(z: torch.Tensor, x: torch.Tensor) -> bool:
    """``z == √(2/π)·(x + 0.044715·x³)`` elementwise, within the rounding of ``x``'s dtype."""
    if z.shape != x.shape or z.numel() == 0:
        return False
    with torch._C.DisableTorchFunction():
        # The first elements decide (an identity of formulas, not a statistic): a bounded check.
        z, x = z.detach().reshape(-1)[:_CHECKED], x.detach().reshape(-1)[:_CHECKED]
        xf = x.double()
        want = GELU_C * (xf + GELU_A * xf * xf * xf)
        err = (z.detach().double() - want).abs()
        eps = torch.finfo(x.dtype).eps if x.is_floating_point() else 1e-7
        tol = 16 * eps * (1.0 + want.abs() + GELU_C * xf.abs() * (1.0 + 3 * GELU_A * xf * xf))
        return bool((err <= tol).all())


def _near(v: float, target: float) -> bool:
    return math.isclose(v, target, rel_tol=1e-6)


def _scalar_value(c: object) -> float | None:
    """A Python number or a one-element tensor that is not a graph activation (a constant)."""
    if isinstance(c, bool):
        return None
    if isinstance(c, (int, float)):
        return float(c)
    if isinstance(c, torch.Tensor) and c.numel() == 1 and c.ndim == 0:
        return float(c.item())
    return None


def _is_one(x: object) -> bool:
    if isinstance(x, torch.Tensor):
        return x.numel() == 1 and float(x.item()) == 1.0
    return isinstance(x, (int, float)) and float(x) == 1.0
