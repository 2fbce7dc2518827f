"""Relu / Clip(0, 6) → PRelu (a slope per unit, the default) or LeakyRelu on an ONNX graph.

The default form (:func:`_rewrite_unit`) is ``PRelu`` with one slope per unit (0 where
the unit stays plain ReLU), ``Min`` with 6 for a ReLU6, and ``Sub`` of the exact shift ``slope·E[min(z, 0)]``
(:meth:`SlopePlan.shift_for`); the last node keeps the activation's output name (classic forms: ``--shift fold|none``).

The edit is a node's op type plus an ``alpha`` attribute (LeakyRelu), or a PRelu whose
slope is a new initializer shaped ``[units, 1, …]`` so that it broadcasts along the
site's unit axis. Sites are found with the audit backend's own walk
(:func:`actaudit.backends.onnx.sites.find_sites`), so names match the audit report.

Compensation folds ``α·E[min(z, 0)]`` per unit into the next op's bias: ``Conv``
(``B``), ``Gemm`` (``C``), or ``MatMul`` followed by ``Add`` of a constant. A
``Flatten(axis=1)`` between a conv-layout site and the consumer is followed. Zero
padding breaks exactness: padded positions are zeros, not shifted activations.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from ...data import DataSource
from ...edit import fold
from ...edit.recycle import Recycled
from ...edit.slopes import SlopePlan, SurgeryResult, float32_up, unit_shape
from ...errors import InputError
from ...fileio import _same as fileio_same
from ...fileio import atomic_pair, atomic_path
from .feeds import batches_for
from .load import OnnxModel, _inline_small, _is_external, over_limit
from .session import _options, _providers, save_external, session_for
from .site import OnnxSite
from .sites import by_name, find_sites

LEAKY = "leaky"
PRELU = "prelu"


def _initializer_uses(graph: onnx.GraphProto, name: str) -> int:
    n = sum(1 for node in graph.node for i in node.input if i == name)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                n += sum(1 for sub in attr.g.node for i in sub.input if i == name)
    return n


def _unique(graph: onnx.GraphProto, stem: str) -> str:
    taken = (
        {t.name for t in graph.initializer}
        | {o for n in graph.node for o in n.output}
        | {i.name for i in graph.input}
    )
    name, i = stem, 1
    while name in taken:
        name, i = f"{stem}_{i}", i + 1
    return name


def _relu_node(graph: onnx.GraphProto, x: str) -> onnx.NodeProto | None:
    return next(
        (
            n
            for n in graph.node
            if n.op_type == "Relu" and n.domain in ("", "ai.onnx") and n.input and n.input[0] == x
        ),
        None,
    )


def rewrite_onnx(
    model: onnx.ModelProto, plans: Iterable[SlopePlan], to: str = LEAKY, *, compensate: bool = False
) -> SurgeryResult:
    """A rewritten copy of ``model``; the input proto is not modified."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    res = SurgeryResult(m)
    sites = by_name(find_sites(m.graph).sites)
    plans = list(plans)
    done: dict[str, tuple[onnx.GraphProto, onnx.NodeProto]] = {}
    for p in plans:
        site = sites.get(p.name)
        if site is None:
            res.skipped[p.name] = "no site of that name in the ONNX graph"
            continue
        graph = site.scope.graph
        if p.per_unit() or p.exact_shift or p.cap is not None:
            got = _rewrite_unit(m, graph, site, p, to)
            if isinstance(got, str):
                res.skipped[p.name] = got
            else:
                done[p.name] = (graph, got)
                res.rewritten[p.name] = (
                    ("PRelu" if to == PRELU else "LeakyRelu")
                    + (" + Min" if p.cap is not None else "")
                    + (" + Sub (shift)" if p.exact_shift else "")
                )
            continue
        if site.op != "Relu":
            res.skipped[p.name] = f"a {site.op} computing ReLU is not rewritten (only Relu nodes are)"
            continue
        node = _relu_node(graph, site.x)
        if node is None:
            res.skipped[p.name] = "its Relu node was not found"
            continue
        if to == LEAKY:
            node.op_type = "LeakyRelu"
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("alpha", float(p.alpha)))
            res.rewritten[p.name] = "LeakyRelu"
        else:
            rank = len(p.sample_shape) + 1 if p.sample_shape else (site.rank or 2)
            axis = p.unit_axis if p.unit_axis >= 0 else rank + p.unit_axis
            shape = [p.units] + [1] * (rank - 1 - axis) if p.units > 1 else [1]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(site.elem_type) if site.elem_type else np.float32
            stem = re.sub(r"[^0-9A-Za-z_]", "_", f"actaudit_prelu_{p.name}")
            slope_name = _unique(m.graph, stem)
            m.graph.initializer.append(
                numpy_helper.from_array(p.slopes().reshape(shape).astype(dtype), slope_name)
            )
            node.op_type = "PRelu"
            del node.attribute[:]
            node.input.append(slope_name)
            res.rewritten[p.name] = f"PRelu slope {slope_name} {shape}"
        done[p.name] = (graph, node)
    if compensate:
        by = {p.name: p for p in plans}
        for name, (graph, node) in done.items():
            _fold(m, graph, node, by[name], res)
    return res


