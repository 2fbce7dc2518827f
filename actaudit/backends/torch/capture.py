"""Watch every activation call of a PyTorch model and reduce its pre-activation per unit.

Two interception levels share one :class:`Recorder`:

* eager modules run under a ``TorchFunctionMode``: it sees ``nn`` modules, functional
  calls, ``Tensor`` methods and in-place variants *before* they run (so in-place ReLU
  is measured on its input), and module pre/post hooks keep a stack of module paths
  so that each call is attributed to a call site (a module reused twice gives
  ``block.relu#0`` and ``block.relu#1``);
* TorchScript and ``torch.export`` programs run under a ``TorchDispatchMode``: it sees
  the ATen ops inside the compiled graph; the graph's own node list supplies the
  module path of each call, matched in execution order.

Each call is reduced at once to a few per-unit vectors accumulated on the model's
device; no activation tensor outlives its batch.
"""

from __future__ import annotations

import fnmatch
import math
import re
import signal
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

from ... import unitaxis as ua
from ...errors import CalibrationError, InputError, ModelRunError
from ...kinds import ACTIVATION_MODULES, Activation, Thresholds
from ...naming import site_names
from ...stats import AxisOverride, Capture, SiteInfo, SiteResult, SiteStats, Uncovered
from .ops import (
    CANDIDATES,
    CARRIERS,
    CONV,
    LINEAR,
    PRODUCERS,
    RECURRENT_PRODUCERS,
    RESHAPES,
    SAME_AXES,
    SPATIAL,
    activation_of,
    op_name,
)
from .recurrent import GRU_GATES, RECURRENT_TYPES, Unsupported, gates_of, mkldnn_layer_gates

_CANON = {
    "relu6": "hardtanh",
    "selu": "elu",
    "celu": "elu",
    "_prelu_kernel": "prelu",
    "clip": "clamp",
    "clamp_min": "clamp",
}


def canon(name: str) -> str:
    """One name per activation op, whether seen in a graph or at dispatch (``relu_`` → ``relu``)."""
    base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
    return _CANON.get(base, base)


CANON_CANDIDATES = frozenset(canon(n) for n in CANDIDATES)


@dataclass(frozen=True)
class GraphSite:
    """An activation-candidate node of a compiled graph, in graph order."""

    op: str  # the node's op name, e.g. "relu_" or "relu6"
    module: str  # module path, "" at top level
    module_type: str  # class name of the innermost module, "" if unknown
    optional: bool = False  # inside a branch or loop body: may not run
    gate: str = ""  # a recurrent cell's gate ("input_gate"), or FUSED for a fused recurrent op

    @property
    def base_name(self) -> str:
        if self.gate:
            return f"{self.module}.{self.gate}" if self.module else self.gate
        if self.module and self.module_type in ACTIVATION_MODULES:
            return self.module
        op = self.op.rstrip("_") if not self.op.startswith("_") else self.op
        return f"{self.module}/{op}" if self.module else op


# The CPU kernel streams each activation through L2-sized chunks (this much per intra-op
# thread): a chunk and one scratch buffer stay in a core's L2 (2 MB here), so after the first read every
# further pass over the chunk is an L2 hit. One big pass per statistic over a tensor that
# lives in L3/DRAM cost 3-6× more (profiled on the ResNet-like benchmark, bench/RESULTS.md).
_CHUNK_BYTES = 512 << 10
# Units whose contiguous rows are shorter than this are reduced over a transposed chunk
# (units last): ATen's inner reductions over 16-49 elements are 5-20× slower than
# reductions over the leading dimension.
_INNER_MIN = 128
_NSTAT = 6
_SUM, _NEG, _SQ, _NEGSQ, _LOW, _HIGH = range(_NSTAT)
_scratch = threading.local()


def _host_kernel(device: torch.device) -> bool:
    """CPU tensors take the chunked kernel; accelerators one launch per statistic (tests force that path on CPU)."""
    return device.type == "cpu"


