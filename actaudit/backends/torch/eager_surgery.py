"""ReLU surgery on eager ``nn.Module`` models: module swaps, and torch.fx for reused modules and functional calls."""

from __future__ import annotations

import copy
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ...rewrite.plan import SitePlan, SurgeryResult
from .activations import LEAKY, TARGETS, _activation_for, _fold_into, _ints, _is_relu_module

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
