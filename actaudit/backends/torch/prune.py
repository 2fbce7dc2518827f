"""PyTorch side of ``actaudit prune`` and interval bounds: an aten graph as :mod:`actaudit.edit.graph`, and edits back.

One graph form serves eager modules, pickled modules, state_dict + ``--arch`` and
``.pt2`` programs: the unlifted ``GraphModule`` of a ``torch.export`` program (for an
eager module, exported here on the first calibration batch), whose ``get_attr`` nodes
name parameters by their state-dict key. Edits are written back by key — into the eager
module (its ``in_channels``/``out_features``/``num_features`` follow) or into the
program's module, which is then exported again, so every recorded shape is re-derived.
Flattening ``view``/``reshape`` calls with a literal feature count become ``[N, -1]``.

TorchScript archives keep their code: their parameters can be replaced, but this module
reads their graphs only through ``torch.jit``'s inlined IR, translated the same way
(``aten::conv2d``, ``aten::linear``, … with ``prim::GetAttr`` chains as keys).

Audit sites are matched to graph activations in execution order (kind and unit count must
agree); the drift check after the edit is what guarantees a match was right.
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ...edit.cuts import Edits
from ...edit.graph import Graph
from .prune_ir import _P, _Node, _Val, translate

if TYPE_CHECKING:
    from ...data import Batch, DataSource
    from ...edit.drift import Outputs
    from ...edit.ranges import InputRange
    from ...verdicts import SiteVerdict
    from .load import Runnable, TorchModel


# -- graph forms -------------------------------------------------------------------------------
def _wrap(x: object, params: dict[str, str]) -> object:
    if isinstance(x, torch.fx.Node):
        if x.name in params:
            return _P(params[x.name])
        return _Val(x.name)
    if isinstance(x, (list, tuple)):
        return [_wrap(i, params) for i in x]
    return x


def _shape(meta: dict[str, object]) -> tuple[int, ...] | None:
    v = meta.get("val")
    if not isinstance(v, torch.Tensor):
        return None
    try:
        dims = [int(d) for d in v.shape[1:]]
    except Exception:
        return None
    return (1, *dims) if v.ndim else None


def _leaves(x: object) -> list[object]:
    """The leaves of nested lists, tuples and dicts (a model's or a graph's outputs), in order."""
    if isinstance(x, (list, tuple)):
        return [leaf for i in x for leaf in _leaves(i)]
    if isinstance(x, dict):
        return [leaf for i in x.values() for leaf in _leaves(i)]
    return [x]


def gm_graph(gm: torch.fx.GraphModule) -> tuple[Graph, list[str]]:
    """IR of an unlifted export GraphModule, and the names of its placeholders (inputs) in order."""
    params: dict[str, str] = {}
    uses: dict[str, int] = {}
    inputs: list[str] = []
    nodes: list[_Node] = []
    outputs: list[str] = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            params[node.name] = str(node.target)
            uses[str(node.target)] = uses.get(str(node.target), 0) + len(node.users)
        elif node.op == "placeholder":
            inputs.append(node.name)
        elif node.op == "call_function":
            if not node.users and node.target is operator.getitem:
                continue  # an unread part of a tuple (a max pool's indices)
            t = node.target
            name = str(
                getattr(getattr(t, "_overloadpacket", None), "__name__", None) or getattr(t, "__name__", t)
            )
            args = cast(list[object], _wrap(list(node.args), params))
            kwargs = {k: _wrap(v, params) for k, v in node.kwargs.items()}
            nodes.append(_Node(node.name, name, args, kwargs, node.name, _shape(node.meta)))
        elif node.op == "output":
            outputs += [x.name for x in _leaves(node.args) if isinstance(x, torch.fx.Node)]
    return translate(nodes, inputs, outputs, _gm_tensors(gm, params.values()), uses), inputs


def _gm_tensors(gm: torch.fx.GraphModule, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    tensors = dict(gm.state_dict(keep_vars=True))
    for k in keys:
        if k not in tensors:
            try:
                tensors[k] = gm.get_submodule("").get_parameter(k)
            except AttributeError:
                obj: object = gm
                for part in k.split("."):
                    obj = getattr(obj, part, None)
                if isinstance(obj, torch.Tensor):
                    tensors[k] = obj
    return tensors


class _Trace(TorchDispatchMode):
    """Records each aten call of one run as a :class:`_Node`; parameters are told by storage, shape and strides."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.keys: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        for k, t in [*module.named_parameters(), *module.named_buffers()]:
            self.keys[_storage(t)] = k
            self.tensors[k] = t
        self.ids: dict[int, _P | _Val] = {}
        self.alive: list[torch.Tensor] = []  # keeps the ids above from being reused
        self.nodes: list[_Node] = []
        self.uses: dict[str, int] = {}

    def wrap(self, x: object) -> object:
        if isinstance(x, torch.Tensor):
            if id(x) in self.ids:
                return self.ids[id(x)]
            k = self.keys.get(_storage(x))
            if k is not None:
                self.uses[k] = self.uses.get(k, 0) + 1
                return _P(k)
            return _Val(f"?{len(self.ids)}")
        if isinstance(x, (list, tuple)):
            return [self.wrap(i) for i in x]
        return x

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: tuple[type, ...],
        a: tuple[object, ...] = (),
        kw: dict[str, object] | None = None,
    ) -> object:
        kw = kw or {}
        out = func(*a, **kw)
        name = func._overloadpacket.__name__
        wa = [self.wrap(x) for x in a]
        if (
            name in _TRANSPOSES
            and wa
            and isinstance(wa[0], _P)
            and isinstance(out, torch.Tensor)
            and out.ndim == 2
        ):
            self.ids[id(out)] = _P(wa[0].key, transposed=True)
            self.alive.append(out)
            return out
        first = out[0] if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) else out
        if isinstance(first, torch.Tensor):
            vname = f"{name}_{len(self.nodes)}"
            shape = (1, *(int(d) for d in first.shape[1:])) if first.ndim else None
            self.nodes.append(_Node(vname, name, wa, {k: self.wrap(v) for k, v in kw.items()}, vname, shape))
            self.ids[id(first)] = _Val(vname)
            self.alive.append(first)
        return out