def _rewrite_unit(
    m: onnx.ModelProto, graph: onnx.GraphProto, site: OnnxSite, p: SlopePlan, to: str
) -> str | onnx.NodeProto:
    """Relu / Clip(0, 6) → PRelu (slope per unit) or LeakyRelu, [Min 6], Sub (the shift), in place.

    The last new node keeps the activation's output name, so consumers are untouched;
    new constants are initializers of the main graph (visible inside If/Loop bodies).
    """
    ops = ("Clip",) if p.cap is not None else ("Relu",)
    idx = next(
        (
            i
            for i, n in enumerate(graph.node)
            if n.op_type in ops and n.domain in ("", "ai.onnx") and n.input and n.input[0] == site.x
        ),
        None,
    )
    if idx is None:
        return f"its {'/'.join(ops)} node was not found (a {site.op} computing it is not rewritten)"
    node = graph.node[idx]
    rank = len(p.sample_shape) + 1 if p.sample_shape else (site.rank or 2)
    axis = p.unit_axis if p.unit_axis >= 0 else rank + p.unit_axis
    dtype = helper.tensor_dtype_to_np_dtype(site.elem_type) if site.elem_type else np.float32
    shape = unit_shape(p.units, axis, rank) if p.units > 1 else [1]
    stem = re.sub(r"[^0-9A-Za-z_]", "_", p.name)
    out = node.output[0]
    cur = site.x
    new_nodes: list[onnx.NodeProto] = []

    def const(tag: str, arr: np.ndarray) -> str:
        name = _unique(m.graph, f"actaudit_{tag}_{stem}")
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(arr).astype(dtype), name))
        return name

    def add(op: str, inputs: list[str], **attrs: Any) -> None:  # as helper.make_node takes them
        nonlocal cur
        o = _unique(m.graph, f"{out}_actaudit_{op.lower()}")
        new_nodes.append(
            helper.make_node(op, inputs, [o], name=_unique(m.graph, f"actaudit_{op}_{stem}"), **attrs)
        )
        cur = o

    if to == LEAKY:
        slopes = float32_up(np.array([p.alpha]))
        add("LeakyRelu", [cur], alpha=float(slopes[0]))
    else:
        slopes = float32_up(p.slopes() if p.unit_slopes is not None else p.slopes(p.alpha))
        add("PRelu", [cur, const("slope", slopes.reshape(shape))])
    if p.cap is not None:
        add("Min", [cur, const("cap", np.array(p.cap))])
    if p.exact_shift:
        add("Sub", [cur, const("shift", p.shift_for(slopes).reshape(shape))])
    new_nodes[-1].output[0] = out
    del graph.node[idx]
    for k, n in enumerate(new_nodes):
        graph.node.insert(idx + k, n)
    return graph.node[idx + len(new_nodes) - 1]


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    """Nodes that read ``name``'s values (Shape/Size read only its shape)."""
    return [
        n for n in graph.node if (name in n.input and n.op_type not in ("Shape", "Size")) or _inside(n, name)
    ]


