"""ReLU/ReLU6 → per-unit PReLU (the default), LeakyReLU or PReLU surgery on PyTorch models.

The default form is a slope per unit (0 for units that keep plain ReLU), ReLU6's cap
kept, and the exact shift ``slope·E[min(z, 0)]`` subtracted right after (computed by
:meth:`SitePlan.shift_for`): a :class:`UnitPReLU` module in eager models, ``aten::prelu``
and ``aten::sub`` with tensor constants in TorchScript, ``aten.prelu`` with a new
parameter and ``aten.sub`` of a new buffer in ``torch.export`` programs. The classic
one-α forms below remain for ``--to leaky`` / ``--shift fold|none``.

Sites are named exactly as the audit names them (``b.relu#1``, ``enc/relu``), so a
slope chosen from a report lands on the call it was measured at:

* eager modules: a ReLU module called once is swapped; a module reused at several
  sites with different slopes, and functional ``F.relu``/``torch.relu``/``x.relu()``
  calls, need the calling module's ``forward`` as a graph: that one module (not the
  whole model) is traced with ``torch.fx`` (its children stay leaves) and replaced by
  the traced ``GraphModule``. A module that cannot be traced keeps its functional
  calls, which are listed with the reason;
* TorchScript: the top-level ``forward`` graph is inlined and each ``aten::relu`` /
  ``aten::relu_`` node becomes ``aten::leaky_relu`` / ``aten::leaky_relu_`` with its
  own slope constant (no freezing: parameters stay parameters and stay trainable);
* ``torch.export``: ``aten.relu`` nodes of the program's graph get the
  ``aten.leaky_relu`` target and a slope argument; PReLU slopes become new
  parameters of the program.

Compensation folds ``α·E[min(z, 0)]`` per unit into the bias of the next Conv/Linear
op so that the mean of its output is preserved. It is exact for a linear consumer
without padding; at zero-padded borders a convolution sees padded zeros, not shifted
activations, so the fold over-corrects there.
"""

from __future__ import annotations

import copy
import io
import math
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ...rewrite.plan import SitePlan, SurgeryResult, assign_names, bias_shift, float32_up, unit_shape
from .capture import GraphSite, canon, export_site_nodes, torchscript_site_nodes
from .ops import op_name

LEAKY = "leaky"
PRELU = "prelu"
TARGETS = (LEAKY, PRELU)


def _fold_into(
    weight: torch.Tensor, bias: torch.Tensor, kind: str, shift: np.ndarray, groups: int, repeat: int
) -> None:
    delta = bias_shift(kind, weight.detach().cpu().numpy(), shift, groups=groups, repeat=repeat)
    with torch.no_grad():
        bias.sub_(torch.as_tensor(delta, dtype=bias.dtype, device=bias.device))


# -- eager modules -----------------------------------------------------------------
class AxisPReLU(nn.Module):
    """PReLU with one learnable slope per unit along any axis (``nn.PReLU`` uses axis 1 only)."""

    def __init__(self, units: int, axis: int, init: float | torch.Tensor = 0.25) -> None:
        super().__init__()
        self.axis = int(axis)
        w = (
            torch.full((units,), float(init))
            if not isinstance(init, torch.Tensor)
            else init.detach().clone().float()
        )
        self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return torch.where(x >= 0, x, x * self.weight.view(shape))

    def extra_repr(self) -> str:
        return f"units={self.weight.numel()}, axis={self.axis}"


class UnitPReLU(nn.Module):
    """ReLU/ReLU6 with a learnable slope per unit below zero, then a constant per unit subtracted.

    ``y = prelu(x, weight)`` (capped at ``cap`` for ReLU6), minus ``shift`` (a buffer shaped to
    broadcast on the unit axis): the exact mean correction ``slope·E[min(z, 0)]``. Units
    with slope 0 behave as the original ReLU. Scriptable and exportable; the slope is
    ``aten::prelu``'s weight, so any runtime reads it back.
    """

    def __init__(self, slopes: Any, shift: Any, axis: int, rank: int, cap: float | None = None) -> None:
        super().__init__()
        w = torch.as_tensor(np.asarray(slopes), dtype=torch.float32).reshape(-1)
        self.weight = nn.Parameter(w.clone())
        units = int(w.numel())
        ax = axis if axis >= 0 else rank + axis
        self.axis = int(ax) if units > 1 else 1
        shape = unit_shape(units, self.axis, rank) if units > 1 else [1]
        self.shift: torch.Tensor
        self.register_buffer("shift", torch.as_tensor(np.asarray(shift), dtype=torch.float32).reshape(shape))
        self.capped = cap is not None
        self.cap = float(cap) if cap is not None else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moved = self.axis != 1 and x.dim() > 1
        if moved:
            x = x.movedim(self.axis, 1)
        y = torch.prelu(x, self.weight)
        if self.capped:
            y = torch.clamp_max(y, self.cap)
        if moved:
            y = y.movedim(1, self.axis)
        return y - self.shift

    def extra_repr(self) -> str:
        return f"units={self.weight.numel()}, axis={self.axis}, cap={self.cap if self.capped else None}"


class ShiftedLeakyReLU(nn.Module):
    """LeakyReLU(α) (capped for ReLU6) minus a constant per unit: one α per site, the mean kept."""

    def __init__(self, alpha: float, shift: Any, axis: int, rank: int, cap: float | None = None) -> None:
        super().__init__()
        self.negative_slope = float(alpha)
        sh = np.asarray(shift).reshape(-1)
        shape = unit_shape(sh.size, axis, rank) if sh.size > 1 else [1]
        self.shift: torch.Tensor
        self.register_buffer("shift", torch.as_tensor(sh, dtype=torch.float32).reshape(shape))
        self.capped = cap is not None
        self.cap = float(cap) if cap is not None else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(x, self.negative_slope)
        if self.capped:
            y = torch.clamp_max(y, self.cap)
        return y - self.shift


def _plan_rank(p: SitePlan) -> int:
    return len(p.sample_shape) + 1 if p.sample_shape else 2


def _activation_for(p: SitePlan, to: str, alpha: float, inplace: bool) -> nn.Module:
    """The module that replaces site ``p``: the per-unit / shifted / capped forms, else the classic ones."""
    if p.per_unit() or p.exact_shift or p.cap is not None:
        if to == LEAKY:
            return ShiftedLeakyReLU(alpha, p.shift_for(np.array([alpha])), p.unit_axis, _plan_rank(p), p.cap)
        slopes = float32_up(p.slopes() if p.unit_slopes is not None else p.slopes(alpha))
        return UnitPReLU(slopes, p.shift_for(slopes), p.unit_axis, _plan_rank(p), p.cap)
    return make_activation(
        to, alpha, units=p.units, unit_axis=p.unit_axis, inplace=inplace, init=p.slopes(alpha)
    )


def _is_relu_module(mod: Any) -> bool:
    """nn.ReLU, or a ReLU6 / Hardtanh(0, 6) (rewritten with its cap kept)."""
    if isinstance(mod, nn.ReLU):
        return True
    return isinstance(mod, nn.Hardtanh) and float(mod.min_val) == 0.0 and float(mod.max_val) == 6.0