_TRANSPOSES = ("t", "transpose", "permute", "numpy_T")


def _storage(t: torch.Tensor) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    return t.data_ptr(), tuple(t.shape), tuple(t.stride())


def trace_graph(module: nn.Module, args: list[object], kwargs: dict[str, object], names: list[str]) -> Graph:
    """IR of one run of ``module`` (a TorchScript archive) seen op by op in a dispatch mode.

    Parameters are recognised by storage, shape and strides; a transpose of one (``t`` before
    ``addmm``) stays tied to its key. Every ``view`` holds literal sizes in such a trace, and
    the archive's code may too, so a flattening view blocks pruning instead of being followed.
    """
    rec = _Trace(module)
    given = list(zip(names, [*args, *kwargs.values()], strict=False))
    for n, x in given:
        if isinstance(x, torch.Tensor):
            rec.ids[id(x)] = _Val(n)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rec:
            result = module(*args, **kwargs)
    outputs = [
        cast(_Val, rec.ids[id(x)]).id
        for x in _leaves(result)
        if isinstance(x, torch.Tensor) and isinstance(rec.ids.get(id(x)), _Val)
    ]
    inputs = [n for n, x in given if isinstance(x, torch.Tensor)]
    g = translate(rec.nodes, inputs, outputs, rec.tensors, rec.uses, follow_views=False)
    for op in g.ops:  # a TorchScript archive cannot grow a bias the compiled code does not pass
        op.attrs["can_add_bias"] = False
    return g


def match_sites(graph: Graph, sites: list[SiteVerdict]) -> dict[str, tuple[str, str] | str]:
    """Audit site -> (pre-activation, output) by execution order; kind and unit count must agree."""
    acts = [op for op in graph.ops if op.kind == "act" or op.attrs.get("site_kind")]
    out: dict[str, tuple[str, str] | str] = {}
    i = 0
    for v in sites:
        kind = v.info.kind
        j = i
        while j < len(acts) and acts[j].attrs.get("site_kind", acts[j].attrs.get("act")) != kind:
            j += 1
        if j == len(acts):
            out[v.info.name] = "no matching activation call in the graph"
            continue
        op = acts[j]
        shape = graph.shapes.get(op.inputs[0])
        if shape is not None and (v.info.unit_axis >= len(shape) or shape[v.info.unit_axis] != v.info.units):
            out[v.info.name] = "the graph's activation at this place has another unit count"
            continue
        out[v.info.name] = (op.inputs[0], op.outputs[0])
        i = j + 1
    return out


