"""Which ONNX nodes are activation sites, what their pre-activation tensor is, and their unit axis.

A site is one activation call in the graph: a single op (``Relu``, ``Clip``, …) or an
exporter's spelled-out pattern (``x * Sigmoid(x)`` is one silu site; the ``Erf`` and
``Tanh`` GELU formulas, ``x * Tanh(Softplus(x))``, ``x * Clip(x + 3, 0, 6) / 6`` and
``x / (1 + |x|)`` are one site each, and their inner ``Sigmoid``/``Tanh`` are not
reported as saturating units). Sites inside ``If`` branches and ``Loop`` bodies are
found too; those the instrumentation cannot reach carry an ``uncovered`` reason.

Names follow the PyTorch backend where the dynamo exporter recorded module paths
(``pkg.torch.onnx.name_scopes``): ``layer1.0.relu`` for an activation module,
``block/relu`` for a functional call inside ``block``, ``#k`` when one module runs at
several places. Otherwise a site is named after its node (or its output).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from ... import unitaxis as ua
from ...kinds import ACTIVATION_MODULES, Activation, classify_clamp
from ...naming import site_names
from .graph import DEFAULT_DOMAINS, Scope, attr, subgraphs

CONV = "conv"
LINEAR = "linear"

_PRODUCERS = {
    "Conv": CONV,
    "ConvTranspose": CONV,
    "ConvInteger": CONV,
    "QLinearConv": CONV,
    "FusedConv": CONV,
    "NhwcConv": None,
    "MatMul": LINEAR,
    "Gemm": LINEAR,
    "MatMulInteger": LINEAR,
    "QLinearMatMul": LINEAR,
    "FusedMatMul": LINEAR,
    "FusedGemm": LINEAR,
    "Einsum": LINEAR,
}
# Ops whose output keeps the unit layout of their first tagged input.
_CARRIERS = frozenset(
    [
        "BatchNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "LayerNormalization",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Identity",
        "Cast",
        "Dropout",
        "Neg",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "Mish",
        "Softplus",
        "HardSwish",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "Softsign",
        "Clip",
        "Max",
        "Min",
        "Where",
        # Pooling, resampling and padding change the spatial axes, not the channels.
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "GlobalLpPool",
        "Resize",
        "Upsample",
        "Pad",
        "LRN",
    ]
)
_RESHAPES = frozenset(["Reshape", "Flatten", "Squeeze", "Unsqueeze"])
_RECURRENT = {"LSTM": "Sigmoid, Tanh, Tanh", "GRU": "Sigmoid, Tanh", "RNN": "Tanh"}

_TORCH_HARDSIGMOID = (1.0 / 6.0, 0.5)
_ONNX_SELU = (1.67326319217681884765625, 1.05070102214813232421875)


@dataclass
class OnnxSite:
    """One activation call in the graph, with what the instrumentation needs to reduce it."""

    base: str  # name before de-duplication (#k suffixes)
    op: str  # ONNX op(s) as found, e.g. "Relu" or "Sigmoid*Mul"
    act: Activation
    x: str  # the pre-activation tensor
    scope: Scope
    order: tuple[int, ...]
    module: str = ""
    tag: str | None = None  # CONV / LINEAR / None: the op that produced x
    axis_tag: ua.Tag | None = None  # the unit axis followed from its producer (static ranks)
    y: str = ""  # the activation's output, for the consumer rule
    relu_out: str | None = None  # a Relu's output (max(x, 0)), reused instead of recomputed
    unit_slopes: list[float] | None = None
    uncovered: str | None = None  # why it cannot be audited, if so
    name: str = ""  # unique final name
    params_note: str = ""

    @property
    def rank(self) -> int | None:
        return self.scope.type_of(self.x)[1]

    @property
    def elem_type(self) -> int:
        return self.scope.type_of(self.x)[0]

    @property
    def static_shape(self) -> tuple[int | None, ...] | None:
        return self.scope.type_of(self.x)[2]


@dataclass
class Found:
    sites: list[OnnxSite] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_sites(graph: onnx.GraphProto) -> Found:
    """Every activation site of the model, in graph order (subgraph sites at their owner)."""
    found = Found()
    top = Scope.build(graph)
    _scan_scope(top, found)
    found.sites.sort(key=lambda s: s.order)
    _dedupe(found.sites)
    return found


def _scan_scope(scope: Scope, found: Found) -> None:
    sites, taken = _patterns(scope)
    for i, node in enumerate(scope.graph.node):
        if id(node) in taken:
            continue
        site = _single(scope, node, i)
        if site is not None:
            sites.append(site)
        for k, (attr_name, g) in enumerate(subgraphs(node)):
            kw = {
                "parent": scope,
                "owner": node,
                "attr": attr_name,
                "path": f"{scope.path + '/' if scope.path else ''}{node.name or node.op_type}/{attr_name}",
                "order": (*scope.order, i, k),
                "loops": scope.loops + (node.op_type in ("Loop", "Scan")),
                "ifs": scope.ifs + (node.op_type == "If"),
            }
            sub = Scope.build(g, **kw)
            _scan_scope(sub, found)
    for site in sites:
        site.uncovered = site.uncovered or _reach(site.scope)
        found.sites.append(site)


def _reach(scope: Scope) -> str | None:
    """Why a subgraph's statistics cannot be brought out, or None if they can."""
    s: Scope | None = scope
    loop_seen = False
    while s is not None and s.owner is not None:
        op = s.owner.op_type if s.owner.domain in DEFAULT_DOMAINS else f"{s.owner.domain}.{s.owner.op_type}"
        if op not in ("If", "Loop"):
            return f"inside a {op} body, whose outputs cannot carry per-unit statistics out"
        if op == "Loop":
            if loop_seen:
                return "inside nested Loop bodies; only one level of Loop is instrumented"
            loop_seen = True
        elif loop_seen:
            # An If inside a Loop body yields differently shaped outputs per iteration.
            return "inside an If branch within a Loop body; statistics there cannot be stacked per iteration"
        s = s.parent
    return None