def _inside(node: onnx.NodeProto, name: str) -> bool:
    """Does a subgraph of ``node`` (If/Loop/Scan body) read ``name`` from the outer scope?"""
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            if any(name in n.input or _inside(n, name) for n in g.node):
                return True
    return False


def _init(m: onnx.ModelProto, name: str) -> onnx.TensorProto | None:
    return next((t for t in m.graph.initializer if t.name == name), None)


def _writable(
    m: onnx.ModelProto, node: onnx.NodeProto, index: int, default_shape: list[int] | None, dtype: Any
) -> tuple[np.ndarray, Callable[[np.ndarray], None]] | None:
    """(array, setter) for input ``index`` of ``node``: an initializer only this node uses (copied if shared)."""
    g = m.graph
    if index < len(node.input) and node.input[index]:
        t = _init(m, node.input[index])
        if t is None:
            return None
        arr = numpy_helper.to_array(t).copy()
        shared = _initializer_uses(g, t.name) > 1
    elif default_shape is not None:
        arr = np.zeros(default_shape, dtype=dtype)
        t, shared = None, True
    else:
        return None

    def set_value(a: np.ndarray) -> None:
        if shared:
            new_name = _unique(g, f"{node.name or node.op_type}_actaudit_bias")
            g.initializer.append(numpy_helper.from_array(a.astype(arr.dtype), new_name))
            while len(node.input) <= index:
                node.input.append("")
            node.input[index] = new_name
        else:
            assert t is not None
            t.CopyFrom(numpy_helper.from_array(a.astype(arr.dtype), t.name))

    return arr, set_value


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:  # an attribute's value: of any type
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _fold(
    m: onnx.ModelProto, graph: onnx.GraphProto, node: onnx.NodeProto, p: SlopePlan, res: SurgeryResult
) -> None:
    """Fold the site's shift into its consumer's bias (the rule: :func:`actaudit.edit.fold.fold`)."""
    if p.neg_mean is None:
        return
    if graph is not m.graph:
        res.not_compensated[p.name] = "the site is inside a subgraph"
        return
    outputs = {o.name for o in m.graph.output}
    rank = len(p.sample_shape) + 1

    def step(v: str) -> tuple[fold.Link, str]:
        return _link(m, v, outputs, rank)

    fold.settle(res, p.name, fold.fold(p.shift(), p.unit_axis, p.sample_shape, node.output[0], step))


def _link(m: onnx.ModelProto, cur: str, outputs: set[str], rank: int) -> tuple[fold.Link, str]:
    """The one node that reads ``cur``, in the fold's terms, and its output."""
    graph = m.graph
    users = _consumers(graph, cur)
    if cur in outputs or len(users) != 1:
        return fold.Fanout(len(users) + (cur in outputs)), cur
    u = users[0]
    nxt = u.output[0] if u.output else cur
    first = bool(u.input) and u.input[0] == cur
    if u.op_type in ("Identity", "Dropout") and first:
        return fold.Pass(), nxt
    if u.op_type == "GlobalAveragePool" or _spatial_mean(m, graph, u, rank):
        return fold.Pool(u.op_type, to_one=True), nxt
    if u.op_type == "Reshape" and first:
        shape = _const(m, graph, u.input[1])
        target = None if shape is None else tuple(int(d) for d in shape.reshape(-1))
        return fold.Reshape("Reshape", target), nxt
    if u.op_type == "Flatten" and first:
        return fold.Flatten("Flatten", from_axis_1=_attr(u, "axis", 1) == 1), nxt
    if u.op_type in ("Conv", "Gemm", "MatMul") and first:
        return _linear_consumer(m, u), nxt
    return fold.Other(u.op_type), nxt


