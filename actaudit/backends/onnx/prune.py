"""ONNX side of ``actaudit prune`` and of interval bounds: the graph as :mod:`actaudit.edit.graph`, and edits back.

Weights are initializers or ``Constant`` nodes (both are read and written). A ``MatMul``
whose only reader is an ``Add`` of a per-feature constant becomes one linear op with that
bias. Shapes come from ONNX shape inference with the calibration sample's shape and a
batch of 1, so MACs and Flatten sizes are concrete. The pruned model drops the inferred
``value_info`` (channel counts changed) and is checked again from scratch.

A model whose weights are external data beside its file is pruned from the files: the
copy read at load is let go before the audit, planning reads memory maps of the data
files, each edited weight is written to a private data file in blocks of rows, and
onnxruntime runs the edited model from there; no weight is held whole (peak memory is
about one onnxruntime session of the model).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from ...edit.cuts import Edits
from ...edit.graph import Graph, Op, Param
from ...kinds import ONNX_OPS
from .graph import DEFAULT_DOMAINS, attr, constant_node_value
from .load import _is_external, _skeleton, over_limit
from .prune_edit import _mapped, apply, count_params, inlined, staged_copy
from .sites import find_sites

if TYPE_CHECKING:
    from ...data import DataSource
    from ...edit.ranges import InputRange
    from ...verdicts import SiteVerdict
    from .load import OnnxModel

# The elementwise activations whose units prune can follow, named by the kinds table.
_ACTS = {
    op: ONNX_OPS[op]
    for op in ("Relu", "LeakyRelu", "Tanh", "Sigmoid", "Elu", "Softplus", "HardSigmoid", "HardSwish", "Clip")
}
_FLOAT = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
)


class _Consts:
    """Constant tensors by name (initializers and Constant nodes), with how often each is read."""

    def __init__(self, g: onnx.GraphProto, base: Path | None = None) -> None:
        self.base = base  # the folder of external data the initializers refer to (memory-mapped)
        self.inits = {t.name: t for t in g.initializer}
        self.nodes = {
            n.output[0]: n
            for n in g.node
            if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS and n.output
        }
        self.uses: Counter[str] = Counter(i for n in g.node for i in n.input if i)
        for n in g.node:  # names read inside subgraphs count too
            for a in n.attribute:
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    self.uses.update(i for sn in sub.node for i in sn.input if i)
        self.outputs = {o.name for o in g.output}
        self.shapes: dict[str, tuple[int, ...]] = {}  # one sample's, from shape inference
        self._cache: dict[str, np.ndarray | None] = {}
        # Reshape/Unsqueeze/Squeeze/Identity/Cast of constants (exporters reshape biases to [1, C, 1, 1]):
        # folded here; a pruned one is written back as a new initializer under the node's output name.
        self.derived = {
            n.output[0]: n
            for n in g.node
            if n.op_type in ("Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast")
            and n.domain in DEFAULT_DOMAINS
            and n.output
        }

    def value(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name not in self._cache:
            v = None
            if name in self.inits:
                t = self.inits[name]
                v = _mapped(t, self.base) if _is_external(t) else numpy_helper.to_array(t)
            elif name in self.nodes:
                v = constant_node_value(self.nodes[name])
            elif name in self.derived:
                self._cache[name] = None  # no cycles
                v = self._fold(self.derived[name])
            self._cache[name] = v
        return self._cache[name]

    def _fold(self, n: onnx.NodeProto) -> np.ndarray | None:
        ins = [self.value(i) if i else None for i in n.input]
        x = ins[0] if ins else None
        if x is None or any(i and v is None for i, v in zip(n.input, ins, strict=True)):
            return None
        t = n.op_type
        if t == "Identity":
            return x
        if t == "Cast":
            try:
                return x.astype(onnx.helper.tensor_dtype_to_np_dtype(int(attr(n, "to", 1))))
            except (KeyError, TypeError, ValueError):
                return None
        axes = ins[1] if len(ins) > 1 and ins[1] is not None else attr(n, "axes", None)
        if t == "Reshape":
            if axes is None or int(attr(n, "allowzero", 0)):
                return None
            shape = [
                x.shape[i] if int(d) == 0 else int(d) for i, d in enumerate(np.asarray(axes).reshape(-1))
            ]
            try:
                return x.reshape(shape)
            except ValueError:
                return None
        if t == "Unsqueeze" and axes is not None:
            return np.expand_dims(x, tuple(int(a) for a in np.asarray(axes).reshape(-1)))
        if t == "Squeeze":
            return np.squeeze(
                x, None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1))
            )
        return None

    def param(self, name: str) -> Param | None:
        v = self.value(name)
        if v is None:
            return None
        return Param(name, v, shared=self.uses[name] > 1 or name in self.outputs)


def _shapes(model: onnx.ModelProto, sample_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    # a skeleton (dims of large initializers, values of small ones): the weights are neither
    # copied nor serialised for inference (a full copy cost three times the model's size)
    m = _skeleton(model)
    del m.graph.value_info[:]
    inits = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in inits or vi.name not in sample_shapes:
            continue
        dims = vi.type.tensor_type.shape.dim
        want = (1, *sample_shapes[vi.name])
        if len(dims) == len(want):
            for d, n in zip(dims, want, strict=True):
                d.Clear()
                d.dim_value = int(n)
    out: dict[str, tuple[int, ...]] = {}
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # inference is an aid: unknown shapes only cost MAC counts and proofs
        return out
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if all(d is not None and d > 0 for d in dims) or (dims == []):
            out[vi.name] = tuple(int(d) for d in dims)
    return out


def to_ir(
    model: onnx.ModelProto, sample_shapes: dict[str, tuple[int, ...]], base: Path | None = None
) -> Graph:
    """The top-level graph as IR ops (subgraph owners become ``other``); ``base``: the folder of the
    external data that ``model``'s tensors refer to."""
    g = model.graph
    c = _Consts(g, base)
    shapes = c.shapes = _shapes(model, sample_shapes)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    fused: set[int] = set()
    ops: list[Op] = []
    for node in g.node:
        if id(node) in fused or (node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS):
            continue
        op = _translate(node, c, readers, fused)
        ops.append(op)
    inits = set(c.inits)
    inputs = [i.name for i in g.input if i.name not in inits]
    return Graph(ops, inputs, [o.name for o in g.output], shapes)


