"""Edits written back into an ONNX model for ``actaudit prune``: initializers, Constant nodes, new biases."""

from __future__ import annotations

import contextlib
import math
import mmap
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...edit.cuts import Edits
from ...edit.graph import Graph
from ...errors import InputError
from ...fileio import atomic_pair
from .load import _is_external
from .proto import read_external

_FLOAT = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
)


def _mapped(t: onnx.TensorProto, base: Path | None) -> np.ndarray | None:
    """An external tensor as a read-only memory map of its data file: the weights of a model over
    2 GB are read where planning needs them, never copied whole. Offsets and lengths from the file
    are checked against the data file's size and the tensor's dims first; the location must stay
    inside ``base`` (no absolute path, no ``..``, no link out of it)."""
    info = {e.key: e.value for e in t.external_data}
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    except (KeyError, TypeError, ValueError):
        return None
    loc = info.get("location", "")
    if (
        base is None
        or not loc
        or Path(loc).is_absolute()
        or ".." in Path(loc).parts
        or dtype.kind not in "fiub"
    ):
        return None
    path = base / loc
    if not path.resolve().is_relative_to(base.resolve()):
        return None
    offset, length = info.get("offset", "0"), info.get("length", "")
    n = math.prod(int(d) for d in t.dims)
    if not offset.isdigit() or (length and not length.isdigit()) or any(int(d) < 0 for d in t.dims):
        return None
    size = path.stat().st_size if path.is_file() else -1
    if (length and int(length) != n * dtype.itemsize) or int(offset) + n * dtype.itemsize > size:
        return None
    if n == 0:
        return np.zeros(tuple(t.dims), dtype)
    return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=int(offset), shape=tuple(t.dims))


def _drop_pages(a: np.ndarray) -> None:
    """Return a memory-mapped weight's pages to the page cache once read: they are clean and
    would otherwise count as this process's memory beside the edited copy."""
    mm = getattr(a, "_mmap", None)
    if isinstance(mm, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def _name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def apply(
    model: onnx.ModelProto,
    graph: Graph,
    edits: Edits,
    base: onnx.ModelProto | None = None,
    folder: tuple[Path, Path] | None = None,
) -> onnx.ModelProto:
    """A copy of ``model`` with the edits written into its initializers and Constant nodes.

    ``base``: the same graph with its weights left in the input's external data (over 2 GB):
    it is copied instead. ``folder``: (where the edited model is written, the folder of the
    input's external data): each edited external weight goes to ``weights.bin`` there one
    block of rows at a time, every other external weight is copied beside it, and the model
    (kilobytes) is written as ``model.onnx``: no weight is ever held whole in memory.
    """
    m = onnx.ModelProto()
    m.CopyFrom(base if base is not None else model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output}
    data = _Data(folder[0] / DATA, folder[1]) if folder is not None else None
    try:
        for key in edits.keys():  # noqa: SIM118 (Edits is not a dict)
            value = edits.params[key].value
            if data is not None and key not in consts and value.dtype.kind == "f" and value.nbytes >= SMALL:
                if key in inits:
                    t = inits[key]
                else:  # a folded Reshape/Identity of constants: its output becomes an initializer
                    g.node.remove(next(n for n in g.node if n.output and n.output[0] == key))
                    t = g.initializer.add(name=key, data_type=helper.np_dtype_to_tensor_dtype(value.dtype))
                shape, blocks = edited_blocks(edits, key)
                data.put(t, shape, blocks)
                continue
            new = edits.apply(key)
            _drop_pages(edits.params[key].value)
            if key in inits:
                inits[key].CopyFrom(numpy_helper.from_array(new, key))
            elif key in consts:
                node = consts[key]
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(new)))
            else:  # a folded Reshape/Unsqueeze of constants: its output becomes an initializer
                node = next(n for n in g.node if n.output and n.output[0] == key)
                g.node.remove(node)
                g.initializer.append(numpy_helper.from_array(new, key))
        _new_biases(g, graph, edits, set(inits))
        del g.value_info[:]
        _drop_unused(g)
        if data is not None and folder is not None:
            data.copy_rest(m)
            (folder[0] / "model.onnx").write_bytes(m.SerializeToString())
    finally:
        if data is not None:
            data.close()
    return m


