"""The per-unit statistics kernel: each activation call reduced at once to a few vectors on its device.

:class:`DispatchCapture` feeds it from the ATen ops of compiled graphs (TorchScript and
``torch.export`` programs); the eager capture mode lives in :mod:`.capture`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ...kinds import Activation, Thresholds
from ...stats import SiteStats
from . import native
from .fused import hidden_reason
from .ops import CANDIDATES, activation_of, first_tensor, op_name

if TYPE_CHECKING:
    from .heads import OutputOrigins

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


# The compiled one-pass kernel (.native) reads these; other dtypes take the ATen path below.
_NATIVE_DTYPES = {torch.float32: 0, torch.float64: 1}


def _native_kernel() -> native.KernelFn | None:
    """The compiled kernel, or None when it cannot build or load (tests switch paths here)."""
    return native.kernel()


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
        self._ptrs: tuple[int, int, int, int] | None = None  # for the compiled kernel; updates are in place

    def add(self, x: torch.Tensor, axis: int, thr: Thresholds, samples: int) -> None:
        v = unit_view(x, axis)
        a, u, b = (int(d) for d in v.shape)
        self.samples += samples
        if v.numel() == 0:
            return
        if v.dtype in _NATIVE_DTYPES and _host_kernel(v.device):
            fn = _native_kernel()
            if fn is not None:
                self._add_native(fn, v, thr)
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

    def _add_native(self, fn: native.KernelFn, v: torch.Tensor, thr: Thresholds) -> None:
        """One pass of the compiled kernel over ``[A, U, B]``, added into the same accumulators."""
        a, u, b = (int(d) for d in v.shape)
        if self._ptrs is None:
            self._ptrs = (
                self.sums.data_ptr(),
                self.nonfinite.data_ptr(),
                self.min.data_ptr(),
                self.max.data_ptr(),
            )
        rc = fn(
            v.data_ptr(),
            _NATIVE_DTYPES[v.dtype],
            a,
            u,
            b,
            thr.low,
            thr.high,
            *self._ptrs,
            torch.get_num_threads(),
        )
        if rc != 0:
            raise MemoryError("the statistics kernel could not allocate its per-thread partials")
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


class Observer(Protocol):
    """What a capture mode asks of the site bookkeeping (:class:`.sites.Recorder`)."""

    last_key: tuple[str, int] | None
    origins: OutputOrigins

    def hidden_activation(self, name: str) -> None: ...
    def graph_base(self, name: str, x: torch.Tensor | None = None) -> tuple[str, str, str]: ...
    @property
    def observe(self) -> Callable[..., tuple[str, int] | None]: ...  # see Recorder.observe
    def is_softsign(self, args: tuple[Any, ...]) -> bool: ...
    def fused_lstm_layer(self, args: tuple[Any, ...], output: object) -> None: ...
    def fused_encoder_layer(self, args: tuple[Any, ...], output: Any) -> None: ...
    def glu_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], graph: bool
    ) -> tuple[Any, Any, Any]: ...
    def tag(
        self, name: str, args: tuple[Any, ...], out: object, kwargs: dict[str, Any] | None = None
    ) -> None: ...
    def mark_output(self, key: tuple[str, int], x: torch.Tensor | None, out: object) -> None: ...
    def track_softsign(self, name: str, args: tuple[Any, ...], out: object) -> None: ...


# ATen overload -> op name, filled as ops run (a few hundred distinct overloads at most).
_OP_NAMES: dict[torch._ops.OpOverload, str] = {}


class DispatchCapture(TorchDispatchMode):
    """Graph capture: ATen activation ops inside TorchScript / torch.export programs."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode.__init_subclass__ (torch 2.13) wraps __torch_dispatch__ in
        # torch._disable_dynamo when this is True: the first dispatch then imports torch._dynamo
        # (~1.15 s, more than importing torch) and every call pays the wrapper. Nothing here runs
        # under torch.compile, so there is nothing for dynamo to skip.
        return False

    def __init__(self, rec: Observer) -> None:
        super().__init__()
        self.rec = rec
        # Which sites reach the model's outputs is read after the first batch only: later
        # batches skip that bookkeeping (a mode is made per batch; no sites yet = first batch).
        self.trace_outputs = not getattr(rec, "sites", None)

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Iterable[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> object:
        return self._dispatch(func, args, kwargs or {})

    def _dispatch(self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        name = _OP_NAMES.get(func)
        if name is None:
            name = _OP_NAMES[func] = op_name(func)
        observed = None
        pending = None
        if hidden_reason(name):
            self.rec.hidden_activation(name)
        if name in CANDIDATES:
            x = first_tensor(args, kwargs)
            base, module, label = self.rec.graph_base(name, x)
            found = activation_of(name, args, kwargs)
            if found is not None and x is not None:
                act, weight = found
                merge = label.startswith(("aten::gru.", "aten::rnn_"))
                pending = self.rec.observe(base, module, label, act, weight, x, merge=merge)
                observed = self.rec.last_key
        elif name == "div" and self.rec.is_softsign(args):
            x = args[0]
            base, module, label = self.rec.graph_base("softsign", x)
            pending = self.rec.observe(base, module, label, Activation("softsign"), None, x)
            observed = self.rec.last_key
        elif name == "glu":
            pending, observed, x = self.rec.glu_call(args, kwargs, graph=True)
        out = func(*args, **kwargs)
        if name == "mkldnn_rnn_layer":
            self.rec.fused_lstm_layer(args, out)
        elif name == "_transformer_encoder_layer_fwd":
            self.rec.fused_encoder_layer(args, out)
        self.rec.tag(name, args, out, kwargs)
        if pending is not None and isinstance(out, torch.Tensor):
            self.rec.mark_output(pending, x, out)
        if self.trace_outputs:
            self.rec.origins.after(name, args, out, observed)
        if name in ("abs", "add"):
            self.rec.track_softsign(name, args, out)
        return out