def make_activation(
    to: str,
    alpha: float,
    *,
    units: int = 1,
    unit_axis: int = 1,
    inplace: bool = False,
    init: np.ndarray | None = None,
) -> nn.Module:
    """LeakyReLU(α), or a PReLU with one slope per unit (``init`` per unit, else α everywhere)."""
    if to == LEAKY:
        return nn.LeakyReLU(float(alpha), inplace=inplace)
    if to == PRELU:
        if init is not None and units > 1:
            w = torch.as_tensor(np.asarray(init), dtype=torch.float32)
            if unit_axis == 1:
                mod = nn.PReLU(num_parameters=units)
                with torch.no_grad():
                    mod.weight.copy_(w)
                return mod
            return AxisPReLU(units, unit_axis, w)
        if unit_axis == 1 or units == 1:
            return nn.PReLU(num_parameters=units, init=float(alpha))
        return AxisPReLU(units, unit_axis, float(alpha))
    raise ValueError(f"unknown target activation {to!r}; use one of {TARGETS}")


_RELU_FUNCS: set[Any] = {F.relu, torch.relu, torch.relu_, F.relu_}
_RELU_METHODS = {"relu", "relu_"}
_TRANSPARENT_MODULES = (nn.Dropout, nn.Identity, nn.Flatten)