def _set_tensor(root: nn.Module, key: str, value: np.ndarray, like: torch.Tensor | None) -> None:
    mod_path, _, leaf = key.rpartition(".")
    mod = _submodule(root, mod_path)
    t = torch.from_numpy(np.ascontiguousarray(value))
    if like is not None:
        t = t.to(dtype=like.dtype, device=like.device)
    params = dict(mod.named_parameters(recurse=False))
    if leaf in params:
        setattr(mod, leaf, nn.Parameter(t, requires_grad=bool(params[leaf].requires_grad)))
    else:
        setattr(mod, leaf, t)
    if isinstance(mod, nn.Module) and not isinstance(mod, torch.jit.ScriptModule):
        _fix_sizes(mod)


def _submodule(root: nn.Module, path: str) -> nn.Module:
    """``get_submodule`` that also walks ScriptModules (which refuse it)."""
    mod = root
    for part in path.split(".") if path else []:
        mod = cast(nn.Module, getattr(mod, part))
    return mod


def _fix_sizes(mod: nn.Module) -> None:
    """Keep a standard layer's size attributes true to its new weights."""
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor):
        return
    if isinstance(mod, nn.modules.conv._ConvNd) and not mod.transposed:
        mod.out_channels, mod.in_channels = int(w.shape[0]), int(w.shape[1]) * mod.groups
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = int(w.shape[0]), int(w.shape[1])
    elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
        mod.num_features = int(w.shape[0])


def apply_to_module(root: nn.Module, graph: Graph, edits: Edits, copied: bool = False) -> nn.Module:
    """A deep copy of ``root`` with the edited tensors in place (and new biases where folds need one)."""
    if copied:
        m = root
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deepcopy of a GraphModule warns about pytree internals
            m = copy.deepcopy(root)
    state = dict(m.state_dict(keep_vars=True))
    for key in edits.keys():  # noqa: SIM118 (Edits is not a dict)
        _set_tensor(m, key, edits.apply(key), state.get(key))
    ops = {op.name: op for op in graph.ops}
    for op_name, delta in edits.new_bias.items():
        w = ops[op_name].params["weight"]
        cut = sorted(edits.delete.get(w.key, {}).get(0, set()))
        bias = np.delete(np.asarray(delta, dtype=np.float64), cut).astype(np.float32)
        mod_path = w.key.rpartition(".")[0]
        mod = _submodule(m, mod_path)
        if not isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) or mod.bias is not None:
            raise RuntimeError(f"cannot add a bias to {w.key}: not a Conv or Linear module without one")
        like = state[w.key]
        mod.bias = nn.Parameter(torch.from_numpy(bias).to(dtype=like.dtype, device=like.device))
    return m


def _literal_views(gm: torch.fx.GraphModule) -> None:
    """``view(x, [N, 512])`` → ``view(x, [N, -1])``: the feature count changes when channels are cut."""
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(getattr(node.target, "_overloadpacket", None), "__name__", "")
        if name in ("view", "reshape", "_unsafe_view") and len(node.args) > 1:
            shape = node.args[1]
            if (
                isinstance(shape, (list, tuple))
                and len(shape) == 2
                and isinstance(shape[1], int)
                and shape[1] != -1
            ):
                node.args = (node.args[0], [shape[0], -1], *node.args[2:])
    gm.recompile()


def export_again(gm: nn.Module, example: Batch) -> torch.export.ExportedProgram:
    """torch.export of an edited module with the batch axis dynamic where possible."""
    args, kwargs = example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dyn = tuple(
                {0: torch.export.Dim.AUTO} if isinstance(a, torch.Tensor) and a.ndim else None for a in args
            )
            if kwargs:
                raise ValueError("keyword inputs")
            return torch.export.export(gm, tuple(args), dynamic_shapes=dyn)
        except Exception:
            return torch.export.export(gm, tuple(args), kwargs or None)


