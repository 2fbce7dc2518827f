"""Activation sites that exporters spell out in several nodes (SiLU, GELU, Mish, HardSwish, Softsign, ...).

Each matcher returns the activation kind, its pre-activation tensor, the nodes the
pattern uses (so that the inner ``Sigmoid`` / ``Tanh`` are not reported as sites of
their own) and a label for the report.
"""

from __future__ import annotations

import math

from ...kinds import Activation
from . import proto as onnx
from .graph import DEFAULT_DOMAINS, Scope, attr
from .single import _clip, _f32
from .site import OnnxSite, _site


def _patterns(scope: Scope) -> tuple[list[OnnxSite], set[int]]:
    """Multi-node activation formulas; returns the sites and the ids of the nodes they use."""
    sites: list[OnnxSite] = []
    taken: set[int] = set()
    for i, node in enumerate(scope.graph.node):
        if node.domain not in DEFAULT_DOMAINS or id(node) in taken:
            continue
        hit = None
        params: dict[str, float] = {}
        if node.op_type == "Sigmoid":
            hit = _gate(scope, node, "silu", node.input[0])
            if hit is None:
                hit, beta = _swish_beta(scope, node)
                if hit is not None:
                    # x·σ(βx) = silu(βx)/β: its stuck region in z = βx is silu's, so z is the pre-activation.
                    params = {"beta": beta}
        elif node.op_type == "HardSigmoid":
            a, b = float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5))
            if math.isclose(a, 1 / 6, rel_tol=1e-5) and math.isclose(b, 0.5, rel_tol=1e-5):
                hit = _gate(scope, node, "hardswish", node.input[0])
        elif node.op_type == "Softplus":
            hit = _mish(scope, node)
        elif node.op_type == "Erf":
            hit = _erf_gelu(scope, node)
        elif node.op_type == "Tanh":
            hit = _tanh_gelu(scope, node)
            params = {"tanh": 1.0} if hit is not None else {}
        elif node.op_type == "Clip":
            hit = _clip_hardswish(scope, node)
        elif node.op_type == "Abs":
            hit = _softsign(scope, node)
        if hit is None:
            continue
        kind, x, nodes, label = hit
        if any(id(n) in taken for n in nodes):
            continue
        taken.update(id(n) for n in nodes)
        site = _site(scope, node, i, label, Activation(kind, params), x, nodes[-1].output[0])
        inner = {"Tanh-GELU": "tanh", "Erf-GELU": "erf"}.get(label)
        if inner:  # named after the GELU, as the PyTorch backend names it (``mlp.act/gelu``)
            head, _, last = site.base.rpartition("/")
            site.base = (f"{head}/gelu" if head else "gelu") if last == inner else site.base
            site.derived = None  # a GELU spelled in ops keeps its module's name in every format
        sites.append(site)
    return sites, taken


Hit = tuple[str, str, list[onnx.NodeProto], str]


def _other(node: onnx.NodeProto, name: str) -> str | None:
    """The other input of a binary node, given one of them."""
    if len(node.input) != 2:
        return None
    a, b = node.input
    if a == name:
        return b
    if b == name:
        return a
    return None


def _only(scope: Scope, name: str, op: str) -> list[onnx.NodeProto]:
    return [n for n in scope.uses(name) if n.op_type == op and n.domain in DEFAULT_DOMAINS]


def _gate(scope: Scope, node: onnx.NodeProto, kind: str, x: str) -> Hit | None:
    """``x * g(x)``: the gate output multiplied by the gate's own input."""
    for mul in _only(scope, node.output[0], "Mul"):
        if _other(mul, node.output[0]) == x:
            return kind, x, [node, mul], f"{node.op_type}*Mul"
    return None


def _swish_beta(scope: Scope, sig: onnx.NodeProto) -> tuple[Hit | None, float]:
    """``x * Sigmoid(β·x)`` with a constant β > 0 (Paddle's Swish); the site reads ``z = β·x``."""
    pre = scope.producer(sig.input[0])
    if pre is None or pre.op_type != "Mul" or len(pre.input) != 2:
        return None, 0.0
    a, b = pre.input
    x, c = (b, a) if scope.const(a) is not None else (a, b)
    beta = scope.scalar(c)
    if beta is None or not beta > 0 or scope.const(x) is not None:
        return None, 0.0
    for mul in _only(scope, sig.output[0], "Mul"):
        if _other(mul, sig.output[0]) == x:
            return ("silu", sig.input[0], [pre, sig, mul], "Mul*Sigmoid*Mul"), _f32(beta)
    return None, 0.0


