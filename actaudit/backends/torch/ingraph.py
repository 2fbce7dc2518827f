"""Per-site statistics inside a TorchScript graph: no Python per dispatched op after the first batch.

The first batch runs under the dispatch capture (:mod:`.kernel`), which names the sites, settles
their unit axes, kinds and thresholds and finds the model's output heads. When every site it saw
is a straight-line node of the inlined ``forward`` graph, one for one and in graph order (the rule
of :func:`plan`), later batches run a copy of that graph with one ``actaudit_ingraph::stats`` op
per site or per group of small sites. The op hands the pre-activation, as it was when the
activation read it, to the same accumulator code the dispatch capture uses (:class:`.kernel._Acc`:
the compiled one-pass kernel, else the ATen path), so numbers, NaN handling and thresholds are
the dispatch capture's. Small sites of one shape are stacked (copied first only where something
later writes to them) and reduced in one call: a 1,000-layer MLP pays two Python calls per
batch (512 sites a stack at most), not a Python dispatch per op. :mod:`.ingraph_fx` does the same
for ``torch.export`` programs.

Nothing new runs from the archive: the graph is the loaded, checked module's own ``forward``,
with the statistics ops and one extra output added. A batch the compiled statistics cannot take
(an error, a unit count that changed, a batch of one sample) is discarded and run again under
the dispatch capture, which then reports or handles it as it always did.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from ... import unitaxis as ua
from .graphsites import GraphSite, torchscript_site_nodes
from .kernel import _Acc

if TYPE_CHECKING:
    from .sites import Recorder, _Site

_OP = "actaudit_ingraph::stats"
# Sites of at most this many elements per batch (at the first batch) are stacked with others of
# their shape and reduced together; larger ones are reduced where they run, one call each.
_SMALL = 1 << 16
# A group's stacked tensors stay alive until its last site ran: at most this many elements.
_GROUP_ELEMENTS = 1 << 22
_GROUP_SITES = 512

_library: list[torch.library.Library] = []
_targets: dict[int, _Target] = {}
_ids = itertools.count()
# What the last compiled-graph capture did (tests and the benchmark read these): "graph", or why it
# kept the dispatch path; how many batches ran in the graph; how many sites each stats op reduced.
last_choice = ""
last_batches = 0
last_layout: list[int] = []


def enabled() -> bool:
    """``ACTAUDIT_INGRAPH=0`` keeps every batch on the dispatch capture."""
    return os.environ.get("ACTAUDIT_INGRAPH", "1").strip().lower() not in ("0", "off", "no", "false")


def register() -> None:
    """Define the statistics op once per process; its kernel looks up the target by number."""
    if _library:
        return
    lib = torch.library.Library("actaudit_ingraph", "DEF")
    lib.define("stats(Tensor x, int target) -> Tensor")
    lib.impl("stats", _stats, "CompositeExplicitAutograd")
    _library.append(lib)


def _stats(x: torch.Tensor, target: int) -> torch.Tensor:
    _targets[target].add(x)
    return x.new_empty(0)


class Unfit(Exception):
    """A batch the compiled statistics cannot take: it is run again under the dispatch capture."""


@dataclass
class _Target:
    """One stats op of the graph: one site, or a group of small sites stacked at ``dim``."""

    sites: list[_Site]
    dim: int  # the sites' unit axis, where a group's stack puts its site axis (the rank when whole)
    rank: int  # the rank of each site's activation
    units: int  # per site
    whole: bool = False  # one unit per site (unit axis past the last)
    samples: int = 0  # of the batch running now
    part: _Acc | None = None  # this batch's, until the whole forward ran
    total: _Acc | None = None  # the batches run so far, split into the sites' own at the end

    def add(self, x: torch.Tensor) -> None:
        s = len(self.sites)
        if s == 1:  # the dispatch capture's own checks (sites.Recorder._add)
            if not self.whole and (self.dim >= x.ndim or int(x.shape[self.dim]) != self.units):
                raise Unfit("unit count changed")
            v, axis = x, x.ndim if self.whole else self.dim
        elif x.ndim != self.rank + 1 or int(x.shape[self.dim]) != s:
            raise Unfit(f"rank {x.ndim - 1}, expected {self.rank}")
        elif self.whole:
            v, axis = x.reshape(-1, s, 1), 1
        elif int(x.shape[self.dim + 1]) != self.units:
            raise Unfit("unit count changed")
        else:
            a, b = math.prod(x.shape[: self.dim]), math.prod(x.shape[self.dim + 2 :])
            v, axis = x.reshape(a, s * self.units, b), 1
        if self.part is None:
            self.part = _Acc(s * self.units, x.device)
        self.part.add(v, axis, self.sites[0].thr, self.samples)

    def commit(self) -> None:
        """Keep a finished batch (one fold per op, not per site: small sites come in hundreds)."""
        p, self.part = self.part, None
        if p is None:
            raise Unfit("a statistics op did not run")
        if self.total is None:
            self.total = p
        else:
            _fold(self.total, p, slice(None))

    def finish(self) -> None:
        """Add the batches run here into each site's accumulators."""
        t, self.total = self.total, None
        if t is not None:
            for i, site in enumerate(self.sites):
                _fold(site.acc, t, slice(i * self.units, (i + 1) * self.units))