def _new_biases(g: onnx.GraphProto, graph: Graph, edits: Edits, inits: set[str]) -> None:
    """Biases added where a folded constant reaches an op that had none."""
    by_name = {_name(n): n for n in g.node}
    ir_ops = {op.name: op for op in graph.ops}
    taken = inits | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    for op_name, delta in edits.new_bias.items():
        node = by_name[op_name]
        w = ir_ops[op_name].params["weight"]
        dtype = w.value.dtype
        op = ir_ops[op_name]
        out_axis = 0 if op.kind == "conv" or op.attrs.get("layout") == "oi" else 1
        # the new bias covers every original output; cut the outputs the producer side cut
        bias = np.delete(
            np.asarray(delta, dtype=np.float64), sorted(edits.delete.get(w.key, {}).get(out_axis, set()))
        )
        stem = f"{op_name}_actaudit_folded_bias".replace("/", "_")
        bname, k = stem, 1
        while bname in taken:
            bname, k = f"{stem}_{k}", k + 1
        taken.add(bname)
        g.initializer.append(numpy_helper.from_array(bias.astype(dtype), bname))
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = bname


def _drop_unused(g: onnx.GraphProto) -> None:
    """Initializers and Constant nodes nobody reads any more (the sources of folded reshapes)."""
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        for n in g.node:
            for a in n.attribute:
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    used |= {i for sn in sub.node for i in sn.input}
        dead_inits = [t for t in g.initializer if t.name not in used]
        dead_nodes = [
            n
            for n in g.node
            if n.op_type in ("Constant", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast")
            and n.output
            and all(o not in used for o in n.output)
            and all(not i or i in {t.name for t in g.initializer} or i in _const_outputs(g) for i in n.input)
        ]
        if not dead_inits and not dead_nodes:
            return
        for t in dead_inits:
            g.initializer.remove(t)
        for n in dead_nodes:
            g.node.remove(n)
        inputs = {t.name for t in dead_inits}
        keep = [i for i in g.input if i.name not in inputs]
        if len(keep) != len(g.input):
            del g.input[:]
            g.input.extend(keep)


def _const_outputs(g: onnx.GraphProto) -> set[str]:
    return {n.output[0] for n in g.node if n.op_type == "Constant" and n.output}


def count_params(model: onnx.ModelProto) -> int:
    """Float values held in initializers and Constant nodes."""
    n = sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type in _FLOAT)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in _FLOAT:
                    n += math.prod(a.t.dims)
    return int(n)


DATA = "weights.bin"  # the edited model's external data, beside its ``model.onnx``
SMALL = 1024  # bytes: smaller float tensors, and every other tensor, are held inside the model's proto


def _kept_external(t: onnx.TensorProto) -> bool:
    """An external float tensor of :data:`SMALL` bytes or more; onnxruntime's shape inference reads
    integer tensors (shapes, axes) from the proto only."""
    if not _is_external(t) or t.data_type not in _FLOAT:
        return False
    length = next((e.value for e in t.external_data if e.key == "length"), "")
    return not length.isdigit() or int(length) >= SMALL


BLOCK = 64 << 20  # bytes: an edited weight is cut and written this many bytes of rows at a time
_ALIGN = 4096  # tensors start on a page boundary, so onnxruntime can map them


