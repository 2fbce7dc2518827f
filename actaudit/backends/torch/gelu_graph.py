"""GELU's erf form, ``0.5·x·(1 + erf(x/√2))``, read from a compiled graph's nodes (TorchScript, torch.export).

The capture lists such an ``erf`` among a graph's sites so that the GELU it completes at run time
is named after its module. Only the whole product qualifies: an ``erf`` of a Gaussian CDF
``0.5·(1 + erf(x/√2))`` or of ``x·(1 + erf(x/√2))`` has no place in the list, where it could lend
its name to the GELU after it. The run-time check (:class:`.swish.ErfGelu`) decides the site.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .ops import op_name

_HOPS = 3  # multiplications between ``1 + erf`` and the product's end: x, 0.5, and one spare


class _View:
    """What the walk needs of one graph: a value's producer and users, an op's name and operands."""

    def __init__(
        self,
        op: Callable[[Any], str],
        operands: Callable[[Any], list[Any]],
        output: Callable[[Any], Any],
        users: Callable[[Any], list[Any]],
        producer: Callable[[Any], Any],
        const: Callable[[Any], float | None],
        same: Callable[[Any, Any], bool],
    ) -> None:
        self.op, self.operands, self.output = op, operands, output
        self.users, self.producer, self.const, self.same = users, producer, const, same

    def root2_arg(self, erf: Any) -> Any:
        """The ``x`` of ``erf(x / √2)`` or ``erf(x · (1/√2))``, or None."""
        pre = self.producer(self.operands(erf)[0])
        if pre is None or self.op(pre) not in ("div", "mul"):
            return None
        a, b = self.operands(pre)[:2]
        if self.op(pre) == "div":
            return a if _near(self.const(b), math.sqrt(2.0)) and self.const(a) is None else None
        for t, c in ((a, b), (b, a)):
            if _near(self.const(c), math.sqrt(0.5)) and self.const(t) is None:
                return t
        return None

    def is_gelu(self, erf: Any) -> bool:
        x = self.root2_arg(erf)
        if x is None:
            return False
        for add in self.users(self.output(erf)):
            ins = self.operands(add)
            one = self.op(add) == "add" and any(_near(self.const(v), 1.0) for v in ins[:2])
            alpha = len(ins) < 3 or _near(self.const(ins[2]), 1.0)  # TorchScript's add carries one
            if one and alpha and self._times_half_x(self.output(add), x):
                return True
        return False

    def _times_half_x(self, gate: Any, x: Any) -> bool:
        """Is ``gate`` multiplied, within a few Mul/Div steps, by ``x`` and by 0.5 (or divided by 2)?"""
        frontier: list[tuple[Any, frozenset[str]]] = [(gate, frozenset())]
        for _ in range(_HOPS):
            nxt = []
            for v, have in frontier:
                for use in self.users(v):
                    op, ins = self.op(use), self.operands(use)[:2]
                    if (
                        op not in ("mul", "div")
                        or len(ins) != 2
                        or (op == "div" and not self.same(ins[0], v))
                    ):
                        continue
                    other = ins[1] if self.same(ins[0], v) else ins[0]
                    got = self._factor(op, other, x)
                    if got is None or got & have:
                        continue
                    if have | got == {"x", "half"}:
                        return True
                    nxt.append((self.output(use), have | got))
            frontier = nxt
        return False

    def _factor(self, op: str, v: Any, x: Any) -> frozenset[str] | None:
        c = self.const(v)
        if c is not None:
            return frozenset(["half"]) if _near(c, 0.5 if op == "mul" else 2.0) else None
        if op == "div":
            return None
        if self.same(v, x):
            return frozenset(["x"])
        pre = self.producer(v)  # x·0.5 or x/2, computed before the gate
        if pre is not None and self.op(pre) in ("mul", "div"):
            a, b = self.operands(pre)[:2]
            want = 0.5 if self.op(pre) == "mul" else 2.0
            if self.same(a, x) and _near(self.const(b), want):
                return frozenset(["x", "half"])
            if self.op(pre) == "mul" and self.same(b, x) and _near(self.const(a), want):
                return frozenset(["x", "half"])
        return None


def _near(v: float | None, target: float) -> bool:
    return v is not None and math.isclose(v, target, rel_tol=1e-6)


def _ts_const(v: torch._C.Value) -> float | None:
    if v.node().kind() != "prim::Constant":
        return None
    iv = v.toIValue()
    if isinstance(iv, torch.Tensor):
        return float(iv) if iv.numel() == 1 else None
    return float(iv) if isinstance(iv, (int, float)) and not isinstance(iv, bool) else None


_TS = _View(
    op=lambda n: n.kind().removeprefix("aten::"),
    operands=lambda n: list(n.inputs()),
    output=lambda n: n.output(),
    users=lambda v: [u.user for u in v.uses()],
    producer=lambda v: v.node(),
    const=_ts_const,
    same=lambda a, b: (
        isinstance(a, torch._C.Value) and isinstance(b, torch._C.Value) and a.unique() == b.unique()
    ),
)


def _fx_number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


_FX = _View(
    op=lambda n: op_name(n.target) if getattr(n, "op", None) == "call_function" else "",
    operands=lambda n: list(n.args),
    output=lambda n: n,
    users=lambda v: list(v.users) if isinstance(v, torch.fx.Node) else [],
    producer=lambda v: v if isinstance(v, torch.fx.Node) and v.op == "call_function" else None,
    const=_fx_number,
    same=lambda a, b: a is b,
)


def ts_erf_gelu(erf: torch._C.Node) -> bool:
    """An ``aten::erf`` node of an inlined TorchScript graph that is GELU's erf form."""
    try:
        return _TS.is_gelu(erf)
    except Exception:  # a node the walk cannot read (no single output, an odd constant): no GELU
        return False


def fx_erf_gelu(erf: torch.fx.Node) -> bool:
    """An ``aten.erf`` node of a torch.export graph that is GELU's erf form."""
    try:
        return _FX.is_gelu(erf)
    except Exception:
        return False