def _name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def _computed(node: onnx.NodeProto, c: _Consts) -> list[str]:
    return [i for i in node.input if i and c.value(i) is None]


class _At:
    """One node being translated, with what every translator reads."""

    def __init__(
        self, node: onnx.NodeProto, c: _Consts, readers: dict[str, list[onnx.NodeProto]], fused: set[int]
    ) -> None:
        self.node, self.c, self.readers, self.fused = node, c, readers, fused
        self.name = _name(node)
        self.x = node.input[0] if node.input else ""
        self.out = node.output[0] if node.output else ""

    def input(self, i: int) -> str:
        """Input ``i``'s name, "" when it is absent."""
        return self.node.input[i] if len(self.node.input) > i else ""

    def op(self, kind: str, attrs: dict[str, Any], params: dict[str, Param] | None = None) -> Op:
        return Op(self.name, kind, [self.x], [self.out], {"op": self.node.op_type} | attrs, params or {})


def _auto_pad(node: onnx.NodeProto) -> str:
    auto = attr(node, "auto_pad", b"NOTSET")
    return auto.decode() if isinstance(auto, bytes) else str(auto)


def _conv(t: _At) -> Op | None:
    node, c = t.node, t.c
    w = c.param(node.input[1])
    if w is None or c.value(t.x) is not None or _auto_pad(node) not in ("NOTSET", "VALID"):
        return None
    nd = w.value.ndim - 2
    params = {"weight": w}
    if t.input(2):
        b = c.param(t.input(2))
        if b is None:
            return None
        params["bias"] = b
    attrs: dict[str, object] = {
        "strides": list(attr(node, "strides", [1] * nd)),
        "pads": list(attr(node, "pads", [0] * (2 * nd))),
        "dilations": list(attr(node, "dilations", [1] * nd)),
        "groups": int(attr(node, "group", 1)),
        "can_add_bias": True,
    }
    return t.op("conv", attrs, params)


def _gemm(t: _At) -> Op | None:
    node, c = t.node, t.c
    w = c.param(node.input[1])
    if w is None or attr(node, "transA", 0) or c.value(t.x) is not None:
        return None
    params = {"weight": w}
    beta = float(attr(node, "beta", 1.0))
    if t.input(2):
        b = c.param(t.input(2))
        if b is None:
            return None
        if beta != 0:
            params["bias"] = b
    attrs = {
        "layout": "oi" if attr(node, "transB", 0) else "io",
        "alpha": float(attr(node, "alpha", 1.0)),
        "beta": beta if beta != 0 else 1.0,
        "can_add_bias": beta != 0,
    }
    return t.op("linear", attrs, params)