def _mish(scope: Scope, sp: onnx.NodeProto) -> Hit | None:
    x = sp.input[0]
    for t in _only(scope, sp.output[0], "Tanh"):
        for mul in _only(scope, t.output[0], "Mul"):
            if _other(mul, t.output[0]) == x:
                return "mish", x, [sp, t, mul], "Softplus*Tanh*Mul"
    return None


def _close(scope: Scope, name: str | None, value: float, tol: float = 1e-3) -> bool:
    if name is None:
        return False
    v = scope.scalar(name)
    return v is not None and math.isclose(v, value, rel_tol=tol)


def _times_x(
    scope: Scope, start: str, xs: set[str], hops: int = 3
) -> tuple[str, list[onnx.NodeProto]] | None:
    """Follow Mul/Div-by-constant steps from ``start`` until a Mul by one of ``xs``."""
    frontier = [(start, list[onnx.NodeProto]())]
    for _ in range(hops):
        nxt = []
        for name, path in frontier:
            for n in scope.uses(name):
                if n.domain not in DEFAULT_DOMAINS or n.op_type not in ("Mul", "Div"):
                    continue
                other = _other(n, name)
                if other is None:
                    continue
                if n.op_type == "Mul" and other in xs:
                    return other, [*path, n]
                if scope.const(other) is not None and (n.op_type == "Mul" or n.input[0] == name):
                    nxt.append((n.output[0], [*path, n]))
        frontier = nxt
    return None


def _erf_gelu(scope: Scope, erf: onnx.NodeProto) -> Hit | None:
    """``0.5 * x * (1 + erf(x / sqrt(2)))`` in any order of the multiplications."""
    pre = scope.producer(erf.input[0])
    if pre is None or pre.op_type not in ("Div", "Mul"):
        return None
    x = pre.input[0]
    c = pre.input[1]
    if pre.op_type == "Mul" and scope.const(x) is not None:
        x, c = c, x
    want = math.sqrt(2.0) if pre.op_type == "Div" else 1.0 / math.sqrt(2.0)
    if not _close(scope, c, want):
        return None
    for add in _only(scope, erf.output[0], "Add"):
        if not _close(scope, _other(add, erf.output[0]), 1.0):
            continue
        found = _half_x(scope, add.output[0], x)
        if found is not None:
            return "gelu", x, [pre, erf, add, *found], "Erf-GELU"
    return None


def _ancestors(scope: Scope, name: str, depth: int) -> set[str]:
    seen = {name}
    frontier = [name]
    for _ in range(depth):
        nxt = []
        for t in frontier:
            node = scope.producer(t)
            if node is None or node.op_type not in ("Mul", "Add", "Pow", "Div"):
                continue
            for inp in node.input:
                if inp and inp not in seen and scope.const(inp) is None:
                    seen.add(inp)
                    nxt.append(inp)
        frontier = nxt
    return seen


def _tanh_gelu(scope: Scope, t: onnx.NodeProto) -> Hit | None:
    """``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x³)))``: the tanh approximation of GELU.

    The Tanh's input is read back as a polynomial in each of its ancestors: whichever spelling
    (GPT-2's ``gelu_new``, ``x·c·(1 + a·x·x)``, constants on either side) it must equal
    ``c·x + c·a·x³``; then the Tanh's ``1 + t`` must be multiplied by ``0.5·x``.
    """
    for x in sorted(_ancestors(scope, t.input[0], 6) - {t.input[0]}):
        p = _poly(scope, t.input[0], x, 8)
        if p is None or set(p) - {0, 1, 3} or abs(p.get(0, 0.0)) > 1e-6:
            continue
        if not (
            math.isclose(p.get(1, 0.0), GELU_C, rel_tol=1e-3)
            and math.isclose(p.get(3, 0.0), GELU_C * GELU_A, rel_tol=1e-3)
        ):
            continue
        for add in _only(scope, t.output[0], "Add"):
            if not _close(scope, _other(add, t.output[0]), 1.0):
                continue
            found = _half_x(scope, add.output[0], x)
            if found is not None:
                return "gelu", x, [t, add, *found], "Tanh-GELU"
    return None


GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715
Poly = dict[int, float]  # degree -> coefficient