# -- single-op sites -----------------------------------------------------------------------
def _f32(v: float) -> float:
    """A float32 attribute as the decimal a user wrote (0.30000001192092896 → 0.3)."""
    return float(str(np.float32(v)))


def _single(scope: Scope, node: onnx.NodeProto, i: int) -> OnnxSite | None:
    op = node.op_type
    if not node.input or not node.input[0]:
        return None
    if node.domain == "com.microsoft":
        return _ms_single(scope, node, i)
    if node.domain not in DEFAULT_DOMAINS:
        return None
    if op in _RECURRENT:
        gates = attr(node, "activations", None)
        names = (
            ", ".join(g.decode() if isinstance(g, bytes) else str(g) for g in gates)
            if gates
            else _RECURRENT[op]
        )
        return OnnxSite(
            base=node.name or node.output[0],
            op=op,
            act=Activation("sigmoid"),
            x=node.input[0],
            scope=scope,
            order=(*scope.order, i),
            uncovered=f"its gate activations ({names}) run inside the {op} op; their pre-activations are never tensors",
        )
    act: Activation | None = None
    slopes = None
    if op == "Relu":
        act = Activation("relu")
    elif op == "LeakyRelu":
        act = Activation("leaky_relu", {"negative_slope": _f32(attr(node, "alpha", 0.01))})
    elif op == "PRelu":
        act = Activation("prelu")
        w = scope.const(node.input[1]) if len(node.input) > 1 else None
        if w is not None:
            slopes = [float(v) for v in np.asarray(w, dtype=np.float64).ravel()]
    elif op == "Elu":
        act = Activation("elu", {"alpha": _f32(attr(node, "alpha", 1.0))})
    elif op == "Selu":
        alpha, gamma = float(attr(node, "alpha", _ONNX_SELU[0])), float(attr(node, "gamma", _ONNX_SELU[1]))
        if math.isclose(alpha, _ONNX_SELU[0], rel_tol=1e-6) and math.isclose(
            gamma, _ONNX_SELU[1], rel_tol=1e-6
        ):
            act = Activation("selu")
        else:
            act = Activation("selu", {"alpha": _f32(alpha), "scale": _f32(gamma)})
    elif op == "Celu":
        act = Activation("celu", {"alpha": _f32(attr(node, "alpha", 1.0))})
    elif op == "Gelu":
        act = Activation("gelu")
    elif op == "Mish":
        act = Activation("mish")
    elif op == "Softplus":
        act = Activation("softplus")
    elif op == "HardSwish":
        act = Activation("hardswish")
    elif op == "Sigmoid":
        act = Activation("sigmoid")
    elif op == "Tanh":
        act = Activation("tanh")
    elif op == "Softsign":
        act = Activation("softsign")
    elif op == "HardSigmoid":
        act = hardsigmoid(float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5)))
    elif op == "Clip":
        act = _clip(scope, node)
    if act is None:
        return None
    site = _site(scope, node, i, op, act, node.input[0])
    site.unit_slopes = slopes
    if op == "Relu":
        site.relu_out = node.output[0]
    return site


