"""aten calls (from an export graph or a traced TorchScript run) as :mod:`actaudit.edit.graph` ops.

Both graph forms of :mod:`.prune` first describe each call as a :class:`_Node` whose
arguments are computed values (:class:`_Val`), parameters by state-dict key (:class:`_P`)
or constants; :func:`translate` turns those into IR ops, one translator per op kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...edit.graph import Graph, Op, Param
from ...kinds import TORCH_OPS, classify_clamp, classify_hardtanh

# The kinds table's torch column (aten op → kind); a clamp's or hardtanh's kind follows its bounds.
_SITE_KINDS = {op: kind for op, kind in TORCH_OPS.items() if op != "_prelu_kernel"}
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


def _np(t: torch.Tensor) -> np.ndarray:
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


def _ints(v: Any, nd: int) -> list[int]:
    if isinstance(v, int):
        return [v] * nd
    v = [int(i) for i in v]
    return v * nd if len(v) == 1 and nd > 1 else v


class _Ctx:
    """What every op translator reads: the tensors by key, their reader counts, the ops so far."""

    def __init__(self, tensors: dict[str, torch.Tensor], uses: dict[str, int], follow_views: bool) -> None:
        self.tensors, self.uses, self.follow_views = tensors, uses, follow_views
        self.ops: list[Op] = []

    def prm(self, x: object) -> Param | None:
        if isinstance(x, _P) and x.key in self.tensors and isinstance(self.tensors[x.key], torch.Tensor):
            return Param(x.key, _np(self.tensors[x.key]), shared=self.uses.get(x.key, 0) > 1)
        return None


def _vid(x: object) -> str | None:
    return x.id if isinstance(x, _Val) else None


def _params(w: Param, b: Param | None) -> dict[str, Param]:
    return {"weight": w} | ({"bias": b} if b is not None else {})


def _weighted(c: _Ctx, n: _Node) -> tuple[str, Param, Param | None] | None:
    """(input, weight, bias) of a conv or linear call whose weight (and bias, if any) are parameters."""
    a, kw = n.args, n.kwargs
    x, w, b = _vid(a[0]) if a else None, c.prm(_arg(a, kw, 1, "weight", None)), _arg(a, kw, 2, "bias", None)
    bp = c.prm(b)
    if x is None or w is None or (b is not None and bp is None):
        return None
    return x, w, bp


def _conv(c: _Ctx, n: _Node) -> Op | None:
    got = _weighted(c, n)
    if got is None:
        return None
    x, w, bp = got
    a, kw, op = n.args, n.kwargs, n.op
    nd = w.value.ndim - 2
    if op in ("convolution", "_convolution"):
        if a[6]:
            return None  # transposed
        stride, padding, dilation, groups = a[3], a[4], a[5], a[8]
    else:
        stride = _arg(a, kw, 3, "stride", [1] * nd)
        padding = _arg(a, kw, 4, "padding", [0] * nd)
        dilation = _arg(a, kw, 5, "dilation", [1] * nd)
        groups = _arg(a, kw, 6, "groups", 1)
    if isinstance(padding, str):
        if padding != "valid":
            return None
        padding = [0] * nd
    stride, padding, dilation = (_ints(v, nd) for v in (stride, padding, dilation))
    attrs: dict[str, Any] = {
        "op": op,
        "strides": stride,
        "pads": padding + padding,
        "dilations": dilation,
        "groups": int(groups),
        "can_add_bias": True,
    }
    return Op(n.name, "conv", [x], [n.out], attrs, _params(w, bp))


def _linear(c: _Ctx, n: _Node) -> Op | None:
    got = _weighted(c, n)
    if got is None:
        return None
    x, w, bp = got
    attrs = {"op": n.op, "layout": "oi", "can_add_bias": True}
    return Op(n.name, "linear", [x], [n.out], attrs, _params(w, bp))


def _mm(c: _Ctx, n: _Node) -> Op | None:
    a, kw, op = n.args, n.kwargs, n.op
    if len(a) < (3 if op == "addmm" else 2):
        return None
    b, xx, wv = (a[0], a[1], a[2]) if op == "addmm" else (None, a[0], a[1])
    w, bp, x = c.prm(wv), c.prm(b), _vid(xx)
    if x is None or w is None or w.value.ndim != 2 or (b is not None and bp is None):
        return None
    if kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1:
        return None
    attrs = {"op": op, "layout": "oi" if wv.transposed else "io", "can_add_bias": False}
    return Op(n.name, "linear", [x], [n.out], attrs, _params(w, bp))


def _bn(c: _Ctx, n: _Node) -> Op | None:
    a, op = n.args, n.op
    x = _vid(a[0]) if a else None
    ps = [c.prm(v) for v in a[1:5]]
    training = a[5] if op in ("batch_norm", "native_batch_norm") else False
    eps = a[7] if op in ("batch_norm", "native_batch_norm") else a[6]
    if x is None or any(p is None for p in ps) or training:
        return None
    params = {k: p for k, p in zip(("scale", "bias", "mean", "var"), ps, strict=True) if p is not None}
    return Op(n.name, "bn", [x], [n.out], {"op": op, "eps": float(eps)}, params)


def _act(c: _Ctx, n: _Node) -> Op | None:
    a, kw, op = n.args, n.kwargs, n.op
    kind = _SITE_KINDS[op]
    attrs: dict[str, Any] = {"op": op, "act": kind, "site_kind": kind}
    if kind == "relu6":
        attrs.update(act="clip", lo=0.0, hi=6.0)
    elif kind in ("clip", "hardtanh"):
        ht = kind == "hardtanh"
        lo = _arg(a, kw, 1, "min_val" if ht else "min", -1.0 if ht else None)
        hi = _arg(a, kw, 2, "max_val" if ht else "max", 1.0 if ht else None)
        if isinstance(lo, (_Val, _P)) or isinstance(hi, (_Val, _P)):
            return None
        attrs["lo"] = -math.inf if lo is None else float(lo)
        attrs["hi"] = math.inf if hi is None else float(hi)
        site = classify_hardtanh(attrs["lo"], attrs["hi"]) if ht else classify_clamp(lo, hi)
        attrs.update(act="clip", site_kind=site.kind if site is not None else "")
    elif kind == "leaky_relu":
        attrs["alpha"] = float(_arg(a, kw, 1, "negative_slope", 0.01))
    elif kind == "hardsigmoid":
        attrs.update(alpha=1.0 / 6.0, beta=0.5)
    elif kind == "elu":
        attrs["alpha"] = float(_arg(a, kw, 1, "alpha", 1.0))
        attrs["scale"] = float(_arg(a, kw, 2, "scale", 1.0))
        attrs["input_scale"] = float(_arg(a, kw, 3, "input_scale", 1.0))
    elif kind == "selu":  # scale * elu(x, alpha)
        attrs.update(act="elu", alpha=1.6732632423543772, scale=1.0507009873554805)
    elif kind == "celu":  # elu(x / alpha) * alpha
        alpha = float(_arg(a, kw, 1, "alpha", 1.0))
        if alpha <= 0:
            return None
        attrs.update(act="elu", alpha=alpha, input_scale=1.0 / alpha)
    elif kind == "softplus":
        attrs["beta"] = float(_arg(a, kw, 1, "beta", 1.0))
    x = _vid(a[0]) if a else None
    return None if x is None else Op(n.name, "act", [x], [n.out], attrs)


def _binary(c: _Ctx, n: _Node) -> Op | None:
    """``add``/``mul`` of two computed values; ``add``/``sub``/``mul``/``div`` by a parameter (a scale)."""
    a, kw, op = n.args, n.kwargs, n.op
    if len(a) < 2:
        return None
    x, y = _vid(a[0]), _vid(a[1])
    alpha_one = _arg(a, kw, 2, "alpha", 1) == 1
    if x and y and op in ("add", "add_", "mul", "mul_") and (alpha_one or op.startswith("mul")):
        return Op(n.name, op.rstrip("_"), [x, y], [n.out], {"op": op})
    p = c.prm(a[1])
    if p is None and isinstance(a[1], (int, float)) and not isinstance(a[1], bool):
        # a Python number (x * 0.5, 1 - x): a constant no edit ever touches (size 1)
        p = Param(f"<{n.name} constant>", np.asarray(a[1], dtype=np.float64))
    if op == "rsub" and p is not None and x is not None and alpha_one:
        return Op(n.name, "scale", [x], [n.out], {"op": op, "form": "rsub"}, {"c": p})
    if op not in ("add", "sub", "mul", "div") or x is None or p is None:
        return None
    if op in ("add", "sub") and not alpha_one:
        return None
    return Op(n.name, "scale", [x], [n.out], {"op": op, "form": op}, {"c": p})


def _cat(c: _Ctx, n: _Node) -> Op | None:
    a, kw = n.args, n.kwargs
    ids = [_vid(t) for t in (a[0] if a else kw.get("tensors", []))]
    if any(i is None for i in ids):
        return None
    return Op(
        n.name, "concat", [i for i in ids if i], [n.out], {"op": n.op, "axis": int(_arg(a, kw, 1, "dim", 0))}
    )


def _flatten(c: _Ctx, n: _Node) -> Op | None:
    a, kw = n.args, n.kwargs
    x = _vid(a[0]) if a else None
    if x is None:
        return None
    start, end = int(_arg(a, kw, 1, "start_dim", 0)), int(_arg(a, kw, 2, "end_dim", -1))
    if start == 1 and end == -1:
        return Op(n.name, "flatten", [x], [n.out], {"op": n.op, "axis": 1})
    return Op(n.name, "reshape", [x], [n.out], {"op": n.op, "pure_reshape": True})


def _view(c: _Ctx, n: _Node) -> Op | None:
    a, kw = n.args, n.kwargs
    x = _vid(a[0]) if a else None
    if x is None:
        return None
    shape = a[1] if len(a) > 1 else kw.get("shape", kw.get("size"))
    flat = isinstance(shape, (list, tuple)) and len(shape) == 2 and c.follow_views
    literal = flat and shape is not None and not isinstance(shape[1], _Val) and shape[1] != -1
    attrs = {"op": n.op, "axis": 1, "pure_reshape": True, "literal": bool(literal)}
    return Op(n.name, "flatten" if flat else "reshape", [x], [n.out], attrs)


def _squeeze(c: _Ctx, n: _Node) -> Op | None:
    x = _vid(n.args[0]) if n.args else None
    return None if x is None else Op(n.name, "reshape", [x], [n.out], {"op": n.op, "pure_reshape": True})


def _pool(c: _Ctx, n: _Node) -> Op | None:
    a, kw, op = n.args, n.kwargs, n.op
    x = _vid(a[0]) if a else None
    if x is None:
        return None
    nd = 1 if "1d" in op else 2
    k = _ints(_arg(a, kw, 1, "kernel_size", []), nd)
    if len(k) != nd:
        return None
    stride = _ints(_arg(a, kw, 2, "stride", k) or k, nd)
    pad = _ints(_arg(a, kw, 3, "padding", 0), nd)
    attrs: dict[str, Any] = {"op": op, "kernel": k, "strides": stride, "pads": pad + pad}
    if op.startswith("max"):
        attrs["dilations"] = _ints(_arg(a, kw, 4, "dilation", 1), nd)
        attrs["ceil_mode"] = bool(_arg(a, kw, 5, "ceil_mode", False))
        return Op(n.name, "maxpool", [x], [n.out], attrs)
    if _arg(a, kw, 6, "divisor_override", None) is not None:
        return None
    attrs["ceil_mode"] = bool(_arg(a, kw, 4, "ceil_mode", False))
    attrs["count_include_pad"] = bool(_arg(a, kw, 5, "count_include_pad", True))
    return Op(n.name, "avgpool", [x], [n.out], attrs)


def _adaptive(c: _Ctx, n: _Node) -> Op | None:
    x = _vid(n.args[0]) if n.args else None
    if x is None or not all(int(s) == 1 for s in n.args[1]):
        return None
    return Op(n.name, "gap", [x], [n.out], {"op": n.op, "keepdims": True})


_HOW = {"mean": "mean", "sum": "sum", "amax": "max", "amin": "min"}


def _mean(c: _Ctx, n: _Node) -> Op | None:
    """A mean over every axis after the channels (a global average pool); other axes: ``reduce``.

    ``sum``, ``amax`` and ``amin`` over axes without the batch's are ``reduce`` too.
    """
    a, kw = n.args, n.kwargs
    x = _vid(a[0]) if a else None
    dims_arg = _arg(a, kw, 1, "dim", None)
    if x is None or n.shape is None or dims_arg is None or _arg(a, kw, 3, "dtype", None) is not None:
        return None
    dims_in = [dims_arg] if isinstance(dims_arg, int) else list(dims_arg)
    if not dims_in or not all(isinstance(d, int) for d in dims_in):
        return None
    keep = bool(_arg(a, kw, 2, "keepdim", False))
    rank = len(n.shape) if keep else len(n.shape) + len(dims_in)
    dims = sorted({int(d) % rank for d in dims_in})
    if dims[0] == 0:
        return None
    if n.op == "mean" and dims == list(range(2, rank)):
        return Op(n.name, "gap", [x], [n.out], {"op": n.op, "keepdims": keep})
    attrs = {"op": n.op, "how": _HOW[n.op], "axes": dims, "keepdims": keep}
    return Op(n.name, "reduce", [x], [n.out], attrs)


def _identity(c: _Ctx, n: _Node) -> Op | None:
    a = n.args
    x = _vid(a[0]) if a else None
    if x is None:
        return None
    # getitem 0 of a batch norm's (output, mean, var) or a max pool's (values, indices) is its output
    src = next((op for op in reversed(c.ops) if op.outputs == [x]), None) if n.op == "getitem" else None
    first = src is not None and a[1] == 0 and src.kind in ("bn", "maxpool")
    if n.op in _IDENTITY or first:
        return Op(n.name, "identity", [x], [n.out], {"op": n.op})
    return None


_Translator = Callable[[_Ctx, _Node], Op | None]
_TRANSLATORS: dict[str, _Translator] = {
    **dict.fromkeys(("conv2d", "conv1d", "convolution", "_convolution"), _conv),
    **dict.fromkeys(("addmm", "mm"), _mm),
    "linear": _linear,
    **dict.fromkeys(("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"), _bn),
    **dict.fromkeys(_SITE_KINDS, _act),
    **dict.fromkeys(("add", "add_", "mul", "mul_", "sub", "div", "rsub"), _binary),
    "cat": _cat,
    "flatten": _flatten,
    **dict.fromkeys(("view", "reshape", "_unsafe_view"), _view),
    **dict.fromkeys(("squeeze", "unsqueeze"), _squeeze),
    **dict.fromkeys(
        (
            "max_pool2d",
            "max_pool1d",
            "max_pool2d_with_indices",
            "max_pool1d_with_indices",
            "avg_pool2d",
            "avg_pool1d",
        ),
        _pool,
    ),
    **dict.fromkeys(("adaptive_avg_pool2d", "adaptive_avg_pool1d"), _adaptive),
    **dict.fromkeys(_HOW, _mean),
    **dict.fromkeys((*_IDENTITY, "getitem"), _identity),
}


def translate(
    nodes: list[_Node],
    inputs: list[str],
    outputs: list[str],
    tensors: dict[str, torch.Tensor],
    uses: dict[str, int],
    follow_views: bool = True,
) -> Graph:
    """IR ops from aten calls; ``tensors`` maps keys to tensors, ``uses`` counts each key's readers.

    One translator per op kind (:data:`_TRANSLATORS`); a call none of them can express
    becomes an ``other`` op, which blocks what depends on seeing through it.
    """
    c = _Ctx(tensors, uses, follow_views)
    shapes: dict[str, tuple[int, ...]] = {}
    for n in nodes:
        if n.shape is not None:
            shapes[n.out] = n.shape
        fn = _TRANSLATORS.get(n.op)
        op = fn(c, n) if fn is not None else None
        if op is None:
            vals = [_vid(x) for x in [*n.args, *n.kwargs.values()]]
            op = Op(n.name, "other", [v for v in vals if v], [n.out], {"op": n.op})
        c.ops.append(op)
    return Graph(c.ops, inputs, outputs, shapes)