class _LeafTracer(fx.Tracer):
    """Traces one module's own ``forward``: every child stays a call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _is_functional_relu(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _RELU_FUNCS:
        return True
    return node.op == "call_method" and node.target in _RELU_METHODS


def _trace(owner: nn.Module) -> tuple[fx.GraphModule | None, str | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = _LeafTracer().trace(owner)
    except Exception as e:
        text = " ".join(str(e).split())
        return (
            None,
            f"torch.fx cannot trace {type(owner).__name__}.forward ({type(e).__name__}: {text[:160]})",
        )
    for node in graph.nodes:
        if isinstance(node.type, str):
            node.type = None  # a PEP 563 string annotation: fx cannot pickle it as a global
    gm = fx.GraphModule(owner, graph, class_name=type(owner).__name__)
    # Keep what the traced forward does not touch, so the state_dict keys stay the same.
    for name, child in owner.named_children():
        if not hasattr(gm, name):
            gm.add_submodule(name, child)
    for name, p in owner.named_parameters(recurse=False):
        if not hasattr(gm, name):
            gm.register_parameter(name, p)
    for name, b in owner.named_buffers(recurse=False):
        if not hasattr(gm, name):
            gm.register_buffer(name, b)
    gm.train(owner.training)
    return gm, None


def _ints(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _any(x: Any) -> Any:
    return x


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> nn.Module:
    if not path:
        return new
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)
    return root


def _unique(gm: nn.Module, stem: str) -> str:
    name, i = stem, 1
    while hasattr(gm, name):
        name, i = f"{stem}_{i}", i + 1
    return name


@dataclass
class _EagerSite:
    plan: SitePlan
    owner: str  # path of the module whose forward makes the call
    child: str | None  # the ReLU child the name points at, if any (a root-level name may also be functional)


def _locate(model: nn.Module, plan: SitePlan) -> _EagerSite | str:
    base = plan.base
    if "/" in base:
        owner, _, op = base.rpartition("/")
        if op != "relu":
            return f"a functional {op} call that computes ReLU is not rewritten (only relu/relu_ calls are)"
        try:
            model.get_submodule(owner)
        except AttributeError:
            return f"no module {owner!r} in the model"
        return _EagerSite(plan, owner, None)
    owner, _, child = base.rpartition(".")
    try:
        mod = model.get_submodule(base)
    except AttributeError:
        if not owner and base == "relu":
            return _EagerSite(plan, "", None)  # a functional relu at the top level
        return f"no module {base!r} in the model"
    if not _is_relu_module(mod):
        return f"{base} is a {type(mod).__name__}, not nn.ReLU / nn.ReLU6"
    return _EagerSite(plan, owner, child)


def rewrite_eager(
    model: nn.Module,
    plans: Iterable[SitePlan],
    to: str = LEAKY,
    *,
    compensate: bool = False,
    copy_model: bool = True,
) -> SurgeryResult:
    """Replace the ReLU calls named in ``plans``; the input model is deep-copied unless told not to."""
    if to not in TARGETS:
        raise ValueError(f"unknown target activation {to!r}; use one of {TARGETS}")
    root = copy.deepcopy(model) if copy_model else model
    res = SurgeryResult(root)
    by_owner: dict[str, list[_EagerSite]] = defaultdict(list)
    for p in plans:
        loc = _locate(root, p)
        if isinstance(loc, str):
            res.skipped[p.name] = loc
        else:
            by_owner[loc.owner].append(loc)
    # Deepest owners first, so that a GraphModule replacing an owner is built from
    # children that are already rewritten.
    for owner_path in sorted(by_owner, key=lambda s: -(s.count(".") + bool(s))):
        root = _rewrite_owner(root, owner_path, by_owner[owner_path], to, compensate, res)
    if compensate:
        pending = [
            s.plan
            for ss in by_owner.values()
            for s in ss
            if s.plan.name in res.rewritten and s.plan.name not in res.compensated
        ]
        if pending:
            _fold_global(model, root, pending, res)
    res.model = root
    return res


def _rewrite_owner(
    root: nn.Module, owner_path: str, sites: list[_EagerSite], to: str, compensate: bool, res: SurgeryResult
) -> nn.Module:
    owner = root.get_submodule(owner_path) if owner_path else root
    where = owner_path or type(owner).__name__
    # A name without "#k" is a module called once: swap it. Anything else (a module
    # called at several sites, a functional call) needs the owner's forward as a graph.
    simple = all(s.child is not None and s.plan.index is None for s in sites) and not (
        not owner_path and any(s.child == "relu" for s in sites)
    )
    gm, why = (None, None) if simple and not compensate else _trace(owner)
    if simple or gm is None:
        for s in sites:
            p = s.plan
            if s.child is None:
                res.skipped[p.name] = f"functional relu in {where} not rewritten: {why}"
                continue
            calls = [x for x in sites if x.child == s.child]
            alpha = min(x.plan.alpha for x in calls)
            setattr(owner, s.child, _activation_for(p, to, alpha, _inplace(owner, s.child)))
            res.rewritten[p.name] = "module swap"
            if p.index is not None:
                res.notes.append(
                    f"{_join(owner_path, s.child)} is one module called at several sites, but {why}: it was swapped "
                    f"as a whole (α={alpha:g} at every call, including calls not selected)"
                )
        if compensate and gm is not None:
            _fold_eager(owner, gm, _site_nodes(gm, owner_path, sites), sites, res, owner_path)
        elif compensate:
            for s in sites:
                res.not_compensated[s.plan.name] = f"cannot find the next op: {why}"
        return root
    nodes = _site_nodes(gm, owner_path, sites)
    module_calls: dict[str, int] = defaultdict(int)
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module_calls[str(node.target)] += 1
    split: set[str] = set()
    edited = False
    groups: dict[fx.Node, list[_EagerSite]] = defaultdict(list)
    for s in sites:
        node = nodes.get(s.plan.name)
        if node is None:
            res.skipped[s.plan.name] = f"the traced {where}.forward has no such call"
        else:
            groups[node].append(s)
    for node, group in groups.items():
        p = group[0].plan
        alpha = min(x.plan.alpha for x in group)
        if len(group) > 1:
            names = ", ".join(x.plan.name for x in group)
            res.notes.append(
                f"{where} runs more than once per forward, so one relu call serves several sites ({names}): "
                f"it gets the smallest of their slopes, α={alpha:g}"
            )
        is_module = node.op == "call_module"
        child = str(node.target) if is_module else None
        if child is not None and module_calls[child] == 1:
            act = _activation_for(p, to, alpha, _inplace(owner, child))
            setattr(gm, child, act)
            setattr(owner, child, act)
            for x in group:
                res.rewritten[x.plan.name] = "module swap"
            continue
        if child is not None:
            split.add(child)
            stem, inplace = f"{child}_{p.index or 0}", _inplace(owner, child)
        else:
            stem = "relu_site" if p.index is None else f"relu_site{p.index}"
            inplace = bool(node.kwargs.get("inplace", False)) or node.target in (
                "relu_",
                torch.relu_,
                F.relu_,
            )
        new_name = _unique(gm, stem)
        edited = True
        gm.add_submodule(new_name, _activation_for(p, to, alpha, inplace))
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(new_name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        for x in group:
            nodes[x.plan.name] = new
            res.rewritten[x.plan.name] = (
                f"{'split' if child else 'functional'} → {_join(owner_path, new_name)}"
            )
    for child in sorted(split):
        res.notes.append(
            f"{_join(owner_path, child)} is one module called at {module_calls[child]} sites: each rewritten call got "
            "its own module so that each site has its own slope"
        )
    if edited:
        res.notes.append(
            f"{where} was traced with torch.fx and replaced by a GraphModule (its children are unchanged)"
        )
    gm.graph.lint()
    gm.recompile()
    if compensate:
        _fold_eager(gm, gm, nodes, sites, res, owner_path)
    if not edited:
        return root  # only swaps: keep the original module, now with its children swapped
    return _set_submodule(root, owner_path, gm)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _inplace(owner: nn.Module, child: str | None) -> bool:
    if child is None:
        return False
    return bool(getattr(getattr(owner, child, None), "inplace", False))


def _site_nodes(gm: fx.GraphModule, owner_path: str, sites: list[_EagerSite]) -> dict[str, fx.Node]:
    """Audit site name → traced node, counting calls per audit base name in graph order."""
    per_base: dict[str, list[fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        if node.op == "call_module" and _is_relu_module(gm.get_submodule(str(node.target))):
            per_base[_join(owner_path, str(node.target))].append(node)
        elif _is_functional_relu(node):
            per_base[f"{owner_path}/relu" if owner_path else "relu"].append(node)
    out: dict[str, fx.Node] = {}
    for s in sites:
        calls = per_base.get(s.plan.base, [])
        k = s.plan.index
        if k is None and len(calls) == 1:
            out[s.plan.name] = calls[0]
        elif k is not None and calls:
            # More audit calls than traced nodes: the owner itself runs several times per
            # forward, and call k is node k mod n.
            out[s.plan.name] = calls[k % len(calls)]
    return out


def _fold_eager(
    owner: nn.Module,
    gm: fx.GraphModule,
    nodes: dict[str, fx.Node],
    sites: list[_EagerSite],
    res: SurgeryResult,
    prefix: str = "",
) -> None:
    for s in sites:
        p = s.plan
        node = nodes.get(p.name)
        if node is None or p.neg_mean is None:
            res.not_compensated.setdefault(p.name, "site not found in the traced graph")
            continue
        found = _eager_consumer(gm, node, p)
        if isinstance(found, str):
            res.not_compensated[p.name] = found
            continue
        target, kind, groups, repeat = found
        _fold_module(
            owner.get_submodule(target) if target else owner,
            _join(prefix, target),
            kind,
            groups,
            repeat,
            p,
            res,
        )


def _fold_module(
    mod: nn.Module, where: str, kind: str, groups: int, repeat: int, p: SitePlan, res: SurgeryResult
) -> None:
    assert p.neg_mean is not None
    shift = p.shift()
    weight = mod.weight
    assert isinstance(weight, torch.Tensor)
    if getattr(mod, "bias", None) is None:
        mod.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
    bias = mod.bias
    assert isinstance(bias, torch.Tensor)
    _fold_into(weight, bias, kind, shift, groups, repeat)
    pad = getattr(mod, "padding", 0)
    padded = kind == "conv" and (
        pad == "same" or (not isinstance(pad, str) and any(int(x) for x in np.atleast_1d(pad)))
    )
    res.compensated[p.name] = f"{where} bias" + (" (approximate at zero-padded borders)" if padded else "")
    res.not_compensated.pop(p.name, None)


def _fold_global(original: nn.Module, root: nn.Module, plans: list[SitePlan], res: SurgeryResult) -> None:
    """Fold across module boundaries: trace the whole original model (nn modules stay leaves)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = fx.symbolic_trace(original)
    except Exception:
        return  # the per-module reasons stand
    per_base: dict[str, list[fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), nn.ReLU):
            per_base[str(node.target)].append(node)
        elif _is_functional_relu(node):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            path = str(stack[-1][0]) if stack else ""
            per_base[f"{path}/relu" if path else "relu"].append(node)
    for p in plans:
        calls = per_base.get(p.base, [])
        k = p.index
        node = (
            calls[0]
            if k is None and len(calls) == 1
            else (calls[k] if k is not None and k < len(calls) else None)
        )
        if node is None or p.neg_mean is None:
            continue
        found = _eager_consumer(gm, node, p)
        if isinstance(found, str):
            res.not_compensated[p.name] = found
            continue
        target, kind, groups, repeat = found
        try:
            mod = root.get_submodule(target)
        except AttributeError:
            continue
        _fold_module(mod, target, kind, groups, repeat, p, res)