def hardsigmoid(alpha: float, beta: float) -> Activation:
    if math.isclose(alpha, _TORCH_HARDSIGMOID[0], rel_tol=1e-6) and math.isclose(beta, 0.5, rel_tol=1e-6):
        return Activation("hardsigmoid")
    return Activation("hardsigmoid", {"alpha": _f32(alpha), "beta": _f32(beta)})


def _clip(scope: Scope, node: onnx.NodeProto) -> Activation | None:
    if len(node.input) > 1 or not any(a.name in ("min", "max") for a in node.attribute):
        lo = _bound(scope, node, 1)
        hi = _bound(scope, node, 2)
    else:  # opset < 11: bounds are attributes
        lo = float(attr(node, "min", -math.inf))
        hi = float(attr(node, "max", math.inf))
    if (lo is not None and math.isnan(lo)) or (hi is not None and math.isnan(hi)):
        return None  # a bound computed at run time: not a constant activation
    return classify_clamp(None if lo == -math.inf else lo, None if hi == math.inf else hi)


def _bound(scope: Scope, node: onnx.NodeProto, k: int) -> float | None:
    if len(node.input) <= k or not node.input[k]:
        return None
    v = scope.scalar(node.input[k])
    return math.nan if v is None else v


def _ms_single(scope: Scope, node: onnx.NodeProto, i: int) -> OnnxSite | None:
    """onnxruntime's contrib ops (com.microsoft) that are activations."""
    op = node.op_type
    if op in ("Gelu", "FastGelu", "BiasGelu", "QuickGelu"):
        if op == "QuickGelu":
            # x·sigmoid(alpha·x) inside one op: SiLU-family, but alpha·x is never a tensor.
            alpha = _f32(attr(node, "alpha", 1.702))
            site = _site(
                scope, node, i, f"com.microsoft.{op}", Activation("silu", {"beta": alpha}), node.input[0]
            )
            site.uncovered = f"{op} computes x·sigmoid({alpha}·x) inside the op; its pre-activation {alpha}·x is never a tensor"
            return site
        site = _site(scope, node, i, f"com.microsoft.{op}", Activation("gelu"), node.input[0])
        if op == "BiasGelu" or (op == "FastGelu" and len(node.input) > 1 and node.input[1]):
            site.uncovered = f"{op} adds its bias inside the op, so the pre-activation is never a tensor"
        return site
    if op in ("FusedConv", "FusedGemm", "FusedMatMul"):
        activation = attr(node, "activation", b"")
        activation = activation.decode() if isinstance(activation, bytes) else str(activation)
        if activation:
            return OnnxSite(
                base=node.name or node.output[0],
                op=f"com.microsoft.{op}",
                act=Activation("relu"),
                x=node.output[0],
                scope=scope,
                order=(*scope.order, i),
                uncovered=f"{activation} is fused into {op}; its pre-activation is never a tensor "
                "(export without onnxruntime's graph optimisations to audit it)",
            )
    return None


# -- patterns -----------------------------------------------------------------------------
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
        sites.append(_site(scope, node, i, label, Activation(kind, params), x, nodes[-1].output[0]))
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
        found = _times_x(scope, add.output[0], {x})
        if found:
            return "gelu", x, [pre, erf, add, *found[1]], "Erf-GELU"
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
    """``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x³)))``: the tanh approximation of GELU."""
    pre = scope.producer(t.input[0])
    if pre is None or pre.op_type != "Mul":
        return None
    xs = _ancestors(scope, t.input[0], 5) - {t.input[0]}
    if not xs:
        return None
    for add in _only(scope, t.output[0], "Add"):
        if not _close(scope, _other(add, t.output[0]), 1.0):
            continue
        found = _times_x(scope, add.output[0], xs)
        if found:
            return "gelu", found[0], [t, add, *found[1]], "Tanh-GELU"
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


# -- naming and unit axes -----------------------------------------------------------------------
def _site(
    scope: Scope, node: onnx.NodeProto, i: int, op: str, act: Activation, x: str, y: str = ""
) -> OnnxSite:
    base, module = _torch_name(node, act)
    if not base:
        base = node.name or node.output[0]
        if op != node.op_type and "/" in base:
            # TorchScript exporter names ("/blk/act/Sigmoid"): name the pattern after its scope.
            base = base.rsplit("/", 1)[0] + "/" + act.kind
        module = scope.path
    return OnnxSite(
        base=base,
        op=op,
        act=act,
        x=x,
        scope=scope,
        order=(*scope.order, i),
        module=module,
        tag=unit_tag(scope, x),
        axis_tag=unit_axis_tag(scope, x),
        y=y or node.output[0],
    )


