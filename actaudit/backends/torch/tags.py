"""How a torch op carries its input's unit tag (:mod:`actaudit.unitaxis`) to its output."""

from __future__ import annotations

from typing import Any

import torch

from ... import unitaxis as ua
from .ops import CARRIERS, RESHAPES, SAME_AXES, SPATIAL


def tensors_of(x: object) -> list[torch.Tensor]:
    """The tensors of an op's output or argument list (one level of tuples and lists)."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        out: list[torch.Tensor] = []
        for v in x:
            if isinstance(v, torch.Tensor):
                out.append(v)
            elif isinstance(v, (tuple, list)):
                out.extend(t for t in v if isinstance(t, torch.Tensor))
        return out
    return []


def _dim_arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, default: int | None = 0) -> Any:
    return kwargs.get("dim", args[i] if len(args) > i else default)


def follow(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    src: torch.Tensor,
    tag: ua.Tag | None,
    out: torch.Tensor,
) -> ua.Tag | None:
    """The unit tag of ``out`` = ``name(src, ...)``, by the backend-neutral rule."""
    if tag is None:
        return None
    if name in CARRIERS:
        return ua.elementwise(tag, src.ndim, out.ndim)
    if name in SPATIAL:
        return ua.spatial(tag, out.ndim)
    if name in SAME_AXES:
        return ua.same(tag, out.ndim) if out.ndim == src.ndim else None
    if name in RESHAPES:
        return ua.reshape(tag, tuple(src.shape), tuple(out.shape))
    try:
        if name in ("permute",):
            dims = args[1:] if len(args) > 2 else args[1] if len(args) > 1 else kwargs.get("dims", ())
            return ua.permute(tag, [int(d) for d in dims])
        if name in ("transpose", "transpose_", "swapaxes", "swapdims", "t", "movedim", "moveaxis"):
            n = src.ndim
            perm = list(range(n))
            if name == "t":
                perm = perm[::-1]
            elif name in ("movedim", "moveaxis"):
                a, b = int(args[1]) % n, int(args[2]) % n
                perm.remove(a)
                perm.insert(b, a)
            else:
                a, b = int(args[1]) % n, int(args[2]) % n
                perm[a], perm[b] = perm[b], perm[a]
            return ua.permute(tag, perm)
        if name in ("select", "unbind"):
            return ua.remove_axes(tag, [int(_dim_arg(args, kwargs, 1))], src.ndim)
        if name == "stack":
            return ua.insert_axes(tag, [int(_dim_arg(args, kwargs, 1))], out.ndim)
        if (
            name in ("sum", "mean", "amax", "amin", "max", "min", "prod", "std", "var")
            and out.ndim < src.ndim
        ):
            dims = _dim_arg(args, kwargs, 1, default=None)
            if dims is None:
                return None
            dims = [dims] if isinstance(dims, int) else list(dims)
            return ua.remove_axes(tag, [int(d) for d in dims], src.ndim)
        if (
            name in ("sum", "mean", "amax", "amin", "max", "min", "prod", "std", "var")
            and out.ndim == src.ndim
        ):
            dims = _dim_arg(args, kwargs, 1, default=None)
            dims = [] if dims is None else [dims] if isinstance(dims, int) else list(dims)
            return None if tag.axis in [int(d) % src.ndim for d in dims] else tag
        if name == "__getitem__":
            if tag.whole:
                return tag
            return getitem_tag(tag, src.ndim, args[1] if len(args) > 1 else None, out.ndim)
    except (TypeError, ValueError, IndexError):
        return None
    return None


def getitem_tag(tag: ua.Tag, rank: int, index: object, out_rank: int) -> ua.Tag | None:
    """``x[index]`` with ints, slices, None and Ellipsis; a tensor index loses the axis."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(isinstance(i, (torch.Tensor, list, bool)) for i in items):
        return None
    if items.count(Ellipsis) > 1:
        return None
    used = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (rank - used)
    items += [slice(None)] * (rank - sum(1 for i in items if i is not None))
    d = o = 0
    for i in items:
        if i is None:
            o += 1
            continue
        if d == tag.axis:
            return ua.Tag(o, tag.origin) if isinstance(i, slice) and 1 <= o < out_rank else None
        if isinstance(i, slice):
            o += 1
        d += 1
    return None