def _eager_consumer(gm: fx.GraphModule, node: fx.Node, p: SitePlan) -> tuple[str, str, int, int] | str:
    repeat, flat = 1, False
    spatial = math.prod(p.sample_shape[1:]) if p.sample_shape else 1
    cur = node
    for _ in range(8):
        users = list(cur.users)
        if len(users) != 1:
            return f"its output feeds {len(users)} ops; the fold needs exactly one linear consumer"
        u = users[0]
        if u.op == "call_module":
            mod = gm.get_submodule(str(u.target))
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                if p.unit_axis != 1 or repeat != 1:
                    return "the next Conv does not take this site's units as input channels"
                return str(u.target), "conv", int(mod.groups), 1
            if isinstance(mod, nn.Linear):
                if not flat and p.unit_axis != len(p.sample_shape):
                    return "the next Linear does not take this site's units as input features"
                return str(u.target), "linear", 1, repeat
            if isinstance(mod, nn.Flatten):
                if mod.start_dim != 1 or p.unit_axis != 1 or mod.end_dim != -1:
                    return "a Flatten other than flatten(1) sits before the next Linear"
                repeat, flat = spatial, True
            elif (
                isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d))
                and p.unit_axis == 1
            ):
                if any(int(o) != 1 for o in _ints(mod.output_size) if o is not None):
                    return "an adaptive pool to more than one position sits before the next op"
                spatial = 1  # the mean of a per-channel constant is that constant
            elif not isinstance(mod, _TRANSPARENT_MODULES):
                return f"the next op is {type(mod).__name__}, not a Conv or Linear"
        elif (u.op == "call_function" and u.target in (torch.flatten,)) or (
            u.op == "call_method" and u.target == "flatten"
        ):
            start = u.args[1] if len(u.args) > 1 else u.kwargs.get("start_dim", 0)
            if start != 1 or p.unit_axis != 1:
                return "a flatten other than flatten(x, 1) sits before the next Linear"
            repeat, flat = spatial, True
        elif u.op == "call_method" and u.target in ("view", "reshape"):
            return f"a {u.target} sits before the next op; its layout is not followed"
        elif u.op == "call_method" and u.target == "contiguous":
            pass
        else:
            what = u.target if u.op != "output" else f"the output of {type(gm).__name__}"
            return (
                f"the next op is {getattr(what, '__name__', what)}, not a Conv or Linear in the same module"
            )
        cur = u
    return "no Conv or Linear within a few ops"


# -- TorchScript -------------------------------------------------------------------------
def _relu_named(g: GraphSite, as_relu: bool) -> str:
    """A rewritten site keeps the name it had as a ReLU (functional sites are named after their op)."""
    if as_relu and canon(g.op) in ("leaky_relu", "prelu"):
        return GraphSite("relu", g.module, g.module_type).base_name
    return g.base_name


def torchscript_sites(graph: Any, module: Any, *, as_relu: bool = False) -> dict[str, tuple[str, list[Any]]]:
    """Site name → (op, nodes) on an inlined TorchScript graph (the audit's own walk);
    ``as_relu`` names rewritten sites as before."""
    sites = torchscript_site_nodes(graph, module)
    named = assign_names([(_relu_named(g, as_relu), (g, nodes)) for g, nodes in sites])
    return {name: (g.op, nodes) for name, (g, nodes) in named}


def clone_script(module: Any) -> Any:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    return torch.jit.load(buf, map_location=_script_device(module))


def _script_device(module: Any) -> torch.device:
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return torch.device("cpu")


def rewrite_torchscript(
    module: Any, plans: Iterable[SitePlan], to: str = LEAKY, *, compensate: bool = False
) -> SurgeryResult:
    """Edit a copy of a ScriptModule's inlined ``forward`` graph, node by node."""
    m = clone_script(module)
    res = SurgeryResult(m)
    graph = m.forward.graph
    torch._C._jit_pass_inline(graph)
    sites = torchscript_sites(graph, m)
    new_nodes: dict[str, Any] = {}
    for p in plans:
        found = sites.get(p.name)
        if found is None:
            res.skipped[p.name] = "no matching aten::relu node in the inlined TorchScript graph"
            continue
        op, nodes = found
        if p.per_unit() or p.exact_shift or p.cap is not None:
            if op not in (_TS_RELU6 if p.cap is not None else ("relu", "relu_")):
                res.skipped[p.name] = (
                    f"aten::{op} is not rewritten (only relu / relu6 / hardtanh(0, 6) nodes are)"
                )
                continue
            for node in nodes:
                new_nodes[p.name] = _ts_unit(graph, node, p, to)
            res.rewritten[p.name] = "graph nodes (slopes and shifts as tensor constants)"
            note = (
                "TorchScript: per-unit slopes and shifts are tensor constants of the graph (a compiled module cannot "
                "gain parameters): they reload and pass gradients to the layers before them, but do not train themselves"
            )
            if to != LEAKY and note not in res.notes:
                res.notes.append(note)
            continue
        if canon(op) != "relu" or op not in ("relu", "relu_"):
            res.skipped[p.name] = f"aten::{op} is not rewritten (only aten::relu / aten::relu_ nodes are)"
            continue
        if to == PRELU:
            res.skipped[p.name] = (
                "TorchScript cannot add a parameter to a compiled module, so a learnable PReLU slope is impossible here; "
                "use --to leaky, or rewrite the eager model"
            )
            continue
        for node in nodes:
            new_nodes[p.name] = _ts_leaky(graph, node, p.alpha)
        res.rewritten[p.name] = "graph node"
    torch._C._jit_pass_lint(graph)
    if compensate:
        plan_by = {p.name: p for p in plans}
        for name, node in new_nodes.items():
            _fold_ts(m, node, plan_by[name], res)
    return res


_TS_RELU6 = ("relu6", "relu6_", "hardtanh", "hardtanh_", "clamp", "clamp_")


def _ts_unit(graph: Any, node: Any, p: SitePlan, to: str) -> Any:
    """Replace one relu/relu6 node by prelu (or leaky_relu), clamp_max for ReLU6, and the shift.

    TorchScript cannot add parameters to a compiled module: slopes and shifts are tensor
    constants of the graph (they reload and run anywhere, but do not train as parameters).
    """
    rank = _plan_rank(p)
    axis = p.unit_axis if p.unit_axis >= 0 else rank + p.unit_axis
    if to == LEAKY:
        slopes = float32_up(np.array([p.alpha]))
    else:
        slopes = float32_up(p.slopes() if p.unit_slopes is not None else p.slopes(p.alpha))
    shift = p.shift_for(slopes)
    out_type = node.output().type()

    def make(kind: str, inputs: list[Any]) -> Any:
        n = graph.create(kind, inputs)
        n.insertBefore(node)
        n.output().setType(out_type)
        n.copyMetadata(node)
        return n.output()

    with graph.insert_point_guard(node):
        x = (
            node.input()
            if node.kind() not in ("aten::hardtanh", "aten::hardtanh_", "aten::clamp", "aten::clamp_")
            else node.inputsAt(0)
        )
        if to == LEAKY:
            y = make("aten::leaky_relu", [x, graph.insertConstant(float(slopes[0]))])
        else:
            moved = axis != 1 and p.units > 1
            ax1, axu = graph.insertConstant(1), graph.insertConstant(int(axis))
            if moved:
                x = make("aten::movedim", [x, axu, ax1])
            w = graph.insertConstant(torch.as_tensor(slopes, dtype=torch.float32).to(_graph_device(node)))
            y = make("aten::prelu", [x, w])
            if moved:
                y = make("aten::movedim", [y, ax1, axu])
        if p.cap is not None:
            y = make("aten::clamp_max", [y, graph.insertConstant(float(p.cap))])
        if p.exact_shift:
            sh = torch.as_tensor(
                shift.reshape(unit_shape(p.units, axis, rank) if p.units > 1 else [1]), dtype=torch.float32
            )
            y = make(
                "aten::sub", [y, graph.insertConstant(sh.to(_graph_device(node))), graph.insertConstant(1)]
            )
    node.output().replaceAllUsesWith(y)
    node.destroy()
    return y.node()