def _matmul(t: _At) -> Op | None:
    """A MatMul by a constant; an Add of a per-feature constant after it is its bias (one op)."""
    c = t.c
    w = c.param(t.node.input[1])
    if w is None or w.value.ndim != 2 or c.value(t.x) is not None:
        return None
    params = {"weight": w}
    users = t.readers.get(t.out, [])
    if len(users) == 1 and users[0].op_type == "Add" and t.out not in c.outputs:
        add = users[0]
        b = c.param(add.input[1 if add.input[0] == t.out else 0])
        if b is not None and b.value.size == w.value.shape[1] and b.value.shape[-1] == w.value.shape[1]:
            params["bias"] = b
            t.fused.add(id(add))
            t.out = add.output[0]
    return t.op("linear", {"layout": "io"}, params)


def _bn(t: _At) -> Op | None:
    node = t.node
    ps = [t.c.param(i) for i in node.input[1:5]]
    if any(p is None for p in ps) or (len(node.output) > 1 and any(node.output[1:])):
        return None
    params = {k: p for k, p in zip(("scale", "bias", "mean", "var"), ps, strict=True) if p is not None}
    return t.op("bn", {"eps": float(attr(node, "epsilon", 1e-5))}, params)


_FORMS = {"Add": ("add", "add"), "Mul": ("mul", "mul"), "Sub": ("sub", "rsub"), "Div": ("div", None)}


def _binary(t: _At) -> Op | None:
    """Add/Mul of two computed values; Add/Sub/Mul/Div by a float constant (a scale)."""
    node, c = t.node, t.c
    if len(node.input) != 2:
        return None
    a, b = node.input
    ca, cb = c.value(a), c.value(b)
    if ca is None and cb is None:
        # Mul: gates, hardswish: bounded by interval products, never pruned through
        kind = {"Add": "add", "Mul": "mul"}.get(node.op_type)
        return None if kind is None else Op(t.name, kind, [a, b], [t.out], {"op": node.op_type})
    cv = ca if ca is not None else cb
    if (ca is not None and cb is not None) or cv is None or not np.issubdtype(cv.dtype, np.floating):
        return None
    var, const = (a, b) if cb is not None else (b, a)
    form = _FORMS[node.op_type][0 if cb is not None else 1]
    p = c.param(const)
    if form is None or p is None:
        return None
    return Op(t.name, "scale", [var], [t.out], {"op": node.op_type, "form": form}, {"c": p})


def _act(t: _At) -> Op | None:
    node = t.node
    attrs: dict[str, object] = {"act": _ACTS[node.op_type]}
    if node.op_type == "Clip":
        bounds = []
        for i, key, default in ((1, "min", -math.inf), (2, "max", math.inf)):
            v = t.c.value(t.input(i)) if t.input(i) else None
            if t.input(i) and v is None:
                return None
            bounds.append(float(v.reshape(())) if v is not None else float(attr(node, key, default)))
        attrs["lo"], attrs["hi"] = bounds
    for k in ("alpha", "beta"):
        if any(a.name == k for a in node.attribute):
            attrs[k] = float(attr(node, k, 0.0))
    defaults = {"LeakyRelu": {"alpha": 0.01}, "HardSigmoid": {"alpha": 0.2, "beta": 0.5}}
    return t.op("act", defaults.get(node.op_type, {}) | attrs)


def _concat(t: _At) -> Op | None:
    ins = [i for i in t.node.input if i]
    if any(t.c.value(i) is not None for i in ins):
        return None
    return Op(t.name, "concat", ins, [t.out], {"op": "Concat", "axis": int(attr(t.node, "axis", 0))})


def _reshape(t: _At) -> Op | None:
    """Flatten, a Reshape to ``[N, -1]`` (a flatten), other shape-only ops."""
    kind = t.node.op_type
    if kind == "Flatten":
        return t.op("flatten", {"axis": int(attr(t.node, "axis", 1))})
    shape = t.c.value(t.input(1)) if kind == "Reshape" and t.input(1) else None
    if shape is not None and shape.size == 2 and int(shape[0]) in (0, 1) and int(shape[1]) == -1:
        return t.op("flatten", {"axis": 1})
    return t.op("reshape", {"pure_reshape": kind != "Transpose"})


def _pool(t: _At) -> Op | None:
    node = t.node
    indices = _out(node, 1)  # MaxPool's indices: followed only when nothing reads them
    if _auto_pad(node) not in ("NOTSET", "VALID") or (
        indices and (t.readers.get(indices) or indices in t.c.outputs)
    ):
        return None
    kernel = list(attr(node, "kernel_shape", []))
    attrs = {
        "kernel": kernel,
        "strides": list(attr(node, "strides", kernel)),
        "pads": list(attr(node, "pads", [0] * (2 * len(kernel)))),
        "dilations": list(attr(node, "dilations", [1] * len(kernel))),
        "ceil_mode": int(attr(node, "ceil_mode", 0)),
        "count_include_pad": int(attr(node, "count_include_pad", 0)),
    }
    return t.op("maxpool" if node.op_type == "MaxPool" else "avgpool", attrs)


