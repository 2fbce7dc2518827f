"""PyTorch side of ``actaudit prune`` and interval bounds: an aten graph as :mod:`actaudit.prune.ir`, and edits back.

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
import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ...prune.ir import Graph, Op, Param
from ...prune.plan import Edits

_SITE_KINDS = {
    "relu": "relu",
    "relu_": "relu",
    "relu6": "relu6",
    "hardtanh": "clip",
    "hardtanh_": "clip",
    "clamp": "clip",
    "clamp_": "clip",
    "tanh": "tanh",
    "tanh_": "tanh",
    "sigmoid": "sigmoid",
    "sigmoid_": "sigmoid",
    "leaky_relu": "leaky",
    "leaky_relu_": "leaky",
    "elu": "elu",
    "elu_": "elu",
    "hardsigmoid": "hardsigmoid",
    "hardsigmoid_": "hardsigmoid",
    "softplus": "softplus",
    "gelu": "gelu",
    "silu": "silu",
    "silu_": "silu",
    "mish": "mish",
    "hardswish": "hardswish",
    "hardswish_": "hardswish",
    "softsign": "softsign",
    "prelu": "prelu",
    "selu": "selu",
    "celu": "celu",
}
_IDENTITY = {
    "dropout",
    "clone",
    "alias",
    "detach",
    "contiguous",
    "feature_dropout",
    "_to_copy",
    "to",
    "lift_fresh_copy",
}


def _np(t: Any) -> np.ndarray:
    return (
        t.detach().cpu().float().numpy().copy() if t.is_floating_point() else t.detach().cpu().numpy().copy()
    )


class _Node:
    """One aten call in a backend-neutral shape: op name, args (value ids, params, constants), output id."""

    def __init__(
        self,
        name: str,
        op: str,
        args: list[Any],
        kwargs: dict[str, Any],
        out: str,
        shape: tuple[int, ...] | None,
    ) -> None:
        self.name, self.op, self.args, self.kwargs, self.out, self.shape = name, op, args, kwargs, out, shape


class _Val:
    """A computed value (by id)."""

    def __init__(self, id: str) -> None:
        self.id = id


class _P:
    """A parameter or buffer (by state-dict key)."""

    def __init__(self, key: str, transposed: bool = False) -> None:
        self.key = key
        self.transposed = transposed


def _arg(a: list[Any], kw: dict[str, Any], i: int, name: str, default: Any) -> Any:
    if len(a) > i:
        return a[i]
    return kw.get(name, default)


def translate(
    nodes: list[_Node],
    inputs: list[str],
    outputs: list[str],
    tensors: dict[str, Any],
    uses: dict[str, int],
    follow_views: bool = True,
) -> Graph:
    """IR ops from aten calls; ``tensors`` maps keys to tensors, ``uses`` counts each key's readers."""
    ops: list[Op] = []
    shapes: dict[str, tuple[int, ...]] = {}

    def prm(x: Any) -> Param | None:
        if isinstance(x, _P) and x.key in tensors and isinstance(tensors[x.key], torch.Tensor):
            return Param(x.key, _np(tensors[x.key]), shared=uses.get(x.key, 0) > 1)
        return None

    def vid(x: Any) -> str | None:
        return x.id if isinstance(x, _Val) else None

    for n in nodes:
        if n.shape is not None:
            shapes[n.out] = n.shape
        a, kw, op = n.args, n.kwargs, n.op
        vals = [vid(x) for x in a if vid(x)] + [vid(x) for x in kw.values() if vid(x)]
        other = Op(n.name, "other", [v for v in vals if v], [n.out], {"op": op})
        x = vid(a[0]) if a else None
        if op in ("conv2d", "conv1d", "convolution", "_convolution"):
            w, b = prm(_arg(a, kw, 1, "weight", None)), _arg(a, kw, 2, "bias", None)
            bp = prm(b)
            if x is None or w is None or (b is not None and bp is None):
                ops.append(other)
                continue
            nd = w.value.ndim - 2
            if op in ("convolution", "_convolution"):
                if a[6]:
                    ops.append(other)  # transposed
                    continue
                stride, padding, dilation, groups = a[3], a[4], a[5], a[8]
            else:
                stride = _arg(a, kw, 3, "stride", [1] * nd)
                padding = _arg(a, kw, 4, "padding", [0] * nd)
                dilation = _arg(a, kw, 5, "dilation", [1] * nd)
                groups = _arg(a, kw, 6, "groups", 1)
            if isinstance(padding, str):
                if padding != "valid":
                    ops.append(other)
                    continue
                padding = [0] * nd
            stride, padding, dilation = (_ints(v, nd) for v in (stride, padding, dilation))
            params = {"weight": w} | ({"bias": bp} if bp is not None else {})
            attrs: dict[str, Any] = {
                "op": op,
                "strides": stride,
                "pads": padding + padding,
                "dilations": dilation,
                "groups": int(groups),
                "can_add_bias": True,
            }
            ops.append(Op(n.name, "conv", [x], [n.out], attrs, params))
        elif op in ("addmm", "mm") and len(a) >= (3 if op == "addmm" else 2):
            b, xx, wv = (a[0], a[1], a[2]) if op == "addmm" else (None, a[0], a[1])
            w, bp = prm(wv), prm(b)
            x = vid(xx)
            if (
                x is None
                or w is None
                or w.value.ndim != 2
                or (b is not None and bp is None)
                or kw.get("beta", 1) != 1
                or kw.get("alpha", 1) != 1
            ):
                ops.append(other)
                continue
            params = {"weight": w} | ({"bias": bp} if bp is not None else {})
            layout = "oi" if wv.transposed else "io"
            ops.append(
                Op(
                    n.name,
                    "linear",
                    [x],
                    [n.out],
                    {"op": op, "layout": layout, "can_add_bias": False},
                    params,
                )
            )
        elif op == "linear":
            w, b = prm(_arg(a, kw, 1, "weight", None)), _arg(a, kw, 2, "bias", None)
            bp = prm(b)
            if x is None or w is None or (b is not None and bp is None):
                ops.append(other)
                continue
            params = {"weight": w} | ({"bias": bp} if bp is not None else {})
            ops.append(
                Op(n.name, "linear", [x], [n.out], {"op": op, "layout": "oi", "can_add_bias": True}, params)
            )
        elif op in ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"):
            ps = [prm(v) for v in a[1:5]]
            training = a[5] if op in ("batch_norm", "native_batch_norm") else False
            eps = a[7] if op in ("batch_norm", "native_batch_norm") else a[6]
            if x is None or any(p is None for p in ps) or training:
                ops.append(other)
                continue
            params = {
                k: p for k, p in zip(("scale", "bias", "mean", "var"), ps, strict=True) if p is not None
            }
            ops.append(Op(n.name, "bn", [x], [n.out], {"op": op, "eps": float(eps)}, params))
        elif op in _SITE_KINDS:
            kind = _SITE_KINDS[op]
            attrs = {"op": op, "act": kind, "site_kind": kind}
            if kind == "relu6":
                attrs.update(act="clip", lo=0.0, hi=6.0)
            elif kind == "clip":
                lo = _arg(
                    a,
                    kw,
                    1,
                    "min_val" if op.startswith("hardtanh") else "min",
                    -1.0 if op.startswith("hardtanh") else None,
                )
                hi = _arg(
                    a,
                    kw,
                    2,
                    "max_val" if op.startswith("hardtanh") else "max",
                    1.0 if op.startswith("hardtanh") else None,
                )
                if isinstance(lo, (_Val, _P)) or isinstance(hi, (_Val, _P)):
                    ops.append(other)
                    continue
                attrs["lo"] = -math.inf if lo is None else float(lo)
                attrs["hi"] = math.inf if hi is None else float(hi)
                attrs["site_kind"] = (
                    "relu6"
                    if (attrs["lo"], attrs["hi"]) == (0.0, 6.0)
                    else ("relu" if attrs["lo"] == 0.0 and attrs["hi"] == math.inf else "clip")
                )
            elif kind == "leaky":
                attrs["alpha"] = float(_arg(a, kw, 1, "negative_slope", 0.01))
            elif kind == "hardsigmoid":
                attrs.update(alpha=1.0 / 6.0, beta=0.5)
            elif kind == "elu":
                attrs["alpha"] = float(_arg(a, kw, 1, "alpha", 1.0))
            if x is None:
                ops.append(other)
                continue
            ops.append(Op(n.name, "act", [x], [n.out], attrs))
        elif (
            op in ("add", "add_")
            and len(a) >= 2
            and vid(a[0])
            and vid(a[1])
            and _arg(a, kw, 2, "alpha", 1) == 1
        ):
            ops.append(Op(n.name, "add", [vid(a[0]), vid(a[1])], [n.out], {"op": op}))  # type: ignore[list-item]
        elif op in ("mul", "mul_") and len(a) >= 2 and vid(a[0]) and vid(a[1]):
            ops.append(Op(n.name, "mul", [vid(a[0]), vid(a[1])], [n.out], {"op": op}))  # type: ignore[list-item]
        elif op in ("add", "sub", "mul", "div") and len(a) >= 2 and x is not None and prm(a[1]) is not None:
            form = {"add": "add", "sub": "sub", "mul": "mul", "div": "div"}[op]
            if op in ("add", "sub") and _arg(a, kw, 2, "alpha", 1) != 1:
                ops.append(other)
                continue
            ops.append(Op(n.name, "scale", [x], [n.out], {"op": op, "form": form}, {"c": prm(a[1])}))  # type: ignore[dict-item]
        elif op == "cat":
            items = a[0] if a else kw.get("tensors", [])
            ids = [vid(t) for t in items]
            if any(i is None for i in ids):
                ops.append(other)
                continue
            ops.append(Op(n.name, "concat", ids, [n.out], {"op": op, "axis": int(_arg(a, kw, 1, "dim", 0))}))  # type: ignore[arg-type]
        elif op == "flatten" and x is not None:
            start, end = int(_arg(a, kw, 1, "start_dim", 0)), int(_arg(a, kw, 2, "end_dim", -1))
            if start == 1 and end == -1:
                ops.append(Op(n.name, "flatten", [x], [n.out], {"op": op, "axis": 1}))
            else:
                ops.append(Op(n.name, "reshape", [x], [n.out], {"op": op, "pure_reshape": True}))
        elif op in ("view", "reshape", "_unsafe_view") and x is not None:
            shape = a[1] if len(a) > 1 else kw.get("shape", kw.get("size"))
            flat = isinstance(shape, (list, tuple)) and len(shape) == 2 and follow_views
            ops.append(
                Op(
                    n.name,
                    "flatten" if flat else "reshape",
                    [x],
                    [n.out],
                    {
                        "op": op,
                        "axis": 1,
                        "pure_reshape": True,
                        "literal": bool(flat)
                        and shape is not None
                        and not isinstance(shape[1], _Val)
                        and shape[1] != -1,
                    },
                )
            )
        elif op in ("squeeze", "unsqueeze") and x is not None:
            ops.append(Op(n.name, "reshape", [x], [n.out], {"op": op, "pure_reshape": True}))
        elif op in ("max_pool2d", "max_pool1d", "avg_pool2d", "avg_pool1d") and x is not None:
            k = list(_arg(a, kw, 1, "kernel_size", []))
            nd = len(k)
            stride = _ints(_arg(a, kw, 2, "stride", k) or k, nd)
            pad = _ints(_arg(a, kw, 3, "padding", 0), nd)
            if op.startswith("max"):
                attrs = {
                    "op": op,
                    "kernel": k,
                    "strides": stride,
                    "pads": pad + pad,
                    "dilations": _ints(_arg(a, kw, 4, "dilation", 1), nd),
                    "ceil_mode": bool(_arg(a, kw, 5, "ceil_mode", False)),
                }
                ops.append(Op(n.name, "maxpool", [x], [n.out], attrs))
            else:
                if _arg(a, kw, 6, "divisor_override", None) is not None:
                    ops.append(other)
                    continue
                attrs = {
                    "op": op,
                    "kernel": k,
                    "strides": stride,
                    "pads": pad + pad,
                    "ceil_mode": bool(_arg(a, kw, 4, "ceil_mode", False)),
                    "count_include_pad": bool(_arg(a, kw, 5, "count_include_pad", True)),
                }
                ops.append(Op(n.name, "avgpool", [x], [n.out], attrs))
        elif (
            op in ("adaptive_avg_pool2d", "adaptive_avg_pool1d")
            and x is not None
            and all(int(s) == 1 for s in a[1])
        ):
            ops.append(Op(n.name, "gap", [x], [n.out], {"op": op, "keepdims": True}))
        elif op == "mean" and x is not None and len(a) > 1 and n.shape is not None:
            dims = sorted(
                int(d) % (len(n.shape) + (0 if _arg(a, kw, 2, "keepdim", False) else len(a[1]))) for d in a[1]
            )
            rank = len(n.shape) if _arg(a, kw, 2, "keepdim", False) else len(n.shape) + len(dims)
            if dims == list(range(2, rank)):
                ops.append(
                    Op(
                        n.name,
                        "gap",
                        [x],
                        [n.out],
                        {"op": op, "keepdims": bool(_arg(a, kw, 2, "keepdim", False))},
                    )
                )
            else:
                ops.append(other)
        elif (op in _IDENTITY and x is not None) or (
            op == "getitem"
            and x is not None
            and a[1] == 0
            and ops
            and ops[-1].outputs == [x]
            and ops[-1].kind == "bn"
        ):
            ops.append(Op(n.name, "identity", [x], [n.out], {"op": op}))
        else:
            ops.append(other)
    return Graph(ops, inputs, outputs, shapes)