def _graph_device(node: Any) -> torch.device:
    t = node.output().type()
    dev = t.device() if hasattr(t, "device") else None
    return dev if dev is not None else torch.device("cpu")


def _ts_leaky(graph: Any, node: Any, alpha: float) -> Any:
    inplace = node.kind() == "aten::relu_"
    with graph.insert_point_guard(node):
        const = graph.insertConstant(float(alpha))
        new = graph.create("aten::leaky_relu_" if inplace else "aten::leaky_relu", [node.input(), const])
        new.insertBefore(node)
        new.output().setType(node.output().type())
        new.copyMetadata(node)
    node.output().replaceAllUsesWith(new.output())
    node.destroy()
    return new


_TS_TRANSPARENT = {"aten::dropout", "aten::contiguous", "aten::feature_dropout"}
_TS_CONV = {"aten::conv1d", "aten::conv2d", "aten::conv3d"}
_TS_SHAPE_ONLY = {"aten::size", "aten::dim", "aten::len", "prim::device", "prim::dtype", "prim::shape"}


def _ts_attr(m: Any, value: Any) -> Any:
    """Follow a prim::GetAttr chain back to %self and return the Python-side object."""
    names = []
    v = value
    while v.node().kind() == "prim::GetAttr":
        names.append(v.node().s("name"))
        v = v.node().input()
    if v.debugName() != "self" and not v.debugName().startswith("self"):
        return None
    obj = m
    for n in reversed(names):
        obj = getattr(obj, n)
    return obj


def _fold_ts(m: Any, node: Any, p: SitePlan, res: SurgeryResult) -> None:
    if p.neg_mean is None:
        return
    cur = node.output()
    repeat, flat = 1, False
    spatial = math.prod(p.sample_shape[1:]) if p.sample_shape else 1
    for _ in range(8):
        uses = [x for x in cur.uses() if x.user.kind() not in _TS_SHAPE_ONLY]
        if len(uses) != 1:
            res.not_compensated[p.name] = (
                f"its output feeds {len(uses)} ops; the fold needs exactly one linear consumer"
            )
            return
        u = uses[0].user
        k = u.kind()
        if k == "prim::Return" and u.owningBlock().owningNode() is not None:
            owner = u.owningBlock().owningNode()
            if owner.kind() != "prim::If":
                res.not_compensated[p.name] = f"the site is inside a {owner.kind()} body"
                return
            cur = owner.outputsAt(uses[0].offset)  # F.relu's `if inplace:` branches meet here
            continue
        if k in _TS_TRANSPARENT and uses[0].offset == 0:
            cur = u.output()
            continue
        if k == "aten::adaptive_avg_pool2d" and p.unit_axis == 1 and uses[0].offset == 0:
            size = _ts_list(u.inputsAt(1))
            if size is None or any(int(x) != 1 for x in size):
                res.not_compensated[p.name] = (
                    "an adaptive pool to more than one position sits before the next op"
                )
                return
            spatial = 1
            cur = u.output()
            continue
        if k == "aten::flatten" and p.unit_axis == 1:
            start = u.inputsAt(1).toIValue() if u.inputsAt(1).node().kind() == "prim::Constant" else None
            if start != 1:
                res.not_compensated[p.name] = "a flatten other than flatten(x, 1) sits before the next op"
                return
            repeat, flat = spatial, True
            cur = u.output()
            continue
        if (k in _TS_CONV or k == "aten::linear") and uses[0].offset == 0:
            weight = _ts_attr(m, u.inputsAt(1))
            bias = _ts_attr(m, u.inputsAt(2)) if u.inputsAt(2).node().kind() == "prim::GetAttr" else None
            if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
                res.not_compensated[p.name] = f"the next op {k} has no bias parameter to fold into"
                return
            if k in _TS_CONV:
                if p.unit_axis != 1 or repeat != 1:
                    res.not_compensated[p.name] = "the next conv does not take this site's units as channels"
                    return
                groups = u.inputsAt(6).toIValue() if u.inputsAt(6).node().kind() == "prim::Constant" else None
                pad = u.inputsAt(4).node()
                if groups is None:
                    res.not_compensated[p.name] = "the next conv has a non-constant group count"
                    return
                _fold_into(weight, bias, "conv", p.shift(), int(groups), 1)
                padded = _ts_padded(pad)
                res.compensated[p.name] = f"{k} bias" + (
                    " (approximate at zero-padded borders)" if padded else ""
                )
                return
            if not flat and p.unit_axis != len(p.sample_shape):
                res.not_compensated[p.name] = (
                    "the next linear does not take this site's units as input features"
                )
                return
            _fold_into(weight, bias, "linear", p.shift(), 1, repeat)
            res.compensated[p.name] = f"{k} bias"
            return
        res.not_compensated[p.name] = f"the next op is {k}, not a conv or linear"
        return
    res.not_compensated[p.name] = "no conv or linear within a few ops"


def _ts_list(v: Any) -> list[int] | None:
    n = v.node()
    if n.kind() == "prim::Constant":
        val = v.toIValue()
        return [int(x) for x in val] if isinstance(val, (list, tuple)) else [int(val)]
    if n.kind() == "prim::ListConstruct":
        out = []
        for i in n.inputs():
            if i.node().kind() != "prim::Constant":
                return None
            out.append(int(i.toIValue()))
        return out
    return None


def _ts_padded(pad_node: Any) -> bool:
    if pad_node.kind() == "prim::ListConstruct":
        vals = []
        for v in pad_node.inputs():
            if v.node().kind() != "prim::Constant":
                return True
            vals.append(v.toIValue())
        return any(int(x) for x in vals)
    if pad_node.kind() == "prim::Constant":
        v = pad_node.output().toIValue()
        return v != "valid" and (not isinstance(v, (list, tuple)) or any(int(x) for x in v))
    return True


def save_torchscript(module: Any) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return buf.getvalue()


def torchscript_slopes(module: Any) -> list[tuple[str, str, Any]]:
    """(op, module path, slope) for every rectifier node of a saved/loaded ScriptModule's inlined graph."""
    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    out = []
    for name, (op, nodes) in torchscript_sites(graph, module, as_relu=True).items():
        n = nodes[0]
        slope: Any = None
        if op.startswith("leaky_relu"):
            v = n.inputsAt(1)
            if v.node().kind() == "prim::Constant":
                slope = float(v.toIValue())
            else:
                a = _ts_attr(module, v)
                slope = float(a) if isinstance(a, float) else None
        elif canon(op) == "prelu":
            v = n.inputsAt(1)
            if v.node().kind() == "prim::Constant":
                slope = [float(x) for x in v.toIValue().flatten()]
            else:
                w = _ts_attr(module, v)
                slope = None if not isinstance(w, torch.Tensor) else [float(x) for x in w.detach().flatten()]
        out.append((name, op, slope))
    return out