def _fold(dst: _Acc, src: _Acc, at: slice) -> None:
    """Add one batch's accumulators (units ``at`` of ``src``) into a site's."""
    dst.sums += src.sums[:, at]
    dst.nonfinite += src.nonfinite[at]
    torch.minimum(dst.min, src.min[at], out=dst.min)
    torch.maximum(dst.max, src.max[at], out=dst.max)
    dst.elements += src.elements
    dst.samples += src.samples


class InGraph:
    """The instrumented copy of a compiled forward, and its targets.

    ``owner``: the ScriptModule the TorchScript function runs on (it returns ``(output, tokens)``);
    None for a torch.export GraphModule copy, called as the model is.
    """

    def __init__(self, fn: Callable[..., Any], owner: Any, targets: dict[int, _Target]) -> None:
        self.fn = fn
        self.owner = owner
        self.targets = targets
        self.batches = 0

    def run(self, args: list[Any], kwargs: dict[str, Any], samples: int) -> object:
        """One batch: the model's output; raises (nothing folded) when the batch must be run again."""
        if samples <= 1:
            raise Unfit("a batch of one sample may have lost its batch axis")
        for t in self.targets.values():
            t.samples, t.part = samples, None
        # The plain interpreter: the profiling executor would spend the first calls profiling and
        # optimising a second copy of the whole graph (0.8 s of CPU on a 1,000-layer MLP; ~6 % per call saved).
        with torch.no_grad(), torch.jit.optimized_execution(False):
            out = self.fn(*args, **kwargs) if self.owner is None else self.fn(self.owner, *args, **kwargs)
        for t in self.targets.values():
            if t.part is None:
                raise Unfit("a statistics op did not run")
        for t in self.targets.values():
            t.commit()
        return out if self.owner is None else out[0]

    def batch(self, call: Any, args: list[Any], kwargs: dict[str, Any], samples: int, rec: Recorder) -> bool:
        """Run one batch here; False when it must run under the dispatch capture instead."""
        try:
            out = self.run(args, kwargs, samples)
        except KeyboardInterrupt:
            raise
        except Exception:
            if rec.interrupted:
                raise KeyboardInterrupt from None
            return False
        self.batches += 1
        record = getattr(call, "record", None)
        if record is not None:  # the caller keeps the model's outputs (rewrite and prune measure drift)
            record(out)
        return True

    def close(self) -> None:
        """Fold what ran here into the sites (before the Recorder's results) and forget the targets."""
        global last_batches, last_layout
        for t in self.targets.values():
            t.finish()
        last_batches, last_layout = self.batches, [len(t.sites) for t in self.targets.values()]
        for k in self.targets:
            _targets.pop(k, None)