def _ints(v: Any, nd: int) -> list[int]:
    if isinstance(v, int):
        return [v] * nd
    v = [int(i) for i in v]
    return v * nd if len(v) == 1 and nd > 1 else v


# -- graph forms -------------------------------------------------------------------------------
def _wrap(x: Any, params: dict[str, str]) -> Any:
    if isinstance(x, torch.fx.Node):
        if x.name in params:
            return _P(params[x.name])
        return _Val(x.name)
    if isinstance(x, (list, tuple)):
        return [_wrap(i, params) for i in x]
    return x


def _shape(meta: Any) -> tuple[int, ...] | None:
    v = meta.get("val")
    if not isinstance(v, torch.Tensor):
        return None
    try:
        dims = [int(d) for d in v.shape[1:]]
    except Exception:
        return None
    return (1, *dims) if v.ndim else None


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
            t = node.target
            name = str(
                getattr(getattr(t, "_overloadpacket", None), "__name__", None) or getattr(t, "__name__", t)
            )
            nodes.append(
                _Node(
                    node.name,
                    name,
                    _wrap(list(node.args), params),
                    {k: _wrap(v, params) for k, v in node.kwargs.items()},
                    node.name,
                    _shape(node.meta),
                )
            )
        elif node.op == "output":

            def walk(x: Any) -> None:
                if isinstance(x, torch.fx.Node):
                    outputs.append(x.name)
                elif isinstance(x, (list, tuple)):
                    for i in x:
                        walk(i)
                elif isinstance(x, dict):
                    for i in x.values():
                        walk(i)

            walk(node.args)
    tensors = dict(gm.state_dict(keep_vars=True))
    for k in params.values():
        if k not in tensors:
            try:
                tensors[k] = gm.get_submodule("").get_parameter(k)
            except AttributeError:
                obj: Any = gm
                for part in k.split("."):
                    obj = getattr(obj, part, None)
                if isinstance(obj, torch.Tensor):
                    tensors[k] = obj
    return translate(nodes, inputs, outputs, tensors, uses), inputs


