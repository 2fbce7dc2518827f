"""One activation site of an ONNX graph, and how a site is made from the node that computes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ... import unitaxis as ua
from ...kinds import Activation
from . import proto as onnx
from .axes import unit_axis_tag, unit_tag
from .graph import Scope
from .naming import _derived, _torch_name


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
    derived: str | None = None  # the base after the module that produced x (actaudit.naming)
    former: str | None = None  # the name by the former rule, where ``name`` differs from it
    params_note: str = ""

    @property
    def rank(self) -> int | None:
        return self.scope.type_of(self.x)[1]

    @property
    def elem_type(self) -> int:
        return self.scope.type_of(self.x)[0]


@dataclass
class Found:
    sites: list[OnnxSite] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _site(
    scope: Scope, node: onnx.NodeProto, i: int, op: str, act: Activation, x: str, y: str = ""
) -> OnnxSite:
    base, module = _torch_name(node, act)
    derived = _derived(scope, node, base, module, x)
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
        derived=derived,
    )