def plan(module: Any, rec: Recorder) -> InGraph | None:
    """The in-graph capture of a ScriptModule for later batches, or None (``last_choice`` says why).

    :func:`.ingraph_fx.plan` is the entry point; it sends torch.export programs their own way."""
    global last_choice
    if not enabled():
        last_choice = "turned off (ACTAUDIT_INGRAPH=0)"
        return None
    if not isinstance(module, torch.jit.ScriptModule):
        last_choice = "not a ScriptModule or a torch.export program"
        return None
    try:
        graph: Any = cast(Any, module).forward.graph.copy()
        torch._C._jit_pass_inline(graph)
        pairs = torchscript_site_nodes(graph, module, recurrent=True)
        points, why = match(pairs, rec, _point)
        if points is None:
            last_choice = why
            return None
        register()
        targets = _instrument(graph, points)
        graph.lint()
        fn = torch._C._create_function_from_graph(f"actaudit_stats_{next(_ids)}", graph)
    except Exception as e:  # a graph this version of torch will not let us extend: keep dispatching
        last_choice = f"graph not instrumented: {type(e).__name__}: {e}"[:300]
        return None
    _targets.update(targets)
    last_choice = "graph"
    return InGraph(fn, module._c, targets)


def match(
    pairs: list[tuple[GraphSite, list[Any]]],
    rec: Recorder,
    point: Callable[[list[Any]], tuple[Any, Any] | None],
) -> tuple[list[tuple[_Site, Any, Any]] | None, str]:
    """Each site with (insertion point, pre-activation value), when the graph runs them one to one."""
    sites = list(rec.sites.values())
    if rec.names.unmatched or len(sites) != len(pairs):
        return None, f"{len(sites)} sites ran, the graph lists {len(pairs)} activation nodes"
    if rec.extra_uncovered or rec.names.gru_done:
        return None, "recurrent or fused activations"
    out = []
    for site, (g, nodes) in zip(sites, pairs, strict=True):
        if g.gate or g.optional or g.op == "glu" or site.base != g.base_name:
            return None, f"site {site.base}: inside control flow, a recurrent op or a GLU"
        if site.broken or site.held is not None or site.acc.samples != rec.batch_samples:
            return None, f"site {site.base}: not once per forward"
        found = point(nodes)
        if found is None:
            return None, f"site {site.base}: its node is not on the graph's straight line"
        out.append((site, *found))
    return out, ""


def _point(nodes: list[torch._C.Node]) -> tuple[torch._C.Node, torch._C.Value] | None:
    """Where to read a site's pre-activation: before its node, or before an ``if inplace`` pair."""
    if len(nodes) == 1:
        n = nodes[0]
        return (n, n.inputsAt(0)) if n.owningBlock().owningNode() is None else None
    if len(nodes) != 2:
        return None
    a, b = nodes
    p = a.owningBlock().owningNode()
    if p is None or p != b.owningBlock().owningNode() or p.owningBlock().owningNode() is not None:
        return None
    x = a.inputsAt(0)
    if x != b.inputsAt(0) or x.node().owningBlock().owningNode() is not None:
        return None
    if any(len(list(n.owningBlock().nodes())) != 1 for n in nodes):
        return None
    return p, x


# torch._C's stubs lack Graph.insertConstant, create's default output count and AliasDb's methods:
# the graph being edited stays Any (as in script_surgery).
def _instrument(graph: Any, points: list[tuple[_Site, torch._C.Node, torch._C.Value]]) -> dict[int, _Target]:
    """Insert the stats ops and return their tokens as a second graph output."""
    groups: dict[tuple[Any, ...], list[tuple[_Site, torch._C.Node, torch._C.Value]]] = {}
    singles = []
    for p in points:
        key = group_key(p[0])
        if key is None:
            singles.append(p)
        else:
            groups.setdefault(key, []).append(p)
    targets: dict[int, _Target] = {}
    tokens: list[torch._C.Value] = []
    for site, node, x in singles:
        t = target([site])
        k = next(_ids)
        targets[k] = t
        tokens.append(_stats_node(graph, x, k, before=node))
    adb = graph.alias_db()
    for members in groups.values():
        for chunk in chunks(members):
            if len(chunk) == 1:
                site, node, x = chunk[0]
                k = next(_ids)
                targets[k] = target([site])
                tokens.append(_stats_node(graph, x, k, before=node))
                continue
            k = next(_ids)
            targets[k] = t = target([s for s, _, _ in chunk])
            values = [_held(graph, x, node) if adb.has_writers(x) else x for _, node, x in chunk]
            tokens.append(_stacked(graph, values, t.dim, k, after=chunk[-1][1]))
    _second_output(graph, tokens)
    return targets