def _meta(node: onnx.NodeProto, key: str) -> list[str] | None:
    for p in node.metadata_props:
        if p.key == key:
            try:
                v = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            return [str(s) for s in v] if isinstance(v, (list, tuple)) else None
    return None


def _torch_name(node: onnx.NodeProto, act: Activation) -> tuple[str, str]:
    """(site name, module path) from the dynamo exporter's metadata, or ("", "") without it."""
    scopes = _meta(node, "pkg.torch.onnx.name_scopes")
    classes = _meta(node, "pkg.torch.onnx.class_hierarchy")
    if not scopes or len(scopes) < 2:
        return "", ""
    module = scopes[-2]
    mtype = classes[-2].rsplit(".", 1)[-1] if classes and len(classes) >= 2 else ""
    if module and mtype in ACTIVATION_MODULES:
        return module, module
    op = ""
    if classes and classes[-1].startswith("aten."):
        op = classes[-1].split(".")[1]
    op = (op or act.kind).rstrip("_")
    if op == "hardtanh" and act.kind == "relu6":
        op = "relu6"  # in-place F.relu6 reaches the exporter as aten.hardtanh_(x, 0, 6)
    return (f"{module}/{op}" if module else op), module


def unit_tag(scope: Scope, name: str, depth: int = 64) -> str | None:
    """CONV / LINEAR from the op that produced ``name``, through carriers; None when unknown."""
    s: Scope | None = scope
    seen: set[str] = set()
    while depth > 0:
        depth -= 1
        while s is not None and s.producer(name) is None:
            s = s.parent
        if s is None or name in seen:
            return None
        seen.add(name)
        node = s.producer(name)
        assert node is not None
        op = node.op_type
        if op in _PRODUCERS:
            return _PRODUCERS[op]
        if op in _RESHAPES:
            back = _shape_source(s, node)
            if back is not None:
                # Reshape(y, Shape(t)) gives t's layout back (GroupNorm's export: reshape,
                # InstanceNormalization, reshape to the input's shape).
                name = back
                continue
            tag = unit_tag(s, node.input[0], depth)
            return _reshape_tag(tag, s.type_of(node.input[0])[2], s.type_of(name)[2])
        if op not in _CARRIERS:
            return None
        nxt = None
        for inp in node.input:
            if inp and s.const(inp) is None and unit_tag(s, inp, min(depth, 16)) is not None:
                nxt = inp
                break
        if nxt is None:
            return None
        name = nxt
    return None


_POOLS = frozenset(
    [
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "GlobalLpPool",
        "Resize",
        "Upsample",
    ]
)
_SAME = frozenset(["Concat", "Split", "Slice", "Pad", "LRN", "Softmax", "LogSoftmax", "Expand", "Tile"])
_REDUCE = frozenset(
    ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1"]
)
_RNN_OUT = frozenset(["LSTM", "GRU", "RNN"])


def _ints_of(scope: Scope, node: onnx.NodeProto, name: str, k: int) -> list[int] | None:
    """An int-list attribute, or (newer opsets) the constant input ``k``."""
    v = attr(node, name, None)
    if v is not None:
        return [int(a) for a in v]
    if len(node.input) > k and node.input[k]:
        c = scope.const(node.input[k])
        return None if c is None else [int(a) for a in np.asarray(c).ravel()]
    return None


