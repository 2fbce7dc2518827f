"""ReLU surgery on eager ``nn.Module`` models: module swaps, and torch.fx for reused modules and functional calls."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...edit import fold
from ...edit.slopes import SlopePlan, SurgeryResult, split_name
from .activations import LEAKY, TARGETS, _activation_for, _ints, _is_relu_module
from .folding import module_consumer

_RELU_FUNCS: set[Callable[..., torch.Tensor]] = {F.relu, torch.relu, torch.relu_, F.relu_}
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
    plan: SlopePlan
    owner: str  # path of the module whose forward makes the call
    child: str | None  # the ReLU child the name points at, if any (a root-level name may also be functional)


def _locate(model: nn.Module, plan: SlopePlan) -> _EagerSite | str:
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
    plans: Iterable[SlopePlan],
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
        former = derived_locator(root, p.name) if isinstance(loc, str) and p.former is None else None
        if former is not None:
            p = dataclasses.replace(p, former=former)
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


def derived_locator(model: nn.Module, name: str) -> str | None:
    """The former name of a functional relu named after its input's module (``conv2.relu#1``), for a
    plan that carries no former name (:func:`actaudit.rewrite.apply_slopes` given the audit's names).

    The calling module is the nearest ancestor of the producer whose traced forward calls relu on
    that child's output; the former name counts that forward's calls of its ``relu`` base, as
    :func:`_site_nodes` reads them back."""
    base, k = split_name(name)
    producer, _, label = base.rpartition(".")
    if label != "relu" or not producer:
        return None
    parts = producer.split(".")
    for i in range(len(parts) - 1, -1, -1):
        owner_path = ".".join(parts[:i])
        try:
            owner = model.get_submodule(owner_path) if owner_path else model
        except AttributeError:
            return None
        gm, _ = _trace(owner)
        if gm is None:
            continue
        old = f"{owner_path}/relu" if owner_path else "relu"
        calls, hits = [], []
        for node in gm.graph.nodes:
            module_call = node.op == "call_module" and _is_relu_module(gm.get_submodule(str(node.target)))
            if module_call and _join(owner_path, str(node.target)) == old:
                calls.append(node)
            elif _is_functional_relu(node):
                calls.append(node)
                x = node.args[0] if node.args else None
                if isinstance(x, fx.Node) and x.op == "call_module" and ".".join(parts[i:]) == str(x.target):
                    hits.append(node)
        if hits:
            node = hits[k or 0] if (k or 0) < len(hits) else None
            if node is None:
                return None
            j = calls.index(node)
            return old if len(calls) == 1 else f"{old}#{j}"
    return None


def _rewrite_owner(
    root: nn.Module, owner_path: str, sites: list[_EagerSite], to: str, compensate: bool, res: SurgeryResult
) -> nn.Module:
    owner = root.get_submodule(owner_path) if owner_path else root
    # A name without "#k" is a module called once: swap it. Anything else (a module
    # called at several sites, a functional call) needs the owner's forward as a graph.
    simple = all(s.child is not None and s.plan.index is None for s in sites) and not (
        not owner_path and any(s.child == "relu" for s in sites)
    )
    gm, why = (None, None) if simple and not compensate else _trace(owner)
    if simple or gm is None:
        _swap_children(owner, owner_path, sites, to, why, res)
        if compensate and gm is not None:
            _fold_eager(owner, gm, _site_nodes(gm, owner_path, sites), sites, res, owner_path)
        elif compensate:
            for s in sites:
                res.not_compensated[s.plan.name] = f"cannot find the next op: {why}"
        return root
    nodes = _site_nodes(gm, owner_path, sites)
    edited = _edit_graph(gm, owner, owner_path, sites, nodes, to, res)
    gm.graph.lint()
    gm.recompile()
    if compensate:
        _fold_eager(gm, gm, nodes, sites, res, owner_path)
    if not edited:
        return root  # only swaps: keep the original module, now with its children swapped
    return _set_submodule(root, owner_path, gm)


def _swap_children(
    owner: nn.Module, owner_path: str, sites: list[_EagerSite], to: str, why: str | None, res: SurgeryResult
) -> None:
    """Swap each named ReLU child as a whole; functional calls stay (``why``: the forward could not be traced)."""
    where = owner_path or type(owner).__name__
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


def _edit_graph(
    gm: fx.GraphModule,
    owner: nn.Module,
    owner_path: str,
    sites: list[_EagerSite],
    nodes: dict[str, fx.Node],
    to: str,
    res: SurgeryResult,
) -> bool:
    """Rewrite each site's call in the traced forward; ``nodes`` follows the new calls. True if the graph changed."""
    where = owner_path or type(owner).__name__
    module_calls = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")
    groups: dict[fx.Node, list[_EagerSite]] = defaultdict(list)
    for s in sites:
        node = nodes.get(s.plan.name)
        if node is None:
            res.skipped[s.plan.name] = f"the traced {where}.forward has no such call"
        else:
            groups[node].append(s)
    split: set[str] = set()
    edited = False
    for node, group in groups.items():
        alpha = min(x.plan.alpha for x in group)
        if len(group) > 1:
            names = ", ".join(x.plan.name for x in group)
            res.notes.append(
                f"{where} runs more than once per forward, so one relu call serves several sites ({names}): "
                f"it gets the smallest of their slopes, α={alpha:g}"
            )
        child = str(node.target) if node.op == "call_module" else None
        if child is not None and module_calls[child] == 1:
            act = _activation_for(group[0].plan, to, alpha, _inplace(owner, child))
            setattr(gm, child, act)
            setattr(owner, child, act)
            for x in group:
                res.rewritten[x.plan.name] = "module swap"
            continue
        if child is not None:
            split.add(child)
        new_name, new = _own_module(gm, owner, node, group[0].plan, child, to, alpha)
        edited = True
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
    return edited


def _own_module(
    gm: fx.GraphModule,
    owner: nn.Module,
    node: fx.Node,
    p: SlopePlan,
    child: str | None,
    to: str,
    alpha: float,
) -> tuple[str, fx.Node]:
    """Replace one call (of a reused child, or a functional relu) by a call of a new module of its own."""
    if child is not None:
        stem, inplace = f"{child}_{p.index or 0}", _inplace(owner, child)
    else:
        stem = "relu_site" if p.index is None else f"relu_site{p.index}"
        inplace = bool(node.kwargs.get("inplace", False)) or node.target in ("relu_", torch.relu_, F.relu_)
    new_name = _unique(gm, stem)
    gm.add_submodule(new_name, _activation_for(p, to, alpha, inplace))
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(new_name, (node.args[0],))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new_name, new


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
    home: nn.Module,
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
        _fold_at(gm, home, node, p, res, prefix)


def _fold_at(
    gm: fx.GraphModule, home: nn.Module, node: fx.Node, p: SlopePlan, res: SurgeryResult, prefix: str
) -> None:
    """Fold site ``p`` (at ``node`` of ``gm``) into a consumer that lives in ``home`` under the same path."""

    def step(cur: fx.Node) -> tuple[fold.Link, fx.Node]:
        return eager_link(gm, home, cur, prefix)

    fold.settle(res, p.name, fold.fold(p.shift(), p.unit_axis, p.sample_shape, node, step))


def _fold_global(original: nn.Module, root: nn.Module, plans: list[SlopePlan], res: SurgeryResult) -> None:
    """Fold across module boundaries: trace the whole original model (nn modules stay leaves)."""
    try:
        gm = trace_whole(original)
    except Exception:
        return  # the per-module reasons stand
    nodes = global_site_nodes(gm, [p.locator for p in plans])
    for p in plans:
        node = nodes.get(p.locator)
        if node is not None and p.neg_mean is not None:
            _fold_at(gm, root, node, p, res, "")


def trace_whole(model: nn.Module) -> fx.GraphModule:
    """The whole model's forward as one graph (torch's own modules stay leaves)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fx.symbolic_trace(model)


def global_site_nodes(gm: fx.GraphModule, names: list[str]) -> dict[str, fx.Node]:
    """Audit site name → node of a whole-model trace (:func:`trace_whole`), counting calls per base name."""
    per_base: dict[str, list[fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        if node.op == "call_module" and _is_relu_module(gm.get_submodule(str(node.target))):
            per_base[str(node.target)].append(node)
        elif _is_functional_relu(node):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            path = str(stack[-1][0]) if stack else ""
            per_base[f"{path}/relu" if path else "relu"].append(node)
    out: dict[str, fx.Node] = {}
    for name in names:
        base, k = split_name(name)
        calls = per_base.get(base, [])
        if k is None and len(calls) == 1:
            out[name] = calls[0]
        elif k is not None and k < len(calls):
            out[name] = calls[k]
    return out


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_AVG_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def eager_link(gm: fx.GraphModule, home: nn.Module, cur: fx.Node, prefix: str) -> tuple[fold.Link, fx.Node]:
    """The one op of a traced forward that reads ``cur``, in the fold's terms."""
    users = [u for u in cur.users if not _shape_only(u)]
    if len(users) != 1:
        return fold.Fanout(len(users)), cur
    u = users[0]
    if u.op == "call_module":
        target = str(u.target)
        mod = gm.get_submodule(target)
        if isinstance(mod, (*_CONVS, nn.Linear)):
            try:
                consumer = home.get_submodule(target)
            except AttributeError:
                return fold.Stop(f"the next op {target} is not in the rewritten model"), u
            kind = "linear" if isinstance(mod, nn.Linear) else "conv"
            return module_consumer(consumer, kind, f"{_join(prefix, target)} bias"), u
        if isinstance(mod, nn.Flatten):
            return fold.Flatten("Flatten", bool(mod.start_dim == 1 and mod.end_dim == -1)), u
        if isinstance(mod, _AVG_POOLS):
            return fold.Pool(type(mod).__name__, all(o == 1 for o in _ints(mod.output_size))), u
        if isinstance(mod, _TRANSPARENT_MODULES):
            return fold.Pass(), u
        return fold.Other(type(mod).__name__), u
    if (u.op == "call_function" and u.target is torch.flatten) or (
        u.op == "call_method" and u.target == "flatten"
    ):
        start = u.args[1] if len(u.args) > 1 else u.kwargs.get("start_dim", 0)
        end = u.args[2] if len(u.args) > 2 else u.kwargs.get("end_dim", -1)
        return fold.Flatten("flatten", bool(start == 1 and end == -1)), u
    if u.op == "call_method" and u.target in ("view", "reshape"):
        dims = u.args[1] if len(u.args) == 2 and isinstance(u.args[1], (tuple, list)) else u.args[1:]
        return fold.Reshape(str(u.target), tuple(d if isinstance(d, int) else None for d in dims)), u
    if u.op == "call_method" and u.target == "contiguous":
        return fold.Pass(), u
    what = u.target if u.op != "output" else f"the output of {type(gm).__name__}"
    return fold.Other(str(getattr(what, "__name__", what))), u


def _shape_only(u: fx.Node) -> bool:
    """``x.size(0)``, ``x.dim()``, ``x.shape``: reads no values (``x.view(x.size(0), -1)``)."""
    if u.op == "call_method":
        return u.target in ("size", "dim")
    return u.op == "call_function" and u.target is getattr and len(u.args) > 1 and u.args[1] == "shape"