def trace_graph(module: Any, args: list[Any], kwargs: dict[str, Any], names: list[str]) -> Graph:
    """IR of one run of ``module`` (a TorchScript archive) seen op by op in a dispatch mode.

    Parameters are recognised by storage, shape and strides; a transpose of one (``t`` before
    ``addmm``) stays tied to its key. Every ``view`` holds literal sizes in such a trace, and
    the archive's code may too, so a flattening view blocks pruning instead of being followed.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    keys: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
    tensors: dict[str, Any] = {}
    for k, t in [*module.named_parameters(), *module.named_buffers()]:
        keys[(t.data_ptr(), tuple(t.shape), tuple(t.stride()))] = k
        tensors[k] = t
    ids: dict[int, Any] = {}
    alive: list[Any] = []
    nodes: list[_Node] = []
    uses: dict[str, int] = {}

    def wrap(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            if id(x) in ids:
                return ids[id(x)]
            k = keys.get((x.data_ptr(), tuple(x.shape), tuple(x.stride())))
            if k is not None:
                uses[k] = uses.get(k, 0) + 1
                return _P(k)
            return _Val(f"?{len(ids)}")
        if isinstance(x, (list, tuple)):
            return [wrap(i) for i in x]
        return x

    def shape_of(x: Any) -> tuple[int, ...] | None:
        return (1, *(int(d) for d in x.shape[1:])) if isinstance(x, torch.Tensor) and x.ndim else None

    class _Rec(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, a: Any = (), kw: Any = None) -> Any:
            kw = kw or {}
            out = func(*a, **kw)
            name = func._overloadpacket.__name__
            wa = [wrap(x) for x in a]
            if (
                name in ("t", "transpose", "permute", "numpy_T")
                and wa
                and isinstance(wa[0], _P)
                and isinstance(out, torch.Tensor)
                and out.ndim == 2
            ):
                ids[id(out)] = _P(wa[0].key, transposed=True)
                alive.append(out)
                return out
            first = (
                out[0] if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) else out
            )
            if isinstance(first, torch.Tensor):
                vname = f"{name}_{len(nodes)}"
                nodes.append(
                    _Node(vname, name, wa, {k: wrap(v) for k, v in kw.items()}, vname, shape_of(first))
                )
                ids[id(first)] = _Val(vname)
                alive.append(first)
            return out

    for n, x in zip(names, [*args, *kwargs.values()], strict=False):
        if isinstance(x, torch.Tensor):
            ids[id(x)] = _Val(n)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _Rec():
            result = module(*args, **kwargs)
    outputs: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor) and id(x) in ids and isinstance(ids[id(x)], _Val):
            outputs.append(ids[id(x)].id)
        elif isinstance(x, (list, tuple)):
            for i in x:
                walk(i)
        elif isinstance(x, dict):
            for i in x.values():
                walk(i)

    walk(result)
    inputs = [
        n for n, x in zip(names, [*args, *kwargs.values()], strict=False) if isinstance(x, torch.Tensor)
    ]
    g = translate(nodes, inputs, outputs, tensors, uses, follow_views=False)
    for op in g.ops:  # a TorchScript archive cannot grow a bias the compiled code does not pass
        op.attrs["can_add_bias"] = False
    return g


def match_sites(graph: Graph, sites: list[Any]) -> dict[str, tuple[str, str] | str]:
    """Audit site -> (pre-activation, output) by execution order; kind and unit count must agree."""
    acts = [op for op in graph.ops if op.kind == "act" or op.attrs.get("site_kind")]
    out: dict[str, tuple[str, str] | str] = {}
    i = 0
    for v in sites:
        kind = {"hardtanh": "clip", "leaky_relu": "leaky"}.get(v.info.kind, v.info.kind)
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


def _submodule(root: Any, path: str) -> Any:
    """``get_submodule`` that also walks ScriptModules (which refuse it)."""
    mod = root
    for part in path.split(".") if path else []:
        mod = getattr(mod, part)
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


def export_again(gm: nn.Module, example: tuple[list[Any], dict[str, Any]]) -> Any:
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

    def __init__(self, tm: Any, output: Any, output_format: str | None) -> None:
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
        self._gm: Any = None
        self._inputs: list[str] = []
        self.output_format = self.surgeon.output_format
        self.checks = ("fresh load from disk", "calibration re-run", "parameter count")

    # -- runs --------------------------------------------------------------------------------
    def prepare(self, source: Any, samples: int | None) -> None:
        """Bind the first calibration batch: the example the graph is exported or traced with."""
        from ...data import cap_samples
        from .data import bind

        first = next(iter(cap_samples(source.batches(), samples)), None)
        if first is not None:
            self.surgeon.example = bind(first, self.tm.inputs, self.surgeon.device, self.surgeon.fdt)

    def outputs(self, model: Any, source: Any, samples: int | None) -> Any:
        return self.surgeon.outputs(model, source, samples, None)

    def original(self) -> Any:
        return self.surgeon.original()

    # -- graph -------------------------------------------------------------------------------
    def _example(self) -> tuple[list[Any], dict[str, Any]]:
        if self.surgeon.example is None:
            raise RuntimeError("no calibration batch was run before the graph was needed")
        return self.surgeon.example

    def _graph_module(self, model: Any) -> Any:
        if hasattr(model, "graph_signature"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return model.module()
        args, kwargs = self._example()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(model, tuple(args), kwargs or None).module()

    def range_names(self, ranges: list[Any]) -> list[str]:
        names = [s.name for s in self.tm.inputs]
        return [names[int(r.key)] if r.key.isdigit() and int(r.key) < len(names) else r.key for r in ranges]

    def sample_shapes(self, ranges: list[Any]) -> dict[str, tuple[int, ...]]:
        return {n: tuple(r.shape) for n, r in zip(self.range_names(ranges), ranges, strict=True)}

    def graph(self, model: Any, shapes: dict[str, tuple[int, ...]]) -> Graph:
        names = [s.name for s in self.tm.inputs]
        if self.tm.fmt == "torchscript":
            args, kwargs = self._example()
            return trace_graph(model, args, kwargs, names)
        g, inputs = gm_graph(self._graph_module(model))
        # placeholders take the user's input names (positional order)
        rename = dict(zip(inputs, names, strict=False))
        g.inputs = [rename.get(i, i) for i in g.inputs]
        for op in g.ops:
            op.inputs = [rename.get(i, i) for i in op.inputs]
        g.__post_init__()
        return g

    def site_values(self, model: Any, sites: list[Any]) -> dict[str, tuple[str, str] | str]:
        return match_sites(self.graph(model, {}), sites)

    def apply(self, model: Any, graph: Graph, edits: Edits) -> Any:
        if self.tm.fmt == "torchscript":
            import io

            assert self.surgeon._script is not None
            fresh = torch.jit.load(io.BytesIO(self.surgeon._script), map_location=self.surgeon.device)
            return apply_to_module(fresh, graph, edits, copied=True).eval()
        if hasattr(model, "graph_signature"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = apply_to_module(model.module(), graph, edits, copied=True)
            _literal_views(gm)  # type: ignore[arg-type]
            return export_again(gm, self._example())
        return apply_to_module(model, graph, edits).eval()

    # -- files -------------------------------------------------------------------------------
    def serialize(self, model: Any, notes: list[str]) -> bytes:
        return self.surgeon.serialize(model, notes)

    def reload(self, path: Any) -> Any:
        return self.surgeon.reload(path)

    def count_params(self, model: Any) -> int:
        if hasattr(model, "graph_signature"):
            sd = model.state_dict
            return int(
                sum(t.numel() for t in sd.values() if isinstance(t, torch.Tensor) and t.is_floating_point())
            )
        sd = model.state_dict()
        return int(
            sum(t.numel() for t in sd.values() if isinstance(t, torch.Tensor) and t.is_floating_point())
        )