# -- torch.export ------------------------------------------------------------------------
_EXPORT_RELU = {"relu", "relu_"}


def export_sites(gm: fx.GraphModule, *, as_relu: bool = False) -> dict[str, fx.Node]:
    """Site name → node on an ExportedProgram's graph (same walk as the audit)."""
    items = [(_relu_named(site, as_relu), node) for site, node in export_site_nodes(gm)]
    return dict(assign_names(items))


def clone_export(ep: Any) -> Any:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(ep, buf)
        buf.seek(0)
        return torch.export.load(buf)


def save_export(ep: Any) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(ep, buf)
    return buf.getvalue()


def rewrite_export(
    ep: Any, plans: Iterable[SitePlan], to: str = LEAKY, *, compensate: bool = False
) -> SurgeryResult:
    """Retarget ``aten.relu`` nodes of a copy of an ExportedProgram."""
    ep = clone_export(ep)
    res = SurgeryResult(ep)
    gm = ep.graph_module
    sites = export_sites(gm)
    new_nodes: dict[str, fx.Node] = {}
    plans = list(plans)
    for p in plans:
        node = sites.get(p.name)
        if node is None:
            res.skipped[p.name] = "no matching aten.relu node in the exported graph"
            continue
        op = op_name(node.target)
        if p.per_unit() or p.exact_shift or p.cap is not None:
            allowed = _EXPORT_RELU6 if p.cap is not None else _EXPORT_RELU
            if op not in allowed:
                res.skipped[p.name] = (
                    f"aten.{op} is not rewritten (only relu / relu6 / hardtanh(0, 6) nodes are)"
                )
                continue
            got = _export_unit(ep, node, p, to)
            if isinstance(got, str):
                res.skipped[p.name] = got
                continue
            new_nodes[p.name] = got
            res.rewritten[p.name] = "graph nodes (slope parameter, shift buffer)"
            continue
        if op not in _EXPORT_RELU:
            res.skipped[p.name] = f"aten.{op} is not rewritten (only aten.relu / aten.relu_ nodes are)"
            continue
        x = node.args[0]
        if to == LEAKY:
            node.target = (
                torch.ops.aten.leaky_relu_.default if op == "relu_" else torch.ops.aten.leaky_relu.default
            )
            node.args = (x, float(p.alpha))
            new_nodes[p.name] = node
        else:
            why = _export_prelu(ep, node, p)
            if why:
                res.skipped[p.name] = why
                continue
            new_nodes[p.name] = node
        res.rewritten[p.name] = "graph node"
    gm.graph.lint()
    gm.recompile()
    if compensate:
        plan_by = {p.name: p for p in plans}
        for name, node in new_nodes.items():
            _fold_export(ep, node, plan_by[name], res)
    return res


_EXPORT_RELU6 = {"relu6", "relu6_", "hardtanh", "hardtanh_", "clamp", "clamp_"}


def _export_input(ep: Any, kind: Any, target: str, value: torch.Tensor) -> fx.Node:
    """A new parameter or buffer placeholder in the program, at its place in the signature."""
    from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

    gm = ep.graph_module
    sig = ep.graph_signature
    before = (
        (InputKind.PARAMETER,) if kind == InputKind.PARAMETER else (InputKind.PARAMETER, InputKind.BUFFER)
    )
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    insert_at = next((i for i, s in enumerate(sig.input_specs) if s.kind not in before), len(sig.input_specs))
    anchor = placeholders[insert_at] if insert_at < len(placeholders) else None
    stem = ("p_" if kind == InputKind.PARAMETER else "b_") + target.replace(".", "_")
    with (
        gm.graph.inserting_before(anchor)
        if anchor is not None
        else gm.graph.inserting_after(placeholders[-1])
    ):
        ph = gm.graph.placeholder(stem)
    ph.meta["val"] = _fake_like(node_val(placeholders), value)
    persistent = True if kind == InputKind.BUFFER else None
    sig.input_specs.insert(
        insert_at, InputSpec(kind, TensorArgument(ph.name), target=target, persistent=persistent)
    )
    ep.state_dict[target] = value
    return ph


def node_val(nodes: list[fx.Node]) -> Any:
    for n in nodes:
        v = n.meta.get("val")
        if isinstance(v, torch.Tensor):
            return v
    return None


def _fake_like(example: Any, value: torch.Tensor) -> Any:
    mode = getattr(example, "fake_mode", None)
    if mode is None:
        return value.detach()
    return mode.from_tensor(value.detach())


def _export_unit(ep: Any, node: fx.Node, p: SitePlan, to: str) -> str | fx.Node:
    """relu/relu6 node → [transpose] prelu [transpose] [clamp_max 6] sub(shift), in place of the node."""
    from torch.export.graph_signature import InputKind

    gm = ep.graph_module
    g = gm.graph
    rank = _plan_rank(p)
    axis = p.unit_axis if p.unit_axis >= 0 else rank + p.unit_axis
    stem = re.sub(r"[^0-9A-Za-z_]", "_", p.name)
    aten = torch.ops.aten
    val = node.meta.get("val")
    mode = getattr(val, "fake_mode", None)
    users = list(node.users)
    x = node.args[0]
    if to == LEAKY:
        slopes = float32_up(np.array([p.alpha]))
    else:
        slopes = float32_up(p.slopes() if p.unit_slopes is not None else p.slopes(p.alpha))
    shift_vec = p.shift_for(slopes)
    steps: list[tuple[Any, tuple[Any, ...]]] = []
    if to == LEAKY:
        steps.append((aten.leaky_relu.default, (float(slopes[0]),)))
    else:
        w = nn.Parameter(torch.as_tensor(slopes, dtype=torch.float32))
        ph_w = _export_input(ep, InputKind.PARAMETER, f"actaudit_slope.{stem}", w)
        moved = axis != 1 and p.units > 1
        if moved:
            steps.append((aten.transpose.int, (1, axis)))
        steps.append((aten.prelu.default, (ph_w,)))
        if moved:
            steps.append((aten.transpose.int, (1, axis)))
    if p.cap is not None:
        steps.append((aten.clamp_max.default, (float(p.cap),)))
    if p.exact_shift:
        sh = torch.as_tensor(
            shift_vec.reshape(unit_shape(p.units, axis, rank) if p.units > 1 else [1]), dtype=torch.float32
        )
        ph_s = _export_input(ep, InputKind.BUFFER, f"actaudit_shift.{stem}", sh)
        steps.append((aten.sub.Tensor, (ph_s,)))
    cur: Any = x
    made: list[fx.Node] = []
    anchor = node
    for target, extra in steps:
        with g.inserting_after(anchor):
            new = g.call_function(target, (cur, *extra))
        new.meta.update({k: v for k, v in node.meta.items() if k not in ("val", "tensor_meta")})
        try:
            args = [a.meta["val"] if isinstance(a, fx.Node) else a for a in (cur, *extra)]
            if mode is not None:
                with mode:
                    new.meta["val"] = target(*args)
            else:
                new.meta["val"] = target(*args)
        except Exception as e:
            for m in reversed([*made, new]):
                g.erase_node(m)
            return f"could not build the rewritten nodes ({type(e).__name__}: {e})"
        made.append(new)
        anchor, cur = new, new
    for u in users:
        u.replace_input_with(node, cur)
    for spec in ep.graph_signature.output_specs:  # the site may be a program output
        if getattr(spec.arg, "name", None) == node.name:
            spec.arg.name = cur.name
    g.erase_node(node)
    return cur