def _poly(scope: Scope, name: str, x: str, depth: int) -> Poly | None:
    """``name`` as a polynomial in ``x`` through Mul/Add/Sub/Pow/Div-by-constant nodes (degree ≤ 3), or None."""
    if name == x:
        return {1: 1.0}
    c = scope.scalar(name)
    if c is not None:
        return {0: c}
    node = scope.producer(name)
    if depth == 0 or node is None or node.domain not in DEFAULT_DOMAINS or len(node.input) != 2:
        return None
    if node.op_type not in ("Mul", "Add", "Sub", "Div", "Pow"):
        return None
    a = _poly(scope, node.input[0], x, depth - 1)
    if a is None:
        return None
    if node.op_type == "Pow":
        e = scope.scalar(node.input[1])
        if e is None or e not in (1.0, 2.0, 3.0):
            return None
        out: Poly | None = {0: 1.0}
        for _ in range(int(e)):
            out = _times(out, a) if out is not None else None
        return out
    b = _poly(scope, node.input[1], x, depth - 1)
    if b is None:
        return None
    if node.op_type == "Mul":
        return _times(a, b)
    if node.op_type == "Div":
        d = b.get(0, 0.0)
        return {k: v / d for k, v in a.items()} if set(b) == {0} and d != 0 else None
    sign = -1.0 if node.op_type == "Sub" else 1.0
    return {k: a.get(k, 0.0) + sign * b.get(k, 0.0) for k in set(a) | set(b)}


def _times(a: Poly, b: Poly) -> Poly | None:
    out: Poly = {}
    for i, u in a.items():
        for j, v in b.items():
            out[i + j] = out.get(i + j, 0.0) + u * v
    return out if max(out) <= 3 else None


def _half_x(scope: Scope, start: str, x: str, hops: int = 3) -> list[onnx.NodeProto] | None:
    """The Mul/Div nodes that take ``start`` to ``0.5 · x · start`` (``x`` possibly pre-scaled)."""
    frontier: list[tuple[str, float, int, list[onnx.NodeProto]]] = [(start, 1.0, 0, [])]
    for _ in range(hops):
        nxt = []
        for name, coef, deg, path in frontier:
            for n in scope.uses(name):
                other = _other(n, name)
                if n.domain not in DEFAULT_DOMAINS or other is None or n.op_type not in ("Mul", "Div"):
                    continue
                p = _poly(scope, other, x, 2)
                if p is None or len(p) != 1:
                    continue
                ((k, v),) = p.items()
                if n.op_type == "Div" and (k != 0 or v == 0 or n.input[0] != name):
                    continue
                c, d = (coef / v, deg) if n.op_type == "Div" else (coef * v, deg + k)
                if d == 1 and math.isclose(c, 0.5, rel_tol=1e-3):
                    return [*path, n]
                if d <= 1:
                    nxt.append((n.output[0], c, d, [*path, n]))
        frontier = nxt
    return None


def _clip_hardswish(scope: Scope, clip: onnx.NodeProto) -> Hit | None:
    """``x * Clip(x + 3, 0, 6) / 6`` (hardswish), or ``Clip(x + 3, 0, 6) / 6`` alone (hardsigmoid)."""
    act = _clip(scope, clip)
    if act is None or act.kind != "relu6":
        return None
    add = scope.producer(clip.input[0])
    if add is None or add.op_type != "Add" or len(add.input) != 2:
        return None
    x = (
        add.input[0]
        if _close(scope, add.input[1], 3.0)
        else add.input[1]
        if _close(scope, add.input[0], 3.0)
        else None
    )
    if x is None:
        return None
    found = _times_x(scope, clip.output[0], {x})
    if found:
        return "hardswish", x, [add, clip, *found[1]], "Clip-HardSwish"
    for n in scope.uses(clip.output[0]):
        if (n.op_type == "Div" and _close(scope, n.input[1], 6.0)) or (
            n.op_type == "Mul" and _close(scope, _other(n, clip.output[0]), 1 / 6)
        ):
            return "hardsigmoid", x, [add, clip, n], "Clip-HardSigmoid"
    return None


def _softsign(scope: Scope, ab: onnx.NodeProto) -> Hit | None:
    """``x / (1 + |x|)``."""
    x = ab.input[0]
    for add in _only(scope, ab.output[0], "Add"):
        if not _close(scope, _other(add, ab.output[0]), 1.0):
            continue
        for div in _only(scope, add.output[0], "Div"):
            if div.input[0] == x and div.input[1] == add.output[0]:
                return "softsign", x, [ab, add, div], "Abs-Softsign"
    return None