def group_key(site: _Site) -> tuple[Any, ...] | None:
    info = site.info
    elements = math.prod(info.sample_shape) * max(site.acc.samples, 1)
    if elements > _SMALL:
        return None
    return (info.sample_shape, info.unit_axis, info.unit_axis_source == ua.WHOLE, site.thr.low, site.thr.high)


def chunks(members: list[Any]) -> list[list[Any]]:
    """Consecutive runs of a group under the stacked-memory caps."""
    out: list[list[Any]] = [[]]
    size = 0
    for m in members:
        e = math.prod(m[0].info.sample_shape) * max(m[0].acc.samples, 1)
        if out[-1] and (size + e > _GROUP_ELEMENTS or len(out[-1]) >= _GROUP_SITES):
            out.append([])
            size = 0
        out[-1].append(m)
        size += e
    return out


def target(sites: list[_Site]) -> _Target:
    info = sites[0].info
    rank = len(info.sample_shape) + 1
    whole = info.unit_axis_source == ua.WHOLE
    dim = rank if whole else info.unit_axis
    return _Target(sites, dim, rank, 1 if whole else info.units, whole)


def _stats_node(graph: Any, x: torch._C.Value, k: int, before: torch._C.Node) -> torch._C.Value:
    c = graph.insertConstant(k)
    c.node().moveBefore(before)
    op = graph.create(_OP, [x, c])
    op.output().setType(torch._C.TensorType.get())
    op.insertBefore(before)
    return op.output()


def _held(graph: Any, x: torch._C.Value, before: torch._C.Node) -> torch._C.Value:
    """A copy of ``x`` as the activation reads it: something later (an in-place op) writes to it."""
    none = graph.insertConstant(None)
    none.node().moveBefore(before)
    clone = graph.create("aten::clone", [x, none])
    clone.output().setType(torch._C.TensorType.get())
    clone.insertBefore(before)
    return clone.output()


def _stacked(
    graph: Any, values: list[torch._C.Value], dim: int, k: int, after: torch._C.Node
) -> torch._C.Value:
    """``stats(stack(values, dim), k)`` right after the group's last site."""
    lst = graph.create("prim::ListConstruct", values)
    lst.output().setType(torch._C.ListType.ofTensors())
    lst.insertAfter(after)
    d = graph.insertConstant(dim)
    d.node().moveBefore(lst)
    st = graph.create("aten::stack", [lst.output(), d])
    st.output().setType(torch._C.TensorType.get())
    st.insertAfter(lst)
    c = graph.insertConstant(k)
    c.node().moveBefore(st)
    op = graph.create(_OP, [st.output(), c])
    op.output().setType(torch._C.TensorType.get())
    op.insertAfter(st)
    return op.output()


def _second_output(graph: Any, tokens: list[torch._C.Value]) -> None:
    """The graph returns ``(its output, tokens)``: the stats ops feed an output, so no pass drops them."""
    (out,) = list(graph.outputs())
    lst = graph.create("prim::ListConstruct", tokens)
    lst.output().setType(torch._C.ListType.ofTensors())
    graph.appendNode(lst)
    tup = graph.create("prim::TupleConstruct", [out, lst.output()])
    tup.output().setType(torch._C.TupleType([out.type(), torch._C.ListType.ofTensors()]))
    graph.appendNode(tup)
    graph.eraseOutput(0)
    graph.registerOutput(tup.output())