def _export_prelu(ep: Any, node: fx.Node, p: SitePlan) -> str | None:
    from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

    if p.unit_axis != 1 and p.units != 1:
        return f"PReLU on unit axis {p.unit_axis}: aten.prelu scales axis 1 only; use --to leaky"
    gm = ep.graph_module
    sig = ep.graph_signature
    target = f"actaudit_prelu.{re.sub(r'[^0-9A-Za-z_]', '_', p.name)}"
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    user_inputs = set(sig.user_inputs)
    first_user = next((n for n in placeholders if n.name in user_inputs), None)
    insert_at = next(
        (i for i, s in enumerate(sig.input_specs) if s.kind == InputKind.USER_INPUT), len(sig.input_specs)
    )
    # Parameters come before buffers and constants in an export signature.
    insert_at = next(
        (i for i, s in enumerate(sig.input_specs) if s.kind != InputKind.PARAMETER), len(sig.input_specs)
    )
    anchor = placeholders[insert_at] if insert_at < len(placeholders) else first_user
    ph_name = "p_" + target.replace(".", "_")
    with (
        gm.graph.inserting_before(anchor)
        if anchor is not None
        else gm.graph.inserting_after(placeholders[-1])
    ):
        ph = gm.graph.placeholder(ph_name)
    weight = nn.Parameter(torch.as_tensor(p.slopes(), dtype=torch.float32))
    ph.meta["val"] = weight.detach()
    sig.input_specs.insert(
        insert_at, InputSpec(InputKind.PARAMETER, TensorArgument(ph.name), target=target, persistent=None)
    )
    ep.state_dict[target] = weight
    node.target = torch.ops.aten.prelu.default
    node.args = (node.args[0], ph)
    return None


