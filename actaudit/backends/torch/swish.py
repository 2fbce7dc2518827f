"""Activations that torch spells as several ops: SiLU as ``x * sigmoid(x)`` (or ``x * sigmoid(β·x)``),
softsign as ``x / (1 + |x|)``, GELU's tanh approximation as ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``
and GELU itself as ``0.5·x·(1 + erf(x/√2))``. Weak keys only: an entry dies with the tensor it is keyed on."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        self.erf_gelu = ErfGelu()

    def end_forward(self) -> None:
        self.sigmoid_out = WeakIdKeyDictionary()
        self.gelu = TanhGelu()  # a chain never spans two forwards
        self.erf_gelu = ErfGelu()

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


# GELU's erf form 0.5·x·(1 + erf(x/√2)) (transformers' gelu_python, BERT's original code): the factors
# of its product, each named once; a product of all three is the GELU's output.
_X, _HALF, _GATE = "x", "half", "gate"
_GELU = frozenset([_X, _HALF, _GATE])
_STAND_IN = frozenset([_X, _HALF])  # a tensor taken for x·0.5: its values decide
_MULS = frozenset(["mul", "mul_", "__mul__", "__rmul__", "__imul__"])
_DIVS = frozenset(["div", "div_", "__truediv__", "__itruediv__", "true_divide"])
_TRACKED = _MULS | _DIVS | _ADDS
ERFS = frozenset(["erf", "special_erf"])
Naming = tuple[str, str, str]  # (site base, module path, op label) of the erf that a chain started from
Completed = tuple[torch.Tensor, Naming, bool]  # x, the erf's naming, whether each factor was seen


@dataclass(frozen=True)
class _Product:
    x: torch.Tensor
    factors: frozenset[str]  # {"erf"} for erf(x/√2) itself, else the gate and a subset of the rest
    naming: Naming


class ErfGelu:
    """Follows GELU's erf form through its ops as they run, in any order of its multiplications.

    ``x/√2`` (or ``x·(1/√2)``) remembers its ``x``; an ``erf`` of it is named by the caller
    (:meth:`erf_of` gives the ``x``, :meth:`named_erf` keeps the name); ``1 + erf`` is the gate;
    products of the gate with ``x`` and ``0.5`` (or a division by 2) are followed until
    :meth:`track` sees all three. ``x·0.5`` computed before the gate (BERT's ``x * 0.5 * (1 + erf)``)
    is not followed, as it would be for every halving of a model: a tensor of ``x``'s shape that
    multiplies the gate stands for it, and the values of that call decide. An ``erf`` of
    anything else, or a chain that never completes, is no site: a Gaussian CDF
    ``0.5·(1 + erf(x/√2))`` lacks the factor ``x``.
    """

    def __init__(self) -> None:
        self._scaled: WeakIdKeyDictionary = WeakIdKeyDictionary()  # x/√2 -> x
        self._chain: WeakIdKeyDictionary = WeakIdKeyDictionary()  # erf(x/√2) and products with its gate
        # ids of the keys: a cheap first test (an id may outlive its tensor; the dictionaries decide)
        self._scaled_ids: set[int] = set()
        self._ids: set[int] = set()

    def erf_of(self, args: tuple[object, ...]) -> torch.Tensor | None:
        """The ``x`` of ``erf(x/√2)``, or None for an erf of anything else."""
        z = args[0] if args else None
        if id(z) not in self._scaled_ids or not isinstance(z, torch.Tensor):
            return None
        return self._scaled.get(z)

    def named_erf(self, out: object, x: torch.Tensor, naming: Naming) -> None:
        if isinstance(out, torch.Tensor) and out.shape == x.shape:
            self._keep(out, _Product(x, frozenset(["erf"]), naming))

    def track(self, name: str, args: tuple[object, ...], out: object) -> Completed | None:
        """After one op: (x, the erf's naming, whether x·0.5 was seen) when ``out`` is
        ``0.5·x·(1 + erf(x/√2))``, else None."""
        if name not in _TRACKED or len(args) < 2 or not isinstance(out, torch.Tensor):
            return None
        a, b = args[0], args[1]
        pa = self._chain.get(a) if id(a) in self._ids else None
        pb = self._chain.get(b) if id(b) in self._ids else None
        if name in _ADDS:
            if pa is not None or pb is not None:
                self._gate(args, out)
            return None
        ca, cb = _scalar_value(a), _scalar_value(b)
        if name in _DIVS:
            if cb is not None and isinstance(a, torch.Tensor) and ca is None:
                if pa is not None:
                    return self._product(out, pa, None, _HALF if _near(cb, 2.0) else None)
                if _near(cb, math.sqrt(2.0)) and out.is_floating_point():
                    self._scale(out, a)
            return None
        if pa is None and pb is None:
            for t, ct, c in ((a, ca, cb), (b, cb, ca)):
                if ct is None and _near(c, math.sqrt(0.5)) and isinstance(t, torch.Tensor):
                    if out.is_floating_point():
                        self._scale(out, t)
                    break
            return None
        p, other, c = (pa, b, cb) if pa is not None else (pb, a, ca)
        if c is not None:
            return self._product(out, p, None, _HALF if _near(c, 0.5) else None)
        return self._product(out, p, other, None)

    def _gate(self, args: tuple[object, ...], out: torch.Tensor) -> None:
        """``1 + erf(x/√2)`` (an addition whose alpha, if any, is 1)."""
        alpha = _scalar_value(args[2]) if len(args) > 2 else 1.0
        for e, one in ((args[0], args[1]), (args[1], args[0])):
            p = self._chain.get(e) if isinstance(e, torch.Tensor) else None
            if p is not None and p.factors == {"erf"} and _is_one(one) and alpha == 1.0:
                self._keep(out, _Product(p.x, frozenset([_GATE]), p.naming))
                return

    def _product(
        self, out: torch.Tensor, p: _Product | None, other: object, factor: str | None
    ) -> Completed | None:
        """The gate's product ``p`` times a constant ``factor`` (0.5) or a tensor ``other``."""
        if p is None or "erf" in p.factors or out.shape != p.x.shape or out is p.x:
            return None  # no piece of a gate, a broadcast, or x itself changed in place
        if other is not None:
            q = self._chain.get(other) if id(other) in self._ids else None
            if q is not None:
                if q.x is not p.x or "erf" in q.factors:
                    return None
                got = q.factors
            elif other is p.x:
                got = frozenset([_X])
            elif isinstance(other, torch.Tensor) and other.shape == p.x.shape:
                got = _STAND_IN  # x·0.5 or x/2, computed before the gate
            else:
                return None
        elif factor is not None:
            got = frozenset([factor])
        else:
            return None
        if got & p.factors:
            return None  # a factor twice: not GELU's product
        factors = p.factors | got
        if factors == _GELU:
            return p.x, p.naming, got is not _STAND_IN
        self._keep(out, _Product(p.x, factors, p.naming))
        return None

    def _keep(self, out: torch.Tensor, p: _Product) -> None:
        self._chain[out] = p
        self._ids.add(id(out))

    # A tensor that becomes the x of x/√2 loses its own entry: an entry's x then never holds another
    # x alive, so a run of x/√2 ops (a residual stream scaled every layer) pins one tensor, not the run.
    def _scale(self, out: torch.Tensor, x: torch.Tensor) -> None:
        if id(x) in self._scaled_ids:
            self._scaled.pop(x, None)
        self._scaled[out] = x
        self._scaled_ids.add(id(out))


def is_erf_gelu(y: torch.Tensor, x: torch.Tensor) -> bool:
    """``y == 0.5·x·(1 + erf(x/√2))`` elementwise, within the rounding of ``x``'s dtype."""
    if y.shape != x.shape or y.numel() == 0:
        return False
    with torch._C.DisableTorchFunction():
        y, x = y.detach().reshape(-1)[:_CHECKED], x.detach().reshape(-1)[:_CHECKED]
        xf = x.double()
        want = 0.5 * xf * (1.0 + torch.erf(xf / math.sqrt(2.0)))
        eps = torch.finfo(x.dtype).eps if x.is_floating_point() else 1e-7
        return bool(((y.double() - want).abs() <= 16 * eps * (1.0 + xf.abs())).all())


def _near(v: float | None, target: float) -> bool:
    return v is not None and math.isclose(v, target, rel_tol=1e-6)


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