def unit_axis_tag(scope: Scope, name: str, depth: int = 64) -> ua.Tag | None:
    """The unit axis of ``name`` followed from its Conv / MatMul producer (:mod:`actaudit.unitaxis`).

    Needs static ranks along the way (shapes where a Reshape maps the axis); None when the
    producer is unknown or the axis is lost.
    """
    s: Scope | None = scope
    while s is not None and s.producer(name) is None:
        s = s.parent
    if s is None or depth <= 0:
        return None
    node = s.producer(name)
    assert node is not None
    rank = s.type_of(name)[1]
    if rank is None:
        return None
    op = node.op_type if node.domain in DEFAULT_DOMAINS or node.domain == "com.microsoft" else ""
    if op in _PRODUCERS:
        origin = _PRODUCERS[op]
        return ua.produced(origin, rank) if origin else None
    if op in _RNN_OUT:
        return ua.produced(LINEAR, rank)
    if op in _RESHAPES:
        back = _shape_source(s, node)
        if back is not None:
            return unit_axis_tag(s, back, depth - 1)
    inputs = (
        [node.input[0]] if op in _RESHAPES or op in ("Transpose", "Gather", "Split", "Slice") else node.input
    )
    src, tag = None, None
    for inp in inputs:
        if inp and s.const(inp) is None:
            tag = unit_axis_tag(s, inp, depth - 1)
            if tag is not None:
                src = inp
                break
    if src is None or tag is None:
        return None
    in_type = s.type_of(src)
    in_rank, in_shape = in_type[1], in_type[2]
    if in_rank is None:
        return None
    if op in _POOLS:
        return ua.spatial(tag, rank)
    if op in _SAME:
        return ua.same(tag, rank) if rank == in_rank else None
    if op in _CARRIERS:
        return ua.elementwise(tag, in_rank, rank)
    if op == "Transpose":
        perm = attr(node, "perm", None)
        return ua.permute(tag, [int(p) for p in perm] if perm is not None else list(range(in_rank))[::-1])
    if op == "Gather":
        index_rank = s.type_of(node.input[1])[1]
        return None if index_rank is None else ua.gather(tag, int(attr(node, "axis", 0)), index_rank, in_rank)
    if op == "Squeeze":
        axes = _ints_of(s, node, "axes", 1)
        if axes is not None:
            return ua.remove_axes(tag, axes, in_rank)
    if op == "Unsqueeze":
        axes = _ints_of(s, node, "axes", 1)
        if axes is not None:
            return ua.insert_axes(tag, axes, rank)
    if op in _REDUCE:
        axes = _ints_of(s, node, "axes", 1)
        if axes is None:
            return None
        if int(attr(node, "keepdims", 1)):
            return None if tag.axis in [a % in_rank for a in axes] else ua.same(tag, rank)
        return ua.remove_axes(tag, axes, in_rank)
    if op in _RESHAPES:
        return ua.reshape(tag, in_shape, s.type_of(name)[2])
    return None


_CONSUMER_PASS = _CARRIERS | _SAME


def consumer_axis(scope: Scope, y: str, rank: int | None, depth: int = 8) -> int | None:
    """The unit axis a consumer of the activation output ``y`` implies: Conv → 1, MatMul/Gemm → last
    (-1 when the rank is unknown before run time).

    Followed through ops that keep every axis in place (elementwise, Pad, Concat, …).
    """
    frontier = [y]
    seen = {y}
    for _ in range(depth):
        nxt = []
        for t in frontier:
            for n in scope.uses(t):
                if n.op_type in ("Conv", "ConvTranspose") and n.input[0] == t and (rank is None or rank >= 3):
                    return 1
                if n.op_type in ("MatMul", "Gemm") and n.input[0] == t and (rank is None or rank >= 2):
                    return -1 if rank is None else rank - 1
                if n.op_type in _CONSUMER_PASS and n.op_type not in _POOLS and n.output:
                    out = n.output[0]
                    if out not in seen and scope.type_of(out)[1] == rank:
                        seen.add(out)
                        nxt.append(out)
        frontier = nxt
    return None


def _shape_source(scope: Scope, node: onnx.NodeProto) -> str | None:
    """``t`` when ``node`` is ``Reshape(y, Shape(t))`` (the whole shape of ``t``)."""
    if node.op_type != "Reshape" or len(node.input) < 2:
        return None
    shape = scope.producer(node.input[1])
    if (
        shape is None
        or shape.op_type != "Shape"
        or attr(shape, "start", 0) != 0
        or attr(shape, "end", None) is not None
    ):
        return None
    return str(shape.input[0])


def _reshape_tag(
    tag: str | None, src: tuple[int | None, ...] | None, out: tuple[int | None, ...] | None
) -> str | None:
    if tag is None or src is None or out is None or not src or not out:
        return None
    if tag == LINEAR and src[-1] is not None and src[-1] == out[-1]:
        return LINEAR
    if tag == CONV and len(src) == len(out) and len(src) > 1 and src[1] is not None and src[1] == out[1]:
        return CONV
    return None


def default_axis(tag: str | None, rank: int) -> int:
    """The PyTorch backend's rule: Conv → 1, Linear → last; by rank when the producer is unknown."""
    if tag == CONV:
        return 1
    if tag == LINEAR:
        return rank - 1
    if rank <= 3:
        return rank - 1
    return 1


def _dedupe(sites: list[OnnxSite]) -> None:
    for s, name in zip(sites, site_names(s.base for s in sites), strict=True):
        s.name = name