_REDUCE = {"ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min", "ReduceSum": "sum"}


def _reduce(t: _At) -> Op | None:
    """A reduction over axes other than the batch axis, as ``reduce`` (``GlobalMaxPool``: over 2..)."""
    node, c = t.node, t.c
    rank = len(c.shapes.get(t.x, ())) or None
    if node.op_type == "GlobalMaxPool":
        return (
            None
            if rank is None
            else t.op("reduce", {"how": "max", "axes": list(range(2, rank)), "keepdims": True})
        )
    axes = c.value(t.input(1)) if t.input(1) else attr(node, "axes", None)
    if (t.input(1) and axes is None) or int(attr(node, "noop_with_empty_axes", 0)):
        return None
    if axes is None or rank is None:
        return None  # every axis, the batch's too; or an unknown rank
    norm = sorted({int(a) % rank for a in np.asarray(axes).reshape(-1)})
    if not norm or norm[0] == 0:
        return None
    attrs = {"how": _REDUCE[node.op_type], "axes": norm, "keepdims": bool(attr(node, "keepdims", 1))}
    return t.op("reduce", attrs)


def _out(node: onnx.NodeProto, i: int) -> str:
    return node.output[i] if len(node.output) > i else ""


def _identity(t: _At) -> Op | None:
    if t.node.op_type == "Cast" and int(attr(t.node, "to", 0)) != onnx.TensorProto.FLOAT:
        return None
    return t.op("identity", {})


_TRANSLATORS: dict[str, Callable[[_At], Op | None]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _bn,
    **dict.fromkeys(("Add", "Sub", "Mul", "Div"), _binary),
    **dict.fromkeys(_ACTS, _act),
    "Concat": _concat,
    **dict.fromkeys(("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"), _reshape),
    **dict.fromkeys(("MaxPool", "AveragePool"), _pool),
    "GlobalAveragePool": lambda t: t.op("gap", {"keepdims": True}),
    **dict.fromkeys(("GlobalMaxPool", *_REDUCE), _reduce),
    **dict.fromkeys(("Identity", "Dropout", "Cast"), _identity),
}


def _translate(
    node: onnx.NodeProto, c: _Consts, readers: dict[str, list[onnx.NodeProto]], fused: set[int]
) -> Op:
    """One node as an IR op (:data:`_TRANSLATORS`, one per op type); ``other`` when none applies."""
    t = node.op_type
    other = Op(_name(node), "other", _computed(node, c), list(node.output[:1]), {"op": t})
    if node.domain not in DEFAULT_DOMAINS or any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    ):
        other.attrs["op"] = f"{node.domain + '.' if node.domain else ''}{t}"
        return other
    fn = _TRANSLATORS.get(t)
    op = fn(_At(node, c, readers, fused)) if fn is not None else None
    return other if op is None else op


def site_values(model: onnx.ModelProto) -> dict[str, tuple[str, str] | str]:
    """Audit site name -> (pre-activation, activation output), or why the site has none here."""
    out: dict[str, tuple[str, str] | str] = {}
    for s in find_sites(model.graph).sites:
        if s.scope.parent is not None:
            out[s.name] = "inside a subgraph"
            continue
        node = next(
            (n for n in s.scope.graph.node if n.op_type == s.op and n.input and n.input[0] == s.x), None
        )
        if node is None:
            out[s.name] = f"{s.op} is a pattern of several nodes, not one activation node"
            continue
        out[s.name] = (s.x, node.output[0])
    return out