class TorchPruner:
    """The prune command's view of a PyTorch model; runs and files go through the rewrite surgeon."""

    def __init__(self, tm: TorchModel, output: Path | None, output_format: str | None) -> None:
        from ...errors import InputError
        from .surgery import PICKLE, PT2, TS, TorchSurgeon

        self.tm = tm
        suffix = str(output or "").lower().rsplit(".", 1)[-1] if output else ""
        if tm.fmt == "torchscript":
            if output_format == "pt2":
                raise InputError(
                    "a TorchScript model is pruned as TorchScript; --output-format pt2 needs an eager model"
                )
            writer = TS
        elif tm.fmt == "torch.export":
            if output_format == "ts":
                raise InputError(
                    "a torch.export program is pruned as .pt2; --output-format ts needs an eager model"
                )
            writer = PT2
        else:
            want = output_format or {"pt2": "pt2", "ts": "ts", "jit": "ts", "torchscript": "ts"}.get(suffix)
            if want is None and tm.fmt == "state_dict":
                want = "ts"  # weights alone cannot carry the cut shapes: write a program
            writer = {"ts": TS, "pt2": PT2, None: PICKLE}[want]
            if writer == PICKLE and tm.fmt == "state_dict":
                writer = TS
        self.surgeon = TorchSurgeon(tm, writer)
        self.notes: list[str] = []
        self._gm: torch.fx.GraphModule | None = None
        self._inputs: list[str] = []
        self.output_format = self.surgeon.output_format
        self.checks = ("fresh load from disk", "calibration re-run", "parameter count")

    # -- runs --------------------------------------------------------------------------------
    def prepare(self, source: DataSource, samples: int | None) -> None:
        """Bind the first calibration batch, as the audit batches it (a fixed batch size re-chunked):
        the example the graph is exported or traced with."""
        from . import backend

        first = next(iter(backend.batches_for(self.tm, source, samples)), None)
        if first is not None:
            self.surgeon.example = first

    def outputs(self, model: object, source: DataSource, samples: int | None) -> Iterator[Outputs]:
        return self.surgeon.outputs(model, source, samples, None)

    def original(self) -> Runnable | None:
        return self.surgeon.original()

    # -- graph -------------------------------------------------------------------------------
    def _example(self) -> Batch:
        if self.surgeon.example is None:
            raise RuntimeError("no calibration batch was run before the graph was needed")
        return self.surgeon.example

    def _graph_module(self, model: object) -> torch.fx.GraphModule:
        if hasattr(model, "graph_signature"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cast(torch.export.ExportedProgram, model).module()
        args, kwargs = self._example()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(cast(nn.Module, model), tuple(args), kwargs or None).module()

    def range_names(self, ranges: list[InputRange]) -> list[str]:
        names = [s.name for s in self.tm.inputs]
        return [names[int(r.key)] if r.key.isdigit() and int(r.key) < len(names) else r.key for r in ranges]

    def sample_shapes(self, ranges: list[InputRange]) -> dict[str, tuple[int, ...]]:
        return {n: tuple(r.shape) for n, r in zip(self.range_names(ranges), ranges, strict=True)}

    def graph(self, model: object, shapes: dict[str, tuple[int, ...]]) -> Graph:
        names = [s.name for s in self.tm.inputs]
        if self.tm.fmt == "torchscript":
            args, kwargs = self._example()
            return trace_graph(cast(nn.Module, model), args, kwargs, names)
        g, inputs = gm_graph(self._graph_module(model))
        # placeholders take the user's input names (positional order)
        rename = dict(zip(inputs, names, strict=False))
        g.inputs = [rename.get(i, i) for i in g.inputs]
        for op in g.ops:
            op.inputs = [rename.get(i, i) for i in op.inputs]
        g.__post_init__()
        return g

    def site_values(self, model: object, sites: list[SiteVerdict]) -> dict[str, tuple[str, str] | str]:
        return match_sites(self.graph(model, {}), sites)

    def apply(self, model: object, graph: Graph, edits: Edits) -> Runnable:
        if self.tm.fmt == "torchscript":
            import io

            assert self.surgeon._script is not None
            fresh = torch.jit.load(io.BytesIO(self.surgeon._script), map_location=self.surgeon.device)
            return apply_to_module(fresh, graph, edits, copied=True).eval()
        if hasattr(model, "graph_signature"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = apply_to_module(
                    cast(torch.export.ExportedProgram, model).module(), graph, edits, copied=True
                )
            _literal_views(cast(torch.fx.GraphModule, gm))  # a GraphModule's deep copy is one
            return export_again(gm, self._example())
        return apply_to_module(cast(nn.Module, model), graph, edits).eval()

    # -- files -------------------------------------------------------------------------------
    def serialize(self, model: object, notes: list[str]) -> bytes:
        return self.surgeon.serialize(model, notes)

    def reload(self, path: Path) -> Runnable:
        return self.surgeon.reload(path)

    def count_params(self, model: object) -> int:
        if hasattr(model, "graph_signature"):
            sd = cast(torch.export.ExportedProgram, model).state_dict
            return int(
                sum(t.numel() for t in sd.values() if isinstance(t, torch.Tensor) and t.is_floating_point())
            )
        sd = cast(nn.Module, model).state_dict()
        return int(
            sum(t.numel() for t in sd.values() if isinstance(t, torch.Tensor) and t.is_floating_point())
        )