def edited_blocks(edits: Edits, key: str) -> tuple[tuple[int, ...], Iterator[np.ndarray]]:
    """The shape of ``edits.apply(key)`` and its values as blocks of rows (axis 0), in order.

    Only rows are ever materialised (:data:`BLOCK` bytes at a time) and the mapped pages read
    are returned after each block. A weight whose bias moves, or of rank under 2, is small:
    it comes whole from :meth:`Edits.apply`.
    """
    a = edits.params[key].value
    cuts: dict[int, list[int]] = {}
    for axis, idx in edits.delete.get(key, {}).items():
        cuts.setdefault(axis if a.ndim > axis else a.ndim - 1, []).extend(sorted(idx))
    if key in edits.bias_delta or a.ndim < 2 or len(cuts) != len(edits.delete.get(key, {})):
        new = edits.apply(key)
        _drop_pages(a)
        return new.shape, iter([new])
    shape = tuple(n - len(set(cuts.get(ax, ()))) for ax, n in enumerate(a.shape))
    rows = np.delete(np.arange(a.shape[0]), cuts.get(0, []))
    step = max(1, BLOCK // max(1, a.nbytes // max(1, a.shape[0])))

    def blocks() -> Iterator[np.ndarray]:
        for i in range(0, len(rows), step):
            blk = np.asarray(a[rows[i : i + step]])
            for ax in sorted(k for k in cuts if k > 0):
                blk = np.delete(blk, cuts[ax], axis=ax)
            yield blk
            _drop_pages(a)

    return shape, blocks()


class _Data:
    """An external data file written one tensor (one block) at a time; tensors become references to it."""

    def __init__(self, path: Path, source: Path) -> None:
        self.path, self.source = path, source  # source: the folder of the input's external data
        self.f: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed by apply)
        self.done: list[onnx.TensorProto] = []  # held, so that their ids stay theirs

    def put(self, t: onnx.TensorProto, shape: tuple[int, ...], blocks: Iterator[np.ndarray]) -> None:
        """``t`` becomes a reference to ``blocks`` (its new values, of its dtype) written here."""
        if self.f.tell() % _ALIGN:
            self.f.write(b"\0" * (_ALIGN - self.f.tell() % _ALIGN))
        offset = self.f.tell()
        for blk in blocks:
            self.f.write(np.ascontiguousarray(blk).data.cast("B"))
        name, data_type, doc = t.name, t.data_type, t.doc_string
        t.Clear()
        t.name, t.data_type, t.doc_string = name, data_type, doc
        t.dims.extend(shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", DATA), ("offset", offset), ("length", self.f.tell() - offset)):
            t.external_data.add(key=k, value=str(v))
        self.done.append(t)

    def copy_rest(self, m: onnx.ModelProto) -> None:
        """Every external tensor not written here copied from the input's data, block by block.

        Its location, offset and length are checked as when it was mapped for planning; a
        reference that does not hold is the input's fault (exit 2).
        """
        written = {id(t) for t in self.done}
        for t in list(_all_tensors(m)):
            if not _is_external(t) or id(t) in written:
                continue
            if not _kept_external(t):
                _read_in(t, self.source)
                continue
            a = _mapped(t, self.source)
            if a is not None:
                flat = a.reshape(-1)
                step = max(1, BLOCK // max(1, flat.itemsize))
                blocks: Iterator[np.ndarray] = (flat[i : i + step] for i in range(0, flat.size, step))
            else:
                blocks = iter([np.frombuffer(_read(t, self.source), np.uint8)])
            self.put(t, tuple(t.dims), blocks)
            if a is not None:
                _drop_pages(a)

    def close(self) -> None:
        self.f.close()


def _read(t: onnx.TensorProto, folder: Path) -> bytes:
    """An external tensor's bytes, its reference checked (:func:`read_external`); a bad one is exit 2."""
    try:
        return read_external(t, str(folder))
    except Exception as e:
        raise InputError(
            f"cannot read the external data of tensor {t.name!r}: {' '.join(str(e).split())[:200]}"
        ) from None


def _read_in(t: onnx.TensorProto, folder: Path) -> None:
    t.raw_data = _read(t, folder)
    t.data_location = onnx.TensorProto.DEFAULT
    del t.external_data[:]


def _all_tensors(m: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and Constant values of the main graph and of every subgraph."""

    def walk(g: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from g.initializer
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                yield from a.tensors
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    yield from walk(sub)

    return walk(m.graph)


def inlined(m: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    """A copy of ``m`` with its external data (written by :func:`apply` to ``folder``) read into it."""
    full = onnx.ModelProto()
    full.CopyFrom(m)
    for t in _all_tensors(full):
        if _is_external(t):
            _read_in(t, folder)
    return full


@contextlib.contextmanager
def staged_copy(
    m: onnx.ModelProto, folder: Path, notes: list[str], out: Path, data: str, force: bool
) -> Iterator[Path]:
    """The temporary path of ``m`` (written by :func:`apply` to ``folder``) for ``out``, its weights in
    ``data`` beside it, published (atomically, as a pair) when the block succeeds.

    The data file is copied as it is (by the kernel, not through this process's memory), and
    the model's references renamed to it.
    """
    named = onnx.ModelProto()
    named.CopyFrom(m)
    for t in _all_tensors(named):
        for e in t.external_data:
            if e.key == "location":
                e.value = data
    with atomic_pair(out, data, force=force) as tmp:
        shutil.copyfile(folder / DATA, tmp.parent / data)
        tmp.write_bytes(named.SerializeToString())
        notes.append(f"the model is over 2 GB: its weights are written to {data} beside {out.name}")
        yield tmp