def _linear_consumer(m: onnx.ModelProto, u: onnx.NodeProto) -> fold.Link:
    """A Conv, Gemm or MatMul(+Add) whose weight is an initializer and whose bias the fold may write."""
    w = _init(m, u.input[1]) if len(u.input) > 1 else None
    if w is None:
        return fold.Stop(f"the next {u.op_type}'s weight is not an initializer")
    wa = numpy_helper.to_array(w)
    label = u.name or u.output[0]
    if u.op_type == "Conv":
        got = _writable(m, u, 2, [wa.shape[0]], wa.dtype)
        if got is None:
            return fold.Stop("the next Conv's bias is not an initializer")
        auto = _attr(u, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        padded = any(int(x) for x in _attr(u, "pads", [])) or auto in ("SAME_UPPER", "SAME_LOWER")
        return fold.Consumer(
            f"Conv {label} bias",
            "conv",
            wa,
            got[0],
            got[1],
            int(_attr(u, "group", 1)),
            padded,
            write_weight=_weight_writer(m, u),
        )
    if u.op_type == "Gemm":
        if _attr(u, "transA", 0):
            return fold.Stop("the next Gemm transposes its input")
        kind = "linear" if _attr(u, "transB", 0) else "matmul"
        got = _writable(m, u, 2, [wa.shape[0] if kind == "linear" else wa.shape[1]], wa.dtype)
        if got is None:
            return fold.Stop("the next Gemm's C is not an initializer")
        alpha, beta = float(_attr(u, "alpha", 1.0)), float(_attr(u, "beta", 1.0))
        if beta == 0:
            return fold.Stop("the next Gemm's C does not hold one bias per output")
        return fold.Consumer(
            f"Gemm {label} C", kind, wa, got[0], got[1], scale=alpha / beta, write_weight=_weight_writer(m, u)
        )
    adds = _consumers(m.graph, u.output[0])
    if len(adds) != 1 or adds[0].op_type != "Add":
        return fold.Stop("the next MatMul is not followed by an Add of a constant bias")
    add = adds[0]
    got = _writable(m, add, 1 if add.input[0] == u.output[0] else 0, None, wa.dtype)
    if got is None or got[0].size != wa.shape[-1]:
        return fold.Stop("the Add after the next MatMul does not add a per-feature constant")
    return fold.Consumer(
        f"Add {add.name or add.output[0]} bias",
        "matmul",
        wa,
        got[0],
        got[1],
        write_weight=_weight_writer(m, u),
    )


def _weight_writer(m: onnx.ModelProto, u: onnx.NodeProto) -> Callable[[np.ndarray], None] | None:
    return (_writable(m, u, 1, None, None) or (None, None))[1]


def _const(m: onnx.ModelProto, graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    t = _init(m, name)
    if t is not None:
        return numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
                if a.name == "value_ints":
                    return np.asarray(list(a.ints))
    return None


def _spatial_mean(m: onnx.ModelProto, graph: onnx.GraphProto, node: onnx.NodeProto, rank: int) -> bool:
    """A ReduceMean over every axis after the channel axis, keeping dims (a global average pool)."""
    if node.op_type != "ReduceMean" or not _attr(node, "keepdims", 1):
        return False
    axes = _attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        got = _const(m, graph, node.input[1])
        axes = None if got is None else got.reshape(-1).tolist()
    if axes is None:
        return False
    return sorted(int(a) % rank for a in axes) == list(range(2, rank))


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for n in graph.node:
        yield n
        for a in n.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                yield from _all_nodes(g)


def written_slopes(model: onnx.ModelProto) -> list[tuple[str, str, object]]:
    """(node, op, slope) for every LeakyRelu/PRelu node; PRelu slopes as lists."""
    inits = {t.name: t for t in model.graph.initializer}
    out: list[tuple[str, str, object]] = []
    for n in _all_nodes(model.graph):
        if n.op_type == "LeakyRelu":
            out.append((n.name or n.output[0], "LeakyRelu", float(_attr(n, "alpha", 0.01))))
        elif n.op_type == "PRelu":
            t = inits.get(n.input[1])
            out.append(
                (
                    n.name or n.output[0],
                    "PRelu",
                    None if t is None else [float(x) for x in numpy_helper.to_array(t).reshape(-1)],
                )
            )
    return out


def _input_files(source: str) -> list[Path]:
    """The input model's file and the external data files it names (read only when a name is taken)."""
    p = Path(source)
    if not p.is_file():
        return []  # an in-memory ModelProto
    m = onnx.load(str(p), load_external_data=False)
    names = {
        e.value
        for t in external_data_helper._get_all_tensors(m)
        if _is_external(t)
        for e in t.external_data
        if e.key == "location"
    }
    return [p, *(p.parent / n for n in sorted(names))]


def _too_large(model: onnx.ModelProto) -> bool:
    return over_limit(model)


def data_name(out: Path) -> str:
    """The external data file written beside ``out`` (``model.onnx`` → ``model.onnx.data``)."""
    return f"{out.name}.data"


@contextlib.contextmanager
def stage_onnx(
    model: onnx.ModelProto, notes: list[str], out: Path, force: bool, large: bool, base: Path | None = None
) -> Iterator[Path]:
    """The temporary path of ``model`` written for ``out``, published (atomically) when the block succeeds.

    Below protobuf's limit: one file. Above it (or when the input was), the weights go to
    ``out.name + ".data"`` beside it, through :func:`atomic_pair`: the temporary pair sits
    in a private folder with the final names, so the file that is checked and re-run is
    byte for byte the one published; ``model`` itself is left whole. Tensors ``model`` keeps
    as external data are read from ``base`` (the input's folder).
    """
    if not large:
        blob = model.SerializeToString()
        with atomic_path(out, force=force) as tmp:
            tmp.write_bytes(blob)
            yield tmp
        return
    data = data_name(out)
    with atomic_pair(out, data, force=force) as tmp:
        save_external(model, str(tmp), data, base=base)
        notes.append(f"the model is over 2 GB: its weights are written to {data} beside {out.name}")
        yield tmp


def check_data_file(handle: OnnxModel, out: Path) -> None:
    """Refuse (exit 2) an ``-o`` whose data file (``out.name + ".data"``) is an input file: up front and at write."""
    data = out.parent / data_name(out)
    if not data.exists():
        return
    for f in _input_files(handle.source):
        if fileio_same(str(data), str(f)):
            raise InputError(
                f"the external data file {data} that -o {out} needs is the input's {f}",
                hint="inputs are never overwritten; write to another path or folder",
            )


class OnnxSurgeon:
    """The rewrite command's view of an ONNX model."""

    backend = "onnx"
    output_format = "onnx"
    checks = (
        "onnx.checker.check_model(full_check=True)",
        "onnxruntime session from the file",
        "calibration re-run",
    )

    def __init__(self, handle: OnnxModel) -> None:
        self.handle = handle
        self.output_names: list[str] | None = None
        self.written_data: Path | None = None  # the external data file of the last write, if any
        self.on_disk: tuple[onnx.ModelProto, Path] | None = None  # the last reload, when it had external data
        self.skeleton: onnx.ModelProto | None = None  # the input file's proto, weights left external

    def build(self, plans: list[SlopePlan], to: str, compensate: bool) -> SurgeryResult:
        """A rewritten copy; of the input file's own proto (weights left as references into its
        data file, read there by onnxruntime and the writer) when it has external data, so a
        candidate costs kilobytes. The fold (``--shift fold``) reads weights: it edits a full copy.
        """
        self.handle.built.clear()  # the audit's instrumented sessions are done with
        if self.handle.external and not compensate:
            return rewrite_onnx(self._skeleton(), plans, to, compensate=compensate)
        return rewrite_onnx(self.handle.model, plans, to, compensate=compensate)

    def _skeleton(self) -> onnx.ModelProto:
        if self.skeleton is None:
            h = self.handle
            assert h.file is not None
            m = onnx.load(str(h.file), load_external_data=False)
            _inline_small(m, h.file.resolve().parent)
            m.graph.value_info.extend(h.model.graph.value_info[len(m.graph.value_info) :])
            self.skeleton = m
        return self.skeleton

    def outputs(
        self, model: onnx.ModelProto, source: DataSource, samples: int | None, batches: int | None
    ) -> Iterator[list[np.ndarray]]:
        from ...edit.drift import flatten_outputs, output_names

        sess = self.session(model)
        names = [o.name for o in sess.get_outputs()]
        for i, (_, feeds) in enumerate(batches_for(self.handle, source, samples)):
            if batches is not None and i >= batches:
                return
            got = dict(zip(names, sess.run(None, feeds), strict=True))
            if self.output_names is None:
                self.output_names = output_names(got)
            yield flatten_outputs(got)

    def serialize(self, model: onnx.ModelProto, notes: list[str]) -> bytes:
        return model.SerializeToString()

    def stage(self, model: onnx.ModelProto, notes: list[str], out: Path, force: bool) -> Any:
        """Write ``model`` for ``out`` (see :func:`stage_onnx`); remembers the data file it published."""
        large = self.handle.over_limit() or _too_large(model)
        data = Path(out).parent / data_name(Path(out))
        if large:
            check_data_file(self.handle, Path(out))
        self.written_data = data if large else None
        base = self.handle.file.resolve().parent if self.handle.external and self.handle.file else None
        return stage_onnx(model, notes, Path(out), force, large, base)

    def reload(self, path: Path) -> onnx.ModelProto:
        """The written file, checked; a model with external data is checked by path (protobuf's 2 GB).

        Its session is then built from that file (:meth:`outputs`), not from a re-serialised copy.
        """
        m = onnx.load(str(path), load_external_data=False)
        if not any(_is_external(t) for t in external_data_helper._get_all_tensors(m)):
            onnx.checker.check_model(m, full_check=True)
            return m
        onnx.checker.check_model(str(path), full_check=True)
        # Small tensors (PRelu slopes, shifts, biases) are read back for the checks; the weights
        # stay on disk, where the file's own session reads them (:meth:`session`).
        _inline_small(m, Path(path).parent)
        self.on_disk = (m, Path(path))
        return m

    def session(self, model: onnx.ModelProto) -> Any:
        """An onnxruntime session: from the file for a model :meth:`reload` read with external data."""
        on_disk = self.on_disk
        if on_disk is not None and on_disk[0] is model:
            import onnxruntime as ort

            h = self.handle
            return ort.InferenceSession(str(on_disk[1]), _options(h), providers=_providers(h))
        return session_for(self.handle, model)

    def written_slopes(self, model: onnx.ModelProto) -> list[tuple[str, str, object]]:
        return written_slopes(model)

    def original(self) -> onnx.ModelProto:
        return self.handle.model

    def original_slopes(self) -> list[tuple[str, str, object]]:
        return written_slopes(self.handle.model)

    def recycle(
        self, plans: list[Any], slope_plans: list[SlopePlan], seed: int, source: Any, samples: int | None
    ) -> tuple[SurgeryResult, dict[str, Recycled], dict[str, str]]:
        """Recycle dead units in a copy of the graph (:mod:`.recycle`), then give them ``slope_plans``."""
        from .recycle import recycle_onnx

        m = onnx.ModelProto()
        m.CopyFrom(self.handle.model)
        out = {o.name for o in m.graph.output}
        done, refused = recycle_onnx(
            m, self.handle, plans, seed, (source, samples), lambda v, r: _link(m, v, out, r), _writable
        )
        asked = {p.name for p, *_ in plans}
        used = [p for p in slope_plans if p.name in done or p.name not in asked]
        return (rewrite_onnx(m, used, PRELU) if used else SurgeryResult(m)), done, refused

    def slope_parameters(self, model: onnx.ModelProto) -> list[str]:
        """The PRelu slope initializers (what an ONNX training runtime would train)."""
        return [
            n.input[1] for n in _all_nodes(model.graph) if n.op_type == "PRelu" and "actaudit" in n.input[1]
        ]

    def trainable(self, model: onnx.ModelProto) -> bool:
        return True