class OnnxPruner:
    """The prune command's view of an ONNX model (capture and re-runs through the rewrite surgeon)."""

    output_format = "onnx"
    checks = (
        "onnx.checker.check_model(full_check=True)",
        "onnxruntime session from the file",
        "calibration re-run",
        "parameter count",
    )

    def __init__(self, handle: OnnxModel) -> None:
        from .surgery import OnnxSurgeon

        self.handle = handle
        self.surgeon = OnnxSurgeon(handle)
        self.notes: list[str] = []
        # An edited model written to a private folder (``model.onnx`` + ``weights.bin``) as it was built
        self.lean: tuple[onnx.ModelProto, Path] | None = None
        self._folder: Any = None  # a weakref.finalize that removes the folder
        if self._light():
            # From here on the model is the input file's own proto, its weights left in the data
            # files (where onnxruntime and the memory maps read them): the copy read at load is let go
            # before the audit's session holds its own.
            handle.model = self.surgeon._skeleton()

    def _light(self) -> bool:
        """Weights in external data beside a file: planned, edited and run from the files, never held."""
        return self.handle.external and self.handle.file is not None

    def prepare(self, source: DataSource, samples: int | None) -> None:
        """Nothing to bind (the graph is the file); the audit's instrumented sessions are let go.

        The audit that measured the original is over: its cached sessions held another copy of
        every weight (on a 2 GB model, as much as the model) through the whole prune.
        """
        built = getattr(self.handle, "built", None)
        if isinstance(built, dict):
            built.clear()

    def original(self) -> onnx.ModelProto:
        return self.handle.model

    def range_names(self, ranges: list[InputRange]) -> list[str]:
        names = [s.name for s in self.handle.inputs]
        return [names[int(r.key)] if r.key.isdigit() and int(r.key) < len(names) else r.key for r in ranges]

    def sample_shapes(self, ranges: list[InputRange]) -> dict[str, tuple[int, ...]]:
        return {n: tuple(r.shape) for n, r in zip(self.range_names(ranges), ranges, strict=True)}

    def graph(self, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> Graph:
        h = self.handle
        if model is h.model and self._light() and h.file is not None:
            # the same graph with its weights left in the input's data files, mapped, not copied
            return to_ir(self.surgeon._skeleton(), shapes, h.file.resolve().parent)
        return to_ir(model, shapes)

    def site_values(
        self, model: onnx.ModelProto, sites: list[SiteVerdict]
    ) -> dict[str, tuple[str, str] | str]:
        return site_values(model)

    def apply(self, model: onnx.ModelProto, graph: Graph, edits: Edits) -> onnx.ModelProto:
        h = self.handle
        if not (model is h.model and self._light() and h.file is not None):
            return apply(model, graph, edits)
        # written as it is built, one weight (one block of rows) at a time; an earlier variant's files go
        self.lean = None
        if self._folder is not None:
            self._folder()
        folder = Path(tempfile.mkdtemp(prefix="actaudit-prune-"))
        self._folder = weakref.finalize(self, shutil.rmtree, str(folder), True)
        new = apply(model, graph, edits, self.surgeon._skeleton(), (folder, h.file.resolve().parent))
        self.lean = (new, folder / "model.onnx")
        return new

    def outputs(
        self, model: onnx.ModelProto, source: DataSource, samples: int | None
    ) -> Iterator[list[np.ndarray]]:
        lean = self.lean
        if lean is None or lean[0] is not model or self.surgeon.on_disk is not None:
            yield from self.surgeon.outputs(model, source, samples, None)
            return
        # the edited model's session reads the files it was written to
        self.surgeon.on_disk = lean
        try:
            yield from self.surgeon.outputs(model, source, samples, None)
        finally:
            self.surgeon.on_disk = None

    def model_out(self, model: onnx.ModelProto, reloaded: object | None) -> object:
        """The pruned model for the Python API. An edited model that lives in a private folder
        (removed with this pruner): the published file's proto when one was written (weights
        over 2 GB stay in its data file, ``onnx.load(path)`` reads them), else the edited model
        with its weights read in."""
        lean = self.lean
        if lean is None or lean[0] is not model:
            return model
        return reloaded if reloaded is not None else inlined(model, lean[1].parent)

    def serialize(self, model: onnx.ModelProto, notes: list[str]) -> bytes:
        return model.SerializeToString()

    def stage(
        self, model: onnx.ModelProto, notes: list[str], out: Path, force: bool
    ) -> AbstractContextManager[Path]:
        """The rewrite's writer: one file, or the model and its external data over 2 GB; an edited
        model that lives in files is published from them (its data file copied as it is)."""
        lean = self.lean
        if lean is None or lean[0] is not model:
            return self.surgeon.stage(model, notes, out, force)
        from .surgery import check_data_file, data_name, stage_onnx

        large = self.handle.over_limit() or over_limit(model)
        self.surgeon.written_data = out.parent / data_name(out) if large else None
        if large:
            check_data_file(self.handle, out)
            return staged_copy(model, lean[1].parent, notes, out, data_name(out), force)
        # one file, as for any model under 2 GB: the weights read back into a copy
        return stage_onnx(inlined(model, lean[1].parent), notes, out, force, False)

    @property
    def written_data(self) -> Path | None:
        return getattr(self.surgeon, "written_data", None)

    def reload(self, path: Path) -> onnx.ModelProto:
        return self.surgeon.reload(path)

    def count_params(self, model: onnx.ModelProto) -> int:
        return count_params(model)