def _fold_export(ep: Any, node: fx.Node, p: SitePlan, res: SurgeryResult) -> None:
    if p.neg_mean is None:
        return
    inputs = {s.arg.name: s.target for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    cur = node
    repeat, flat = 1, False
    spatial = math.prod(p.sample_shape[1:]) if p.sample_shape else 1
    for _ in range(8):
        users = list(cur.users)
        if len(users) != 1:
            res.not_compensated[p.name] = (
                f"its output feeds {len(users)} ops; the fold needs exactly one linear consumer"
            )
            return
        u = users[0]
        op = op_name(u.target) if u.op == "call_function" else u.op
        if op in ("dropout", "contiguous", "clone", "alias") and u.args[0] is cur:
            cur = u
            continue
        if (
            op in ("adaptive_avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool3d")
            and p.unit_axis == 1
            and u.args[0] is cur
        ):
            if any(int(x) != 1 for x in _ints(u.args[1])):
                res.not_compensated[p.name] = (
                    "an adaptive pool to more than one position sits before the next op"
                )
                return
            spatial = 1
            cur = u
            continue
        if op == "flatten" and p.unit_axis == 1 and (u.args[1] if len(u.args) > 1 else 0) == 1:
            repeat, flat = spatial, True
            cur = u
            continue
        if op in ("conv1d", "conv2d", "conv3d", "linear") and u.args[0] is cur:
            w_node = u.args[1]
            b_node = u.args[2] if len(u.args) > 2 else None
            if (
                not isinstance(b_node, fx.Node)
                or b_node.name not in inputs
                or not isinstance(w_node, fx.Node)
            ):
                res.not_compensated[p.name] = f"the next op aten.{op} has no bias parameter to fold into"
                return
            weight = ep.state_dict.get(inputs.get(w_node.name))
            bias = ep.state_dict.get(inputs[b_node.name])
            if weight is None or bias is None:
                res.not_compensated[p.name] = f"the next op aten.{op} takes its weights from a non-parameter"
                return
            if op == "linear":
                if not flat and p.unit_axis != len(p.sample_shape):
                    res.not_compensated[p.name] = (
                        "the next linear does not take this site's units as input features"
                    )
                    return
                _fold_into(weight, bias, "linear", p.shift(), 1, repeat)
                res.compensated[p.name] = f"{inputs[b_node.name]}"
                return
            if p.unit_axis != 1 or repeat != 1:
                res.not_compensated[p.name] = "the next conv does not take this site's units as channels"
                return
            groups = int(_any(u.args[6])) if len(u.args) > 6 else 1
            padding: Any = u.args[4] if len(u.args) > 4 else 0
            _fold_into(weight, bias, "conv", p.shift(), groups, 1)
            padded = padding == "same" or any(int(x) for x in _ints(padding)) if padding != "valid" else False
            res.compensated[p.name] = inputs[b_node.name] + (
                " (approximate at zero-padded borders)" if padded else ""
            )
            return
        res.not_compensated[p.name] = f"the next op is {op}, not a conv or linear"
        return
    res.not_compensated[p.name] = "no conv or linear within a few ops"


def export_slopes(ep: Any) -> list[tuple[str, str, Any]]:
    """(site, op, slope) for every rectifier node of an ExportedProgram; PReLU slopes as lists."""
    inputs = {s.arg.name: s.target for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    out: list[tuple[str, str, Any]] = []
    for name, node in export_sites(ep.graph_module, as_relu=True).items():
        op = op_name(node.target)
        slope: Any = None
        if op.startswith("leaky_relu"):
            slope = float(_any(node.args[1])) if len(node.args) > 1 else 0.01
        elif op in ("prelu", "_prelu_kernel") and isinstance(node.args[1], fx.Node):
            t = ep.state_dict.get(inputs.get(node.args[1].name))
            slope = None if t is None else [float(x) for x in t.detach().flatten()]
        out.append((name, op, slope))
    return out


# -- the rewrite command's view of a PyTorch model ------------------------------------
TS = "ts"
PT2 = "pt2"
PICKLE = "pickle"


class TorchSurgeon:
    """Capture with outputs, build rewritten variants, run them, write and reload them."""

    backend = "torch"

    def __init__(self, tm: Any, writer: str) -> None:
        from .backend import float_dtype, model_device

        self.tm = tm
        self.writer = writer  # ts | pt2 | pickle
        self.device = model_device(tm)
        self.fdt = float_dtype(tm)
        self.example: Any = None
        # A ScriptModule may keep state between calls (attributes it updates): every variant
        # starts from the state the file had, not from the state the audit pass left.
        self._script = save_torchscript(tm.module) if tm.fmt == "torchscript" else None

    # what the file on disk will be
    @property
    def output_format(self) -> str:
        return {TS: "torchscript", PT2: "torch.export", PICKLE: "pickled-module"}[self.writer]

    def build(self, plans: list[SitePlan], to: str, compensate: bool) -> SurgeryResult:
        tm = self.tm
        if tm.fmt == "torchscript":
            assert self._script is not None
            fresh = torch.jit.load(io.BytesIO(self._script), map_location=self.device)
            return rewrite_torchscript(fresh, plans, to, compensate=compensate)
        if tm.fmt == "torch.export":
            return rewrite_export(tm.exported, plans, to, compensate=compensate)
        res = rewrite_eager(tm.eager, plans, to, compensate=compensate)
        res.model.eval()
        untraceable = [n for n, why in res.skipped.items() if "torch.fx cannot trace" in why]
        if untraceable and self.writer == TS:
            via = self._via_torchscript(plans, to, compensate)
            if via is not None and len(via.skipped) < len(res.skipped):
                return via
        for n in untraceable:
            if self.writer != TS:
                res.skipped[n] += (
                    "; writing TorchScript (-o FILE.ts or --output-format ts) rewrites it in the compiled graph"
                )
        return res

    def _via_torchscript(self, plans: list[SitePlan], to: str, compensate: bool) -> SurgeryResult | None:
        """Functional ReLUs in a module torch.fx cannot trace: script the eager model and edit its graph."""
        if self._scripted is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._scripted = save_torchscript(torch.jit.script(self.tm.eager))
            except Exception:
                self._scripted = b""
        if not self._scripted:
            return None
        fresh = torch.jit.load(io.BytesIO(self._scripted), map_location=self.device)
        res = rewrite_torchscript(fresh, plans, to, compensate=compensate)
        res.model.eval()
        res.notes.append(
            "torch.fx cannot trace a module with functional ReLUs: the model was scripted and the sites rewritten "
            "in its TorchScript graph"
        )
        return res

    _scripted: bytes | None = None

    def _callable(self, model: Any) -> Any:
        if self.tm.fmt == "torch.export" or hasattr(model, "graph_signature"):
            return model.module()
        return model

    def outputs(self, model: Any, source: Any, samples: int | None, batches: int | None) -> Any:
        from ...rewrite.drift import flatten_outputs
        from . import backend

        fn = self._callable(model)
        with torch.no_grad():
            # The audit's own batching: a program with a fixed batch gets exactly that many samples.
            for i, (args, kwargs) in enumerate(backend.batches_for(self.tm, source, samples)):
                if batches is not None and i >= batches:
                    return
                if self.example is None:
                    self.example = (args, kwargs)
                yield flatten_outputs(fn(*args, **kwargs))

    def serialize(self, model: Any, notes: list[str]) -> bytes:
        """The file's bytes; an eager model is converted when the output format asks for it."""
        if self.tm.fmt == "torchscript":
            return save_torchscript(model)
        if self.tm.fmt == "torch.export":
            return save_export(model)
        if self.writer == PICKLE:
            buf = io.BytesIO()
            torch.save(model, buf)
            return buf.getvalue()
        if self.writer == TS:
            return save_torchscript(self._to_script(model, notes))
        return save_export(self._to_export(model, notes))

    def _to_script(self, model: nn.Module, notes: list[str]) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.jit.script(model)
        except Exception as e:
            first = " ".join(str(e).split())[:160]
            if self.example is None:
                raise
            args, kwargs = self.example
            if kwargs:
                raise
            notes.append(
                f"torch.jit.script failed ({first}); wrote a traced TorchScript (fixed control flow)"
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.jit.trace(model, tuple(args))

    def _to_export(self, model: nn.Module, notes: list[str]) -> Any:
        if self.example is None:
            raise RuntimeError("no example batch to export with")
        args, kwargs = self.example
        batch = torch.export.Dim.AUTO
        dyn_args = tuple({0: batch} if isinstance(a, torch.Tensor) and a.ndim else None for a in args)
        dyn_kwargs = {
            k: ({0: batch} if isinstance(v, torch.Tensor) and v.ndim else None) for k, v in kwargs.items()
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dyn: Any = dyn_args if not kwargs else {**dict(enumerate(dyn_args)), **dyn_kwargs}
                if kwargs:
                    raise ValueError("keyword inputs")
                return torch.export.export(model, tuple(args), dynamic_shapes=dyn)
            except Exception as e:
                notes.append(
                    f"export with a dynamic batch axis failed ({type(e).__name__}); exported with fixed shapes"
                )
                return torch.export.export(model, tuple(args), kwargs or None)

    def reload(self, path: Any) -> Any:
        """A fresh load from disk, the way a user would."""
        p = str(path)
        if self.tm.fmt == "torchscript" or (self.tm.eager is not None and self.writer == TS):
            m = torch.jit.load(p, map_location=self.device)
            m.eval()
            return m
        if self.tm.fmt == "torch.export" or self.writer == PT2:
            with open(p, "rb") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.export.load(io.BytesIO(f.read()))
        m = torch.load(p, map_location=self.device, weights_only=False)
        m.eval()
        return m

    def written_slopes(self, model: Any) -> list[tuple[str, str, Any]]:
        """(site, op, slope) in the reloaded file, for the report and tests."""
        if hasattr(model, "graph_signature"):
            return export_slopes(model)
        if isinstance(model, torch.jit.ScriptModule):
            return torchscript_slopes(model)
        out: list[tuple[str, str, Any]] = []
        for name, mod in model.named_modules():
            if isinstance(mod, (nn.LeakyReLU, ShiftedLeakyReLU)):
                out.append((name, type(mod).__name__, float(mod.negative_slope)))
            elif isinstance(mod, UnitPReLU):
                out.append((name, "UnitPReLU", [float(x) for x in mod.weight.detach().flatten()]))
            elif isinstance(mod, (nn.PReLU, AxisPReLU)):
                out.append((name, type(mod).__name__, [float(x) for x in mod.weight.detach().flatten()]))
        return out

    def frozen_parameters(self, model: Any) -> list[str]:
        """Names of parameters with requires_grad=False in a reloaded model."""
        if hasattr(model, "graph_signature"):
            model = model.module()
        try:
            return [n for n, p in model.named_parameters() if not p.requires_grad]
        except Exception:
            return []

    def original(self) -> Any:
        tm = self.tm
        if tm.fmt == "torch.export":
            return tm.exported
        return tm.module if tm.eager is None else tm.eager

    def original_slopes(self) -> list[tuple[str, str, Any]]:
        return self.written_slopes(self.original())

    def trainable(self, model: Any) -> bool:
        if hasattr(model, "graph_signature"):
            model = model.module()
        params = list(model.parameters())
        return bool(params) and all(p.requires_grad for p in params)