def _work_buffer(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A grow-only per-thread buffer: fresh pages for every call cost more than the ops."""
    key = (dtype, device)
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    buf = bufs.get(key)
    if buf is None or buf.numel() < numel:
        buf = bufs[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf


def unit_view(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``x`` as ``[A, units, B]`` without a copy where its memory order allows (channels-last too)."""
    if axis >= x.ndim:  # the whole activation is one unit (a scalar or a [batch] tensor)
        return x.reshape(-1, 1, 1)
    if not x.is_contiguous():
        strides = x.stride()
        order = sorted(range(x.ndim), key=lambda d: (-strides[d], d))
        xp = x.permute(order)
        if xp.is_contiguous():
            x, axis = xp, order.index(axis)
        else:
            x = x.contiguous()
    a = b = 1
    for d in x.shape[:axis]:
        a *= int(d)
    for d in x.shape[axis + 1 :]:
        b *= int(d)
    return x.view(a, int(x.shape[axis]), b)


def _chunks(a: int, u: int, b: int, elem: int, budget: int) -> list[tuple[int, int, int, int, int]]:
    """(partial row, a0, a1, u0, u1) blocks of ``[A, U, B]`` of about ``budget`` bytes.

    Whole rows when one fits; otherwise unit blocks over enough rows that the partial
    results stay small next to the data (at least 16 elements reduced per unit and block).
    """
    row = u * b * elem
    if row <= budget:
        rows = max(1, min(a, budget // max(row, 1)))
        return [(i, a0, min(a, a0 + rows), 0, u) for i, a0 in enumerate(range(0, a, rows))]
    k = max(1, min(a, -(-16 // b)))
    ub = max(1, budget // max(k * b * elem, 1))
    starts = range(0, a, k)
    return [
        (i, a0, min(a, a0 + k), u0, min(u, u0 + ub)) for i, a0 in enumerate(starts) for u0 in range(0, u, ub)
    ]


class _Acc:
    """Per-unit accumulators of one site, on the model's device.

    Over finite elements, per unit: count(x <= low), count(x >= high), min, max, and the
    sums of x, min(x, 0), x², min(x, 0)² (float64); NaN/Inf are only counted. The positive
    parts, max(x, 0) and its square, are derived in :meth:`to_stats` as totals minus
    negative parts: exact for all-negative and all-positive units, otherwise within
    float32 rounding of the totals. Fewer, fused passes pay for that (see bench/RESULTS.md).
    """

    def __init__(self, units: int, device: torch.device) -> None:
        self.units = units
        self.sums = torch.zeros((_NSTAT, units), dtype=torch.float64, device=device)
        self.nonfinite = torch.zeros(units, dtype=torch.int64, device=device)
        self.min = torch.full((units,), math.inf, dtype=torch.float64, device=device)
        self.max = torch.full((units,), -math.inf, dtype=torch.float64, device=device)
        self.elements = 0
        self.samples = 0

    def add(self, x: torch.Tensor, axis: int, thr: Thresholds, samples: int) -> None:
        v = unit_view(x, axis)
        a, u, b = (int(d) for d in v.shape)
        self.samples += samples
        if v.numel() == 0:
            return
        wd = torch.float64 if v.dtype == torch.float64 else torch.float32
        lo, hi = math.isfinite(thr.low), math.isfinite(thr.high)
        nstat = 4 + lo + hi  # rows: sum, neg, sq, negsq, [low], [high]
        cpu = _host_kernel(v.device)
        # On an accelerator one launch per statistic over the whole tensor is cheapest.
        budget = _CHUNK_BYTES * max(1, torch.get_num_threads()) if cpu else 1 << 62
        elem = 4 if wd == torch.float32 else 8
        blocks = _chunks(a, u, b, elem, budget)
        transpose = cpu and 1 < b < _INNER_MIN
        big = max((a1 - a0) * (u1 - u0) * b for _, a0, a1, u0, u1 in blocks)
        nrow = blocks[-1][0] + 1
        convert = v.dtype != wd
        npart = (nstat + 2) * nrow * u
        work = _work_buffer(npart + big * (1 + transpose + convert), wd, v.device)
        part = work[:npart].view(nstat + 2, nrow, u)
        scratch = work[npart : npart + big]
        tbuf = work[npart + big : npart + 2 * big] if transpose else None
        cbuf = work[npart + (1 + transpose) * big : npart + (2 + transpose) * big] if convert else None
        for i, a0, a1, u0, u1 in blocks:
            c = v[a0:a1, u0:u1]
            k, n = a1 - a0, u1 - u0
            if cbuf is not None:
                c = cbuf[: c.numel()].view(c.shape).copy_(c)
            if b == 1 or transpose:
                if tbuf is not None:
                    tbuf[: c.numel()].view(k, b, n).copy_(c.transpose(1, 2))
                    c = tbuf[: c.numel()].view(k * b, n)
                else:
                    c = c.view(k, n)
                dims: tuple[int, ...] = (0,)
            else:
                dims = (0, 2)
            s = scratch[: c.numel()].view(c.shape)
            p = part[:, i, u0:u1]
            torch.amin(c, dims, out=p[nstat])
            torch.amax(c, dims, out=p[nstat + 1])
            torch.sum(c, dims, out=p[_SUM])
            torch.clamp_max(c, 0, out=s)
            torch.sum(s, dims, out=p[_NEG])
            s.mul_(s)
            torch.sum(s, dims, out=p[_NEGSQ])
            torch.mul(c, c, out=s)
            torch.sum(s, dims, out=p[_SQ])
            if lo:
                torch.le(c, thr.low, out=s)
                torch.sum(s, dims, out=p[_LOW])
            if hi:
                torch.ge(c, thr.high, out=s)
                torch.sum(s, dims, out=p[_LOW + lo])
        # Chunk partials in the working precision, their totals in float64 (counts stay exact:
        # a chunk holds far fewer than 2**24 elements per unit).
        tot = part[:nstat].sum(1, dtype=torch.float64)
        if not bool(torch.isfinite(tot[_SUM : _SQ + 1 : _SQ - _SUM]).all()):
            self._add_nonfinite(v.to(wd), thr)
        else:
            self.sums[:4] += tot[:4]
            if lo:
                self.sums[_LOW] += tot[_LOW]
            if hi:
                self.sums[_HIGH] += tot[_LOW + lo]
            torch.minimum(self.min, part[nstat].amin(0), out=self.min)
            torch.maximum(self.max, part[nstat + 1].amax(0), out=self.max)
        self.elements += a * b

    def _add_nonfinite(self, v: torch.Tensor, thr: Thresholds) -> None:
        """The plain masked path over ``[A, U, B]``, for batches that hold NaN, Inf or overflow float32 squares."""
        dims = [0, 2]
        finite = torch.isfinite(v)
        self.nonfinite += (~finite).sum(dims)
        x = torch.where(finite, v, torch.zeros((), dtype=v.dtype, device=v.device)).double()
        neg = x.clamp(max=0)
        self.sums[_SUM] += x.sum(dims)
        self.sums[_NEG] += neg.sum(dims)
        self.sums[_SQ] += (x * x).sum(dims)
        self.sums[_NEGSQ] += (neg * neg).sum(dims)
        inf = torch.full((), math.inf, dtype=v.dtype, device=v.device)
        torch.minimum(self.min, torch.where(finite, v, inf).amin(dims), out=self.min)
        torch.maximum(self.max, torch.where(finite, v, -inf).amax(dims), out=self.max)
        if math.isfinite(thr.low):
            self.sums[_LOW] += ((v <= thr.low) & finite).sum(dims)
        if math.isfinite(thr.high):
            self.sums[_HIGH] += ((v >= thr.high) & finite).sum(dims)

    def to_stats(self) -> SiteStats:
        t = self.sums.cpu().numpy()
        s = SiteStats(self.units, self.elements, self.samples)
        s.low, s.high = t[_LOW].astype(np.int64), t[_HIGH].astype(np.int64)
        s.nonfinite = self.nonfinite.cpu().numpy().astype(np.int64)
        s.min, s.max = self.min.cpu().numpy(), self.max.cpu().numpy()
        s.neg_sum, s.neg_sq = t[_NEG].copy(), t[_NEGSQ].copy()
        s.pos_sum = np.maximum(t[_SUM] - t[_NEG], 0.0)
        s.pos_sq = np.maximum(t[_SQ] - t[_NEGSQ], 0.0)
        return s


@dataclass
class _Site:
    info: SiteInfo
    thr: Thresholds
    acc: _Acc
    base: str
    index: int
    broken: str | None = None
    held: tuple[torch.Tensor, int] | None = None  # first call, while a consumer may decide the axis
    swish: float | None = None  # β when the sigmoid's output was multiplied by its input (a SiLU)
    decided: int | None = None  # the axis a consumer decided


class Recorder:
    """Site bookkeeping shared by both capture modes."""

    def __init__(
        self,
        stuck_fraction: float,
        axis_overrides: list[AxisOverride],
        graph_sites: list[GraphSite] | None = None,
    ) -> None:
        self.f = stuck_fraction
        self.overrides = axis_overrides
        self.graph_sites = graph_sites
        self.sites: dict[tuple[str, int], _Site] = {}
        self.tags: WeakIdKeyDictionary = WeakIdKeyDictionary()
        # Outputs of sites whose axis is still open, followed through axis-keeping ops to a consumer.
        self.pending_out: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.sigmoid_out: WeakIdKeyDictionary = WeakIdKeyDictionary()  # held sigmoid output -> (key, input)
        self.scaled_of: WeakIdKeyDictionary = WeakIdKeyDictionary()  # β·x -> (x, β)
        # Compiled graphs: the module whose parameters produced a tensor (by storage), carried like tags.
        self.param_owner: dict[int, str] = {}
        self.owners: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.module_stack: list[tuple[str, str]] = []
        self.batch_samples = 0
        self.last_site: str | None = None
        self.unmatched_graph_ops = 0
        self.interrupted = False
        self.option_error: InputError | None = None  # a --unit-axis mistake found inside the forward
        # softsign has no ATen op: it runs as x / (1 + |x|); these map |x| and 1 + |x| back to x.
        self._abs_of: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._one_plus_abs_of: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._counts: dict[str, int] = defaultdict(int)
        self._graph_ptr = 0
        from .heads import OutputOrigins

        self.origins = OutputOrigins()  # which sites' values reach the model's outputs
        self.last_key: tuple[str, int] | None = None
        self.output_sites: set[tuple[str, int]] = set()
        self.suspended = False  # while actaudit runs its own ops (a written-out recurrent cell)
        self.extra_uncovered: dict[str, Uncovered] = {}
        self._hidden_now: dict[str, int] = defaultdict(int)  # fused-activation ops in this forward
        self._gru_steps: dict[str, int] = defaultdict(int)  # gate ops seen per GRU layer, this forward
        self.gru_done: set[str] = set()
        self._merged_now: set[str] = set()
        self.hidden_ops: dict[str, int] = {}  # the most calls of each seen in one forward
        self._lstm_ptr = self._lstm_calls = 0  # position among the graph's fused aten::lstm nodes
        self.lstm_done: set[str] = set()
        self.lstm_failed: dict[str, str] = {}

    # -- per forward ----------------------------------------------------------------
    def begin_forward(self, samples: int) -> None:
        self.batch_samples = samples
        self._counts.clear()
        self._hidden_now.clear()
        self._gru_steps.clear()
        self._merged_now.clear()
        self._graph_ptr = 0
        self._lstm_ptr = self._lstm_calls = 0
        self.module_stack.clear()

    # -- provenance ---------------------------------------------------------------
    def tag(self, name: str, args: tuple[Any, ...], out: Any, kwargs: dict[str, Any] | None = None) -> None:
        """Attach the unit tag that ``name(*args)`` gives its output(s) (:mod:`actaudit.unitaxis`)."""
        kwargs = kwargs or {}
        outs = _tensors_of(out)
        if not outs:
            return
        if name in _MULS and len(args) >= 2:
            self._mul(args, outs[0])
        if self.param_owner:
            self._own(name, args, outs)
        if name in PRODUCERS or name in RECURRENT_PRODUCERS:
            origin = PRODUCERS.get(name, LINEAR)
            for t in outs if name in RECURRENT_PRODUCERS else outs[:1]:
                tag = ua.produced(origin, t.ndim)
                if tag is not None:
                    self.tags[t] = tag
            self._consumed(name, args)
            return
        src = next((a for a in _tensors_of(list(args)) if a in self.tags or a in self.pending_out), None)
        if src is None:
            return
        for t in outs:
            tag = _follow(name, args, kwargs, src, self.tags.get(src), t)
            if tag is not None:
                self.tags[t] = tag
        key = self.pending_out.get(src)
        if key is not None and (name in CARRIERS or name in SAME_AXES or name in SPATIAL):
            for t in outs:
                if t.ndim == src.ndim:
                    self.pending_out[t] = key

    def _own(self, name: str, args: tuple[Any, ...], outs: list[torch.Tensor]) -> None:
        # An op's own weights name it; otherwise its input's owner carries through.
        tensors = _tensors_of(list(args))
        owner = next(
            (self.param_owner[a.data_ptr()] for a in tensors if a.data_ptr() in self.param_owner), None
        )
        if owner is None:
            owner = next((self.owners[a] for a in tensors if a in self.owners), None)
        if owner is not None:
            for t in outs:
                self.owners[t] = owner

    def _consumed(self, name: str, args: tuple[Any, ...]) -> None:
        """The consumer decides a pending site's axis: a Conv input is [N, C, ...], a Linear's [..., F]."""
        if not self.pending_out or not args or not isinstance(args[0], torch.Tensor):
            return
        key = self.pending_out.get(args[0])
        site = self.sites.get(key) if key is not None else None
        if site is None or site.decided is not None:
            return
        rank = args[0].ndim
        origin = PRODUCERS.get(name)
        axis = 1 if origin == CONV else rank - 1 if origin == LINEAR else None
        if axis is not None and 1 <= axis < rank:
            site.decided = axis

    def track_softsign(self, name: str, args: tuple[Any, ...], out: Any) -> None:
        if not isinstance(out, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
            return
        if name == "abs" and args[0].is_floating_point():
            self._abs_of[out] = args[0]
        elif name == "add" and args[0] in self._abs_of and len(args) > 1 and _is_one(args[1]):
            self._one_plus_abs_of[out] = self._abs_of[args[0]]

    def is_softsign(self, args: tuple[Any, ...]) -> bool:
        return (
            len(args) == 2
            and isinstance(args[1], torch.Tensor)
            and args[1] in self._one_plus_abs_of
            and self._one_plus_abs_of[args[1]] is args[0]
        )

    # -- observation ----------------------------------------------------------------
    def observe(
        self,
        base: str,
        module: str,
        op: str,
        act: Activation,
        weight: Any,
        x: torch.Tensor,
        merge: bool = False,
    ) -> tuple[str, int] | None:
        """Reduce one call; returns the site's key while its axis waits for a consumer to decide it.

        ``merge``: every call in a forward is the same site (a recurrent gate, once per time step);
        the batch's samples count once.
        """
        if merge:
            k = 0
            samples = 0 if base in self._merged_now else self.batch_samples
            self._merged_now.add(base)
        else:
            k = self._counts[base]
            self._counts[base] = k + 1
            samples = self.batch_samples
        key = (base, k)
        site = self.sites.get(key)
        if site is None:
            axis, source = self._axis(base, k, x)
            units = 1 if axis >= x.ndim else int(x.shape[axis])
            info = SiteInfo(
                name=base,
                op=op,
                kind=act.kind,
                params=dict(act.params),
                unit_axis=axis,
                units=units,
                sample_shape=tuple(int(d) for d in x.shape[1:]),
                module=module,
                unit_axis_source=source,
            )
            if act.kind == "prelu" and isinstance(weight, torch.Tensor):
                info.unit_slopes = [float(w) for w in weight.detach().flatten().cpu()]
            site = _Site(info, act.thresholds(self.f), _Acc(units, x.device), base, k)
            self.sites[key] = site
            if (source == ua.GUESSED or act.kind == "sigmoid") and not merge:
                # Hold this first call until the forward ends: a consumer may still decide the
                # axis, and a sigmoid multiplied by its own input is a SiLU (x·σ(x), x·σ(βx)).
                site.held = (x.detach().clone(), self.batch_samples)
                self.last_site = f"{base}#{k}"
                self.last_key = key  # the output heads are traced from this call too
                return key
        self.last_site = f"{base}#{k}"
        self.last_key = key
        if site.broken:
            return None
        self._add(site, x.detach(), samples)
        return None

    def _add(self, site: _Site, x: torch.Tensor, samples: int) -> None:
        info = site.info
        if info.unit_axis_source == ua.WHOLE:
            site.acc.add(x, x.ndim, site.thr, samples)  # one unit at any rank
            return
        axis = info.unit_axis
        if samples == 1 and tuple(x.shape) == info.sample_shape and x.ndim == len(info.sample_shape):
            x = x.unsqueeze(0)  # a batch of 1 whose batch axis the model squeezed away (x.squeeze())
        if axis >= x.ndim or int(x.shape[axis]) != info.units:
            site.broken = f"its unit count changed between batches (shape {tuple(x.shape)}, axis {axis})"
            return
        site.acc.add(x, axis, site.thr, samples)

    def end_forward(self) -> None:
        """Settle the sites whose axis waited for a consumer (the first batch only)."""
        for site in self.sites.values():
            if site.held is None:
                continue
            x, samples = site.held
            site.held = None
            info = site.info
            if site.decided is not None:
                info.unit_axis, info.unit_axis_source = site.decided, ua.CONSUMER
            if site.swish is not None:
                info.kind, info.op = "silu", f"{info.op}*mul"
                info.params = {"beta": site.swish} if site.swish != 1.0 else {}
                site.thr = Activation(info.kind, dict(info.params)).thresholds(self.f)
            info.units = 1 if info.unit_axis >= x.ndim else int(x.shape[info.unit_axis])
            site.acc = _Acc(info.units, x.device)
            self._add(site, x, samples)
        self.pending_out = WeakIdKeyDictionary()
        self.sigmoid_out = WeakIdKeyDictionary()

    def mark_output(self, key: tuple[str, int], x: Any, out: Any) -> None:
        """Follow a held site's output: to the consumer that decides its axis, or to a Mul by its input."""
        site = self.sites.get(key)
        if site is None or not isinstance(out, torch.Tensor):
            return
        if site.info.unit_axis_source == ua.GUESSED:
            self.pending_out[out] = key
        if site.info.kind == "sigmoid":
            self.sigmoid_out[out] = (key, x)

    def _mul(self, args: tuple[Any, ...], out: torch.Tensor) -> None:
        """``x * sigmoid(x)`` (or ``x * sigmoid(β·x)``, β a positive constant): the sigmoid site is a SiLU."""
        a, b = args[0], args[1]
        for t, c in ((a, b), (b, a)):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                beta = _scalar_value(c)
                if beta is not None:
                    self.scaled_of[out] = (t, beta)
        if not self.sigmoid_out:
            return
        for g, other in ((a, b), (b, a)):
            if not isinstance(g, torch.Tensor) or g not in self.sigmoid_out:
                continue
            key, z = self.sigmoid_out[g]
            site = self.sites.get(key)
            if site is None or site.held is None:
                continue
            if other is z:
                site.swish = 1.0
            elif isinstance(other, torch.Tensor) and z in self.scaled_of and self.scaled_of[z][0] is other:
                beta = self.scaled_of[z][1]
                if beta > 0:
                    site.swish = beta

    def _axis(self, base: str, k: int, x: torch.Tensor) -> tuple[int, str]:
        """(unit axis, source); an axis equal to the rank means the whole activation is one unit."""
        names = (base, f"{base}#{k}")
        for o in self.overrides:
            if any(fnmatch.fnmatchcase(n, o.glob) for n in names):
                axis = o.axis if o.axis >= 0 else x.ndim + o.axis
                if not 0 <= axis < max(x.ndim, 1):
                    # Kept for run_capture: TorchScript turns an exception raised in the mode into a bare RuntimeError.
                    self.option_error = o.out_of_range(base, tuple(x.shape))
                    raise self.option_error
                return axis, ua.OVERRIDE
        found, source = ua.resolve(self.tags.get(x), x.ndim)
        return (x.ndim if found is None else found), source

    def graph_base(self, name: str, x: Any = None) -> tuple[str, str, str]:
        """(base name, module path, op label) for the next executed candidate op of a graph.

        Greedy alignment in graph order; ops the graph does not list (inside composite ops)
        keep a generic name and do not move the pointer. Among the sites a branch makes
        possible, the one nearest to the module whose weights produced ``x`` wins: two arms
        of an ``If`` with the same ops (silero-vad's ``_model`` and ``_model_8k``) are told
        apart by what ran, not by which comes first in the graph.
        """
        gs = self.graph_sites or []
        c = canon(name)
        gru = self._gru_gate(c, x)
        if gru is not None:
            return gru
        j = self._graph_ptr
        found: list[int] = []
        while j < len(gs):
            if canon(gs[j].op) == c and gs[j].gate != FUSED:
                found.append(j)
                if not gs[j].optional:
                    break
            elif not gs[j].optional:
                break
            j += 1  # a branch that may not have run
        if found:
            owner = self.owners.get(x) if isinstance(x, torch.Tensor) else None
            pick = found[0]
            if owner is not None and len(found) > 1:
                pick = max(found, key=lambda i: (_shared_prefix(gs[i].module, owner), -i))
            self._graph_ptr = pick + 1
            g = gs[pick]
            return g.base_name, g.module, f"aten::{g.op}"
        self.unmatched_graph_ops += 1
        return c, "", f"aten::{name}"

    # -- results --------------------------------------------------------------------
    def results(self) -> tuple[list[SiteResult], list[Uncovered]]:
        out, uncovered = [], []
        names = site_names(base for base, _ in self.sites)  # keys hold k = 0, 1, … per base in order
        for ((base, k), site), name in zip(self.sites.items(), names, strict=True):
            site.info.name = name
            site.info.model_output = (base, k) in self.output_sites
            if site.broken:
                uncovered.append(Uncovered(site.info.name, site.info.op, site.broken))
                continue
            out.append(SiteResult(site.info, site.acc.to_stats()))
        for g in self.graph_sites or []:
            if g.gate == FUSED and g.op == "lstm" and (g.module or "lstm") in self.lstm_done:
                continue
            if g.gate == FUSED and g.op == "gru" and g.module in self.gru_done:
                continue
            if g.gate == FUSED and (g.module or g.op) in self.lstm_failed:
                name = g.module or g.op
                reason = f"its gates were not audited: {self.lstm_failed[name]}"
                self.extra_uncovered.setdefault(name, Uncovered(name, f"aten::{g.op}", reason))
                continue
            if g.gate == FUSED:
                name = g.module or g.op
                reason = (
                    f"its gates run inside aten::{g.op}, which the compiled graph does not list one by one"
                    + (
                        " (on CPU one fused oneDNN op that no capture sees)"
                        if g.op == "lstm"
                        else "; they are reported by op (sigmoid#k, tanh#k), not by gate"
                    )
                    + "; audit the eager module (state_dict + --arch) for one site per gate"
                )
                self.extra_uncovered.setdefault(name, Uncovered(name, f"aten::{g.op}", reason))
        for op, n in self.hidden_ops.items():
            for k in range(n):
                name = op.lstrip("_") + (f"#{k}" if n > 1 else "")
                reason = f"{_HIDDEN_ACTIVATIONS[op]}: its pre-activation is never a tensor"
                self.extra_uncovered.setdefault(name, Uncovered(name, f"aten::{op}", reason))
        return out, [*uncovered, *self.extra_uncovered.values()]

    def _gru_gate(self, c: str, x: Any) -> tuple[str, str, str] | None:
        """A gate of a compiled aten::gru, which runs as visible ops: named by the GRU weights that
        produced its input (``gru.weight_hh_l1_reverse`` → layer 1, reverse) and its place in the
        cycle reset, update, new of each step."""
        if c not in ("sigmoid", "tanh") or not isinstance(x, torch.Tensor) or x not in self.owners:
            return None
        owner = str(self.owners[x])
        module, _, param = owner.rpartition(".")
        m = re.match(r"(?:weight|bias)_(?:ih|hh)_(l\d+(?:_reverse)?)$", param)
        fused = {g.module for g in self.graph_sites or [] if g.gate == FUSED and g.op == "gru"}
        if m is None or module not in fused:
            return None
        label = f"{module}.{m.group(1)}"
        k = self._gru_steps[label]
        gate, kind = GRU_GATES[k % 3]
        if kind != c:
            return None
        self._gru_steps[label] = k + 1
        self.gru_done.add(module)
        return f"{label}.{gate}", module, f"aten::gru.{gate}"

    def hidden_activation(self, name: str) -> None:
        """A fused op ran whose activation no capture sees: listed in ``uncovered``, never dropped."""
        self._hidden_now[name] += 1
        self.hidden_ops[name] = max(self.hidden_ops.get(name, 0), self._hidden_now[name])

    def fused_lstm_layer(self, args: tuple[Any, ...], output: Any) -> None:
        """One layer and direction of a compiled graph's aten::lstm, which oneDNN runs as one op."""
        entries = [g for g in self.graph_sites or [] if g.gate == FUSED and g.op == "lstm"]
        if self._lstm_ptr >= len(entries):
            return  # an LSTM the graph does not list: nothing to name it after
        entry = entries[self._lstm_ptr]
        path = entry.module or "lstm"
        try:
            gates, reverse, layers, dirs = mkldnn_layer_gates(args, output)
        except Unsupported as e:
            self.lstm_failed[path] = str(e)
            return
        layer = self._lstm_calls // dirs
        self._lstm_calls += 1
        if self._lstm_calls >= layers * dirs:
            self._lstm_ptr, self._lstm_calls = self._lstm_ptr + 1, 0
        self.lstm_done.add(path)
        label = f"l{layer}" + ("_reverse" if reverse else "")
        for g in gates:
            self.tags[g.x] = ua.Tag(g.x.ndim - 1, LINEAR)
            self.observe(
                f"{path}.{label}.{g.suffix}", path, f"aten::lstm.{g.suffix}", Activation(g.kind), None, g.x
            )

    def recurrent_call(self, path: str, module: Any, args: tuple[Any, ...], output: Any) -> None:
        """Audit the gates of one call of an eager recurrent module, from its own weights."""
        mtype = type(module).__name__
        self.suspended = True
        try:
            for t in _tensors_of(output):
                tag = ua.produced(LINEAR, t.ndim)
                if tag is not None:
                    self.tags[t] = tag
            if path in self.extra_uncovered:
                return
            try:
                with torch.no_grad():
                    gates = gates_of(module, args, output)
            except Unsupported as e:
                self.extra_uncovered[path] = Uncovered(
                    path or mtype, f"nn.{mtype}", f"its gates were not audited: {e}"
                )
                return
            for g in gates:
                if g.x.ndim >= 2:
                    self.tags[g.x] = ua.Tag(g.x.ndim - 1, LINEAR)
                base = f"{path}.{g.suffix}" if path else g.suffix
                self.observe(
                    base, path, f"nn.{mtype}.{g.suffix.rsplit('.', 1)[-1]}", Activation(g.kind), None, g.x
                )
        finally:
            self.suspended = False


# Fused ops that run an activation inside them, where no capture can see its pre-activation.
_HIDDEN_ACTIVATIONS = {
    "_transformer_encoder_layer_fwd": "the feed-forward ReLU/GELU of a TransformerEncoderLayer's fast path",
    "_addmm_activation": "a ReLU/GELU fused into addmm",
    "_thnn_fused_lstm_cell": "LSTM cell gates fused into one kernel",
    "_thnn_fused_gru_cell": "GRU cell gates fused into one kernel",
}
_MULS = frozenset(["mul", "mul_", "__mul__", "__rmul__", "__imul__"])


def _scalar_value(c: Any) -> float | None:
    """A Python number or a one-element tensor that is not a graph activation (a constant)."""
    if isinstance(c, bool):
        return None
    if isinstance(c, (int, float)):
        return float(c)
    if isinstance(c, torch.Tensor) and c.numel() == 1 and c.ndim == 0:
        return float(c.item())
    return None


def _shared_prefix(a: str, b: str) -> int:
    """How many leading dotted components two module paths share."""
    n = 0
    for p, q in zip(a.split("."), b.split("."), strict=False):
        if p != q:
            break
        n += 1
    return n


def _is_one(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.numel() == 1 and float(x.item()) == 1.0
    return isinstance(x, (int, float)) and float(x) == 1.0


def _tensors_of(x: Any) -> list[torch.Tensor]:
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


def _follow(
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
            return _getitem_tag(tag, src.ndim, args[1] if len(args) > 1 else None, out.ndim)
    except (TypeError, ValueError, IndexError):
        return None
    return None


def _getitem_tag(tag: ua.Tag, rank: int, index: Any, out_rank: int) -> ua.Tag | None:
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


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    x = args[0] if args else kwargs.get("input", kwargs.get("self"))
    return x if isinstance(x, torch.Tensor) and x.is_floating_point() else None


class FunctionCapture(TorchFunctionMode):
    """Eager capture: activation calls attributed to the innermost running module."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if self.rec.suspended:
            return func(*args, **kwargs)
        name = op_name(func)
        observed = None
        pending = None
        if name in _HIDDEN_ACTIVATIONS:
            self.rec.hidden_activation(name)
        if name in CANDIDATES:
            found = activation_of(name, args, kwargs)
            x = _first_tensor(args, kwargs)
            if found is not None and x is not None:
                act, weight = found
                path, mtype = self.rec.module_stack[-1] if self.rec.module_stack else ("", "")
                if path and mtype in ACTIVATION_MODULES:
                    base, op = path, f"nn.{mtype}"
                else:
                    label = name.rstrip("_")
                    base, op = (f"{path}/{label}" if path else label), name
                pending = self.rec.observe(base, path, op, act, weight, x)
                observed = self.rec.last_key
        out = func(*args, **kwargs)
        self.rec.tag(name, args, out, kwargs)
        if pending is not None and isinstance(out, torch.Tensor):
            self.rec.mark_output(pending, x, out)
        self.rec.origins.after(name, args, out, observed)
        return out


class DispatchCapture(TorchDispatchMode):
    """Graph capture: ATen activation ops inside TorchScript / torch.export programs."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        return self._dispatch(func, args, kwargs or {})

    def _dispatch(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        name = op_name(func)
        observed = None
        pending = None
        if name in _HIDDEN_ACTIVATIONS:
            self.rec.hidden_activation(name)
        if name in CANDIDATES:
            x = _first_tensor(args, kwargs)
            base, module, label = self.rec.graph_base(name, x)
            found = activation_of(name, args, kwargs)
            if found is not None and x is not None:
                act, weight = found
                merge = label.startswith("aten::gru.")
                pending = self.rec.observe(base, module, label, act, weight, x, merge=merge)
                observed = self.rec.last_key
        elif name == "div" and self.rec.is_softsign(args):
            x = args[0]
            base, module, label = self.rec.graph_base("softsign", x)
            pending = self.rec.observe(base, module, label, Activation("softsign"), None, x)
            observed = self.rec.last_key
        out = func(*args, **kwargs)
        if name == "mkldnn_rnn_layer":
            self.rec.fused_lstm_layer(args, out)
        self.rec.tag(name, args, out, kwargs)
        if pending is not None and isinstance(out, torch.Tensor):
            self.rec.mark_output(pending, x, out)
        self.rec.origins.after(name, args, out, observed)
        if name in ("abs", "add"):
            self.rec.track_softsign(name, args, out)
        return out


# -- graph site lists ------------------------------------------------------------------
_HIER_RE = re.compile(r"([^.()]*)\(([^()]*)\)")


FUSED = "<fused>"
# The candidate ops a recurrent cell's ATen decomposition runs, in order, with their gates.
_CELL_OPS = {
    "lstm_cell": [
        ("sigmoid_", "input_gate"),
        ("sigmoid_", "forget_gate"),
        ("tanh_", "cell_gate"),
        ("sigmoid_", "output_gate"),
        ("tanh", "cell_tanh"),
    ],
    "gru_cell": [("sigmoid_", "reset_gate"), ("sigmoid_", "update_gate"), ("tanh_", "new_gate")],
}
_FUSED_RNN = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def _recurrent_sites(op: str, path: str, mtype: str, optional: bool) -> list[GraphSite]:
    """A recurrent node of a compiled graph as graph sites: one per gate, or one FUSED marker."""
    if op in _CELL_OPS:
        return [GraphSite(o, path, mtype, optional, gate) for o, gate in _CELL_OPS[op]]
    return [GraphSite(op, path, mtype, True, FUSED)]


def torchscript_graph_sites(module: Any) -> list[GraphSite]:
    """The capture's site list: activation sites plus recurrent nodes (per gate, or FUSED markers)."""
    graph = module.graph.copy()
    torch._C._jit_pass_inline(graph)
    return [site for site, _ in torchscript_site_nodes(graph, module, recurrent=True)]


def torchscript_site_nodes(
    graph: Any, module: Any, recurrent: bool = False
) -> list[tuple[GraphSite, list[Any]]]:
    """Sites of an inlined TorchScript graph in graph order, each with its node(s): a site
    compiled as ``if inplace: relu_ else: relu`` has one node per branch. ``recurrent`` adds
    the recurrent nodes' gate sites (the capture's list; rewriting never sees them)."""
    sites = _block_sites(graph, optional=False, recurrent=recurrent)
    try:
        paths = {
            name: str(getattr(mod, "original_name", type(mod).__name__))
            for name, mod in module.named_modules()
            if name
        }
    except Exception:
        return sites
    return [
        (GraphSite(g.op, _full_path(g.module, g.module_type, paths), g.module_type, g.optional, g.gate), n)
        for g, n in sites
    ]


def _full_path(path: str, mtype: str, paths: dict[str, str]) -> str:
    """TorchScript drops a ModuleList's own name from loop-unrolled calls (``0.act`` for
    ``layers.0.act``): restore it where exactly one module path of that class ends that way."""
    if not path or path in paths:
        return path
    matches = [p for p, t in paths.items() if p.endswith("." + path) and (not mtype or t == mtype)]
    return matches[0] if len(matches) == 1 else path


def _block_sites(block: Any, optional: bool, recurrent: bool = False) -> list[tuple[GraphSite, list[Any]]]:
    sites: list[tuple[GraphSite, list[Any]]] = []
    for node in block.nodes():
        kind = node.kind()
        if recurrent and kind.startswith("aten::") and kind[6:] in (*_CELL_OPS, *_FUSED_RNN):
            path, mtype = _parse_hierarchy(node)
            sites.extend((g, [node]) for g in _recurrent_sites(kind[6:], path, mtype, optional))
            continue
        if kind == "aten::div" and _ts_is_softsign(node):
            path, mtype = _parse_hierarchy(node)
            sites.append((GraphSite("softsign", path, mtype, optional), [node]))
            continue
        if kind.startswith("aten::"):
            op = kind.split("::", 1)[1]
            if canon(op) in CANON_CANDIDATES:
                path, mtype = _parse_hierarchy(node)
                sites.append((GraphSite(op, path, mtype, optional), [node]))
            continue
        branches = [_block_sites(b, optional=True, recurrent=recurrent) for b in node.blocks()]
        if kind == "prim::If" and len(branches) == 2:
            a, b = ([(canon(g.op), g.module) for g, _ in br] for br in branches)
            if a == b:
                # F.relu(x, inplace) compiles to `if inplace: relu_ else: relu`: one site either way.
                sites.extend(
                    (GraphSite(g.op, g.module, g.module_type, optional, g.gate), [*na, *nb])
                    for (g, na), (_, nb) in zip(branches[0], branches[1], strict=True)
                )
                continue
        for br in branches:
            sites.extend(br)
    return sites


def _ts_is_softsign(div: Any) -> bool:
    """``x / (1 + |x|)`` in a TorchScript graph."""
    try:
        x, den = list(div.inputs())[:2]
        add = den.node()
        if add.kind() != "aten::add":
            return False
        a, one = list(add.inputs())[:2]
        ab = a.node()
        return bool(ab.kind() == "aten::abs" and next(ab.inputs()) is x and one.toIValue() == 1)
    except Exception:
        return False


def _fx_is_softsign(node: Any) -> bool:
    """``x / (1 + |x|)`` in a torch.export graph."""
    if op_name(node.target) != "div" or len(node.args) != 2:
        return False
    x, den = node.args
    if getattr(den, "op", None) != "call_function" or op_name(den.target) != "add" or len(den.args) < 2:
        return False
    a, one = den.args[:2]
    return bool(
        getattr(a, "op", None) == "call_function"
        and op_name(a.target) == "abs"
        and a.args[0] is x
        and one == 1
    )


def _parse_hierarchy(node: Any) -> tuple[str, str]:
    try:
        text = node.getModuleHierarchy()
    except Exception:  # older torch: no hierarchy on nodes
        return "", ""
    parts = [(n, t) for n, t in _HIER_RE.findall(text) if n and n != "UNKNOWN_INSTANCE"]
    if not parts:
        return "", ""
    return ".".join(n for n, _ in parts), parts[-1][1]


def export_site_nodes(gm: Any) -> list[tuple[GraphSite, Any]]:
    """Activation-candidate nodes of a torch.export graph with their sites, in graph order."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        op = "softsign" if _fx_is_softsign(node) else op_name(node.target)
        if canon(op) not in CANON_CANDIDATES:
            continue
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        if stack:
            path, type_str = stack[-1]
            path = re.sub(r"@\d+$", "", str(path))
            mtype = str(type_str).rsplit(".", 1)[-1]
        else:
            path, mtype = "", ""
        out.append((GraphSite(op, path, mtype), node))
    return out


def export_graph_sites(gm: Any) -> list[GraphSite]:
    by_node = {id(node): site for site, node in export_site_nodes(gm)}
    out: list[GraphSite] = []
    for node in gm.graph.nodes:
        if id(node) in by_node:
            out.append(by_node[id(node)])
            continue
        op = op_name(node.target) if node.op == "call_function" else ""
        if op in _CELL_OPS or op in _FUSED_RNN:
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            path, mtype = (
                (re.sub(r"@\d+$", "", str(stack[-1][0])), str(stack[-1][1]).rsplit(".", 1)[-1])
                if stack
                else ("", "")
            )
            out.extend(_recurrent_sites(op, path, mtype, False))
    return out


# -- the run loop --------------------------------------------------------------------
def run_capture(
    call: Callable[..., Any],
    batches: Iterable[tuple[list[Any], dict[str, Any]]],
    *,
    eager_model: torch.nn.Module | None,
    graph_sites: list[GraphSite] | None,
    stuck_fraction: float,
    axis_overrides: list[AxisOverride],
    progress: Callable[[int], None] | None = None,
) -> Capture:
    rec = Recorder(stuck_fraction, axis_overrides, graph_sites)
    if graph_sites is not None:
        rec.param_owner = _param_owners(call)
    hooks = []
    if eager_model is not None:
        for path, mod in eager_model.named_modules():
            mtype = type(mod).__name__
            hooks.append(mod.register_forward_pre_hook(_push(rec, path, mtype)))
            hooks.append(mod.register_forward_hook(_pop(rec), always_call=True))
            if mtype in RECURRENT_TYPES and isinstance(mod, (torch.nn.RNNBase, torch.nn.RNNCellBase)):
                hooks.append(mod.register_forward_hook(_recurrent(rec, path)))
    samples = n_batches = 0
    restore_sigint = _watch_sigint(rec)
    try:
        for i, (args, kwargs) in enumerate(batches):
            n = _samples_of(args, kwargs)
            rec.begin_forward(n)
            mode: Any = FunctionCapture(rec) if eager_model is not None else DispatchCapture(rec)
            try:
                with torch.no_grad(), mode:
                    result = call(*args, **kwargs)
                if i == 0:
                    rec.output_sites = rec.origins.sites_of(result)
                del result
                rec.end_forward()
            except (InputError, KeyboardInterrupt):
                raise
            except Exception as e:
                if rec.option_error is not None:
                    raise rec.option_error from None
                if rec.interrupted or "KeyboardInterrupt" in str(e):
                    # Ctrl-C inside a TorchScript or dispatch-mode call arrives wrapped in a RuntimeError.
                    raise KeyboardInterrupt from None
                if "Traceback of TorchScript" in str(e):
                    e = _plain_error(call, args, kwargs) or e
                err = _run_error(e, i, samples, n, rec.last_site, _shapes(args, kwargs))
                if rec.last_site is None and err.hint is None:
                    err.hint = _data_hint(err.message, args, kwargs)
                raise err from None
            samples += n
            n_batches += 1
            if progress is not None:
                progress(n)
    finally:
        for h in hooks:
            h.remove()
        restore_sigint()
    if n_batches == 0:
        raise CalibrationError("the calibration data yielded no batches")
    sites, uncovered = rec.results()
    cap = Capture(sites=sites, samples=samples, batches=n_batches, uncovered=uncovered)
    guessed = ua.guessed_warning([r.info.name for r in sites if r.info.unit_axis_source == ua.GUESSED])
    if guessed:
        cap.warnings.append(guessed)
    if graph_sites is not None and rec.unmatched_graph_ops:
        cap.warnings.append(
            f"{rec.unmatched_graph_ops} activation op call(s) ran inside composite ops or control flow that the "
            "graph does not list one by one; they are named by op (e.g. sigmoid#3) instead of by module"
        )
    return cap


def _param_owners(module: Any) -> dict[int, str]:
    """Storage address of each parameter and buffer → its full name (``encoder.0.conv.weight``)."""
    owners: dict[int, str] = {}
    try:
        named = [*module.named_parameters(), *module.named_buffers()]
    except Exception:
        return owners
    for name, t in named:
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            owners.setdefault(t.data_ptr(), name)
    return owners


def _watch_sigint(rec: Recorder) -> Callable[[], None]:
    """Note Ctrl-C as it arrives: TorchScript rethrows it as a RuntimeError without a message."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        rec.interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore


def _push(rec: Recorder, path: str, mtype: str) -> Callable[..., None]:
    def hook(module: Any, args: Any) -> None:
        rec.module_stack.append((path, mtype))

    return hook


def _recurrent(rec: Recorder, path: str) -> Callable[..., None]:
    def hook(module: Any, args: Any, out: Any) -> None:
        rec.recurrent_call(path, module, tuple(args), out)

    return hook


def _pop(rec: Recorder) -> Callable[..., None]:
    def hook(module: Any, args: Any, out: Any) -> None:
        if rec.module_stack:
            rec.module_stack.pop()

    return hook


def _samples_of(args: list[Any], kwargs: dict[str, Any]) -> int:
    for x in [*args, *kwargs.values()]:
        if isinstance(x, torch.Tensor) and x.ndim > 0:
            return int(x.shape[0])
    return 1


def _plain_error(call: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Exception | None:
    """The same batch without the capture mode: TorchScript then keeps its error message."""
    try:
        with torch.no_grad():
            call(*args, **kwargs)
    except Exception as e:
        return e
    return None


def _shapes(args: list[Any], kwargs: dict[str, Any]) -> str:
    parts = [str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor)]
    parts += [f"{k}={tuple(v.shape)}" for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    return ", ".join(parts)


def _data_hint(message: str, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """A layout or dtype fix for an error raised before the first activation (the data did not fit)."""
    from ...hints import dtype_hint, move_axis_hint

    tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
    if not tensors:
        return None
    shape = tuple(int(d) for d in tensors[0].shape)
    conv = re.search(r"expected input\[[\d, ]+\] to have (\d+) channels", message)
    guard = re.search(r"size\(\)\[(\d+)\] == (\d+)", message)
    fix = None
    if conv:
        fix = move_axis_hint(shape, 1, int(conv.group(1)))
    elif guard:
        fix = move_axis_hint(shape, int(guard.group(1)), int(guard.group(2)))
    return fix or dtype_hint(message, [str(t.dtype).removeprefix("torch.") for t in tensors])


def _run_error(
    e: Exception, batch: int, start: int, n: int, site: str | None, shapes: str = ""
) -> ModelRunError:
    text = str(e)
    if "Traceback of TorchScript" in text:
        # Keep the interpreter's final "Error: message" line, not its serialized-code trace.
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
        if text.endswith(":"):
            text = "the TorchScript interpreter gave no message (often a shape or dtype mismatch)"
    msg = " ".join(text.split()) or type(e).__name__
    if len(msg) > 300:
        msg = msg[:300] + " …"
    where = f"batch {batch} (samples {start}–{start + n - 1}" + (f"; inputs {shapes})" if shapes else ")")
    after = f", after site {site}" if site else ", before any activation"
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg.lower():
        return ModelRunError(f"ran out of memory on {where}{after}", hint="lower --batch-size")
    return ModelRunError(f"the model raised {type(e).__name__} on {where}{after}: {msg}")
