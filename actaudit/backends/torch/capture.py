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
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

from ...errors import CalibrationError, InputError, ModelRunError
from ...kinds import Activation, Thresholds
from ...stats import AxisOverride, Capture, SiteInfo, SiteResult, SiteStats, Uncovered
from .ops import (
    ACTIVATION_MODULES,
    CANDIDATES,
    CARRIERS,
    CONV,
    LINEAR,
    PRODUCERS,
    RESHAPES,
    activation_of,
    op_name,
)

_CANON = {"relu6": "hardtanh", "selu": "elu", "celu": "elu", "_prelu_kernel": "prelu", "clip": "clamp", "clamp_min": "clamp"}


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

    @property
    def base_name(self) -> str:
        if self.module and self.module_type in ACTIVATION_MODULES:
            return self.module
        op = self.op.rstrip("_") if not self.op.startswith("_") else self.op
        return f"{self.module}/{op}" if self.module else op


class _Acc:
    """Per-unit accumulators of one site, on the model's device."""

    def __init__(self, units: int, device: torch.device) -> None:
        i64 = {"dtype": torch.int64, "device": device}
        f64 = {"dtype": torch.float64, "device": device}
        self.low = torch.zeros(units, **i64)  # type: ignore[arg-type]
        self.high = torch.zeros(units, **i64)  # type: ignore[arg-type]
        self.nonfinite = torch.zeros(units, **i64)  # type: ignore[arg-type]
        self.min = torch.full((units,), math.inf, **f64)  # type: ignore[arg-type]
        self.max = torch.full((units,), -math.inf, **f64)  # type: ignore[arg-type]
        self.neg_sum = torch.zeros(units, **f64)  # type: ignore[arg-type]
        self.neg_sq = torch.zeros(units, **f64)  # type: ignore[arg-type]
        self.pos_sum = torch.zeros(units, **f64)  # type: ignore[arg-type]
        self.pos_sq = torch.zeros(units, **f64)  # type: ignore[arg-type]
        self.elements = 0
        self.samples = 0

    def add(self, x: torch.Tensor, axis: int, thr: Thresholds, samples: int) -> None:
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        dims = [d for d in range(x.ndim) if d != axis]
        neg = x.clamp(max=0)
        pos = x.clamp(min=0)
        neg_sum = neg.sum(dims)
        pos_sum = pos.sum(dims)
        if not bool(torch.isfinite(neg_sum).all() and torch.isfinite(pos_sum).all()):
            self._add_nonfinite(x, dims, thr)
        else:
            self.neg_sum += neg_sum
            self.pos_sum += pos_sum
            self.neg_sq += torch.linalg.vector_norm(neg, 2, dims).double().square()
            self.pos_sq += torch.linalg.vector_norm(pos, 2, dims).double().square()
            torch.minimum(self.min, x.amin(dims), out=self.min)
            torch.maximum(self.max, x.amax(dims), out=self.max)
            if math.isfinite(thr.low):
                self.low += (x <= thr.low).sum(dims)
            if math.isfinite(thr.high):
                self.high += (x >= thr.high).sum(dims)
        self.elements += x.numel() // x.shape[axis]
        self.samples += samples

    def _add_nonfinite(self, x: torch.Tensor, dims: list[int], thr: Thresholds) -> None:
        finite = torch.isfinite(x)
        self.nonfinite += (~finite).sum(dims)
        xc = torch.where(finite, x, torch.zeros((), dtype=x.dtype, device=x.device))
        neg = xc.clamp(max=0)
        pos = xc.clamp(min=0)
        self.neg_sum += neg.sum(dims)
        self.pos_sum += pos.sum(dims)
        self.neg_sq += (neg.double() ** 2).sum(dims)
        self.pos_sq += (pos.double() ** 2).sum(dims)
        inf = torch.full((), math.inf, dtype=x.dtype, device=x.device)
        torch.minimum(self.min, torch.where(finite, x, inf).amin(dims), out=self.min)
        torch.maximum(self.max, torch.where(finite, x, -inf).amax(dims), out=self.max)
        if math.isfinite(thr.low):
            self.low += ((x <= thr.low) & finite).sum(dims)
        if math.isfinite(thr.high):
            self.high += ((x >= thr.high) & finite).sum(dims)

    def to_stats(self) -> SiteStats:
        s = SiteStats(int(self.low.numel()), self.elements, self.samples)
        for name in ("low", "high", "nonfinite", "min", "max", "neg_sum", "neg_sq", "pos_sum", "pos_sq"):
            setattr(s, name, getattr(self, name).cpu().numpy().astype(np.int64 if name in ("low", "high", "nonfinite") else np.float64))
        return s


@dataclass
class _Site:
    info: SiteInfo
    thr: Thresholds
    acc: _Acc
    base: str
    index: int
    broken: str | None = None


def default_axis(tag: str | None, ndim: int) -> int:
    """Unit axis from the op that produced the tensor; by rank when unknown."""
    if tag == CONV:
        return 1
    if tag == LINEAR:
        return ndim - 1
    if ndim <= 2:
        return ndim - 1
    if ndim == 3:
        return 2  # [batch, tokens, features] is the common unknown-producer case
    return 1


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
        self.module_stack: list[tuple[str, str]] = []
        self.batch_samples = 0
        self.last_site: str | None = None
        self.unmatched_graph_ops = 0
        self._counts: dict[str, int] = defaultdict(int)
        self._graph_ptr = 0

    # -- per forward ----------------------------------------------------------------
    def begin_forward(self, samples: int) -> None:
        self.batch_samples = samples
        self._counts.clear()
        self._graph_ptr = 0
        self.module_stack.clear()

    # -- provenance ---------------------------------------------------------------
    def tag(self, name: str, args: tuple[Any, ...], out: Any) -> None:
        t = PRODUCERS.get(name)
        if t is None and (name in CARRIERS or name in RESHAPES):
            src = next((a for a in args if isinstance(a, torch.Tensor) and a in self.tags), None)
            if src is not None:
                t = self.tags[src]
                if name in RESHAPES and isinstance(out, torch.Tensor):
                    t = _reshape_tag(t, src, out)
        if t is None:
            return
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if isinstance(first, torch.Tensor):
            self.tags[first] = t

    # -- observation ----------------------------------------------------------------
    def observe(self, base: str, module: str, op: str, act: Activation, weight: Any, x: torch.Tensor) -> None:
        k = self._counts[base]
        self._counts[base] = k + 1
        key = (base, k)
        site = self.sites.get(key)
        if site is None:
            axis = self._axis(base, k, x)
            units = 1 if x.ndim == 0 else int(x.shape[axis])
            info = SiteInfo(
                name=base,
                op=op,
                kind=act.kind,
                params=dict(act.params),
                unit_axis=axis,
                units=units,
                sample_shape=tuple(int(d) for d in x.shape[1:]),
                module=module,
            )
            if act.kind == "prelu" and isinstance(weight, torch.Tensor):
                info.unit_slopes = [float(w) for w in weight.detach().flatten().cpu()]
            site = _Site(info, act.thresholds(self.f), _Acc(units, x.device), base, k)
            self.sites[key] = site
        self.last_site = f"{base}#{k}"
        if site.broken:
            return
        axis = site.info.unit_axis
        if x.ndim == 0 or axis >= x.ndim or int(x.shape[axis]) != site.info.units:
            site.broken = f"its unit count changed between batches (shape {tuple(x.shape)}, axis {axis})"
            return
        site.acc.add(x.detach(), axis, site.thr, self.batch_samples)

    def _axis(self, base: str, k: int, x: torch.Tensor) -> int:
        names = (base, f"{base}#{k}")
        for o in self.overrides:
            if any(fnmatch.fnmatchcase(n, o.glob) for n in names):
                axis = o.axis if o.axis >= 0 else x.ndim + o.axis
                if not 0 <= axis < max(x.ndim, 1):
                    raise InputError(
                        f"--unit-axis {o.glob}={o.axis}: site {base} has a {x.ndim}-d activation {tuple(x.shape)}"
                    )
                return axis
        return default_axis(self.tags.get(x), x.ndim)

    def graph_base(self, name: str) -> tuple[str, str, str]:
        """(base name, module path, op label) for the next executed candidate op of a graph."""
        gs = self.graph_sites or []
        c = canon(name)
        # Greedy alignment: ops the graph does not list (inside composite ops such as LSTM)
        # keep a generic name and do not move the pointer.
        j = self._graph_ptr
        while j < len(gs):
            if canon(gs[j].op) == c:
                self._graph_ptr = j + 1
                return gs[j].base_name, gs[j].module, f"aten::{gs[j].op}"
            if not gs[j].optional:
                break
            j += 1  # a branch that did not run
        self.unmatched_graph_ops += 1
        return c, "", f"aten::{name}"

    # -- results --------------------------------------------------------------------
    def results(self) -> tuple[list[SiteResult], list[Uncovered]]:
        per_base: dict[str, int] = defaultdict(int)
        for base, _ in self.sites:
            per_base[base] += 1
        out, uncovered = [], []
        for (base, k), site in self.sites.items():
            site.info.name = base if per_base[base] == 1 else f"{base}#{k}"
            if site.broken:
                uncovered.append(Uncovered(site.info.name, site.info.op, site.broken))
                continue
            out.append(SiteResult(site.info, site.acc.to_stats()))
        return out, uncovered


def _reshape_tag(tag: str, src: torch.Tensor, out: torch.Tensor) -> str | None:
    if tag == LINEAR and src.ndim and out.ndim and src.shape[-1] == out.shape[-1]:
        return LINEAR
    if tag == CONV and src.ndim == out.ndim and src.ndim > 1 and src.shape[:2] == out.shape[:2]:
        return CONV
    return None


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    x = args[0] if args else kwargs.get("input", kwargs.get("self"))
    return x if isinstance(x, torch.Tensor) and x.is_floating_point() else None


class FunctionCapture(TorchFunctionMode):
    """Eager capture: activation calls attributed to the innermost running module."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = op_name(func)
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
                self.rec.observe(base, path, op, act, weight, x)
        out = func(*args, **kwargs)
        self.rec.tag(name, args, out)
        return out


class DispatchCapture(TorchDispatchMode):
    """Graph capture: ATen activation ops inside TorchScript / torch.export programs."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = op_name(func)
        if name in CANDIDATES:
            base, module, label = self.rec.graph_base(name)
            found = activation_of(name, args, kwargs)
            x = _first_tensor(args, kwargs)
            if found is not None and x is not None:
                act, weight = found
                self.rec.observe(base, module, label, act, weight, x)
        out = func(*args, **kwargs)
        self.rec.tag(name, args, out)
        return out


# -- graph site lists ------------------------------------------------------------------
_HIER_RE = re.compile(r"([^.()]*)\(([^()]*)\)")


def torchscript_graph_sites(module: Any) -> list[GraphSite]:
    graph = module.graph.copy()
    torch._C._jit_pass_inline(graph)
    return _block_sites(graph, optional=False)


def _block_sites(block: Any, optional: bool) -> list[GraphSite]:
    sites: list[GraphSite] = []
    for node in block.nodes():
        kind = node.kind()
        if kind.startswith("aten::"):
            op = kind.split("::", 1)[1]
            if canon(op) in CANON_CANDIDATES:
                path, mtype = _parse_hierarchy(node)
                sites.append(GraphSite(op, path, mtype, optional))
            continue
        branches = [_block_sites(b, optional=True) for b in node.blocks()]
        if kind == "prim::If" and len(branches) == 2:
            a, b = ([(canon(g.op), g.module) for g in br] for br in branches)
            if a == b:
                # F.relu(x, inplace) compiles to `if inplace: relu_ else: relu`: one site either way.
                sites.extend(GraphSite(g.op, g.module, g.module_type, optional) for g in branches[0])
                continue
        for br in branches:
            sites.extend(br)
    return sites


def _parse_hierarchy(node: Any) -> tuple[str, str]:
    try:
        text = node.getModuleHierarchy()
    except Exception:  # older torch: no hierarchy on nodes
        return "", ""
    parts = [(n, t) for n, t in _HIER_RE.findall(text) if n and n != "UNKNOWN_INSTANCE"]
    if not parts:
        return "", ""
    return ".".join(n for n, _ in parts), parts[-1][1]


def export_graph_sites(gm: Any) -> list[GraphSite]:
    sites = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        op = op_name(node.target)
        if canon(op) not in CANON_CANDIDATES:
            continue
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        if stack:
            path, type_str = stack[-1]
            path = re.sub(r"@\d+$", "", str(path))
            mtype = str(type_str).rsplit(".", 1)[-1]
        else:
            path, mtype = "", ""
        sites.append(GraphSite(op, path, mtype))
    return sites


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
    hooks = []
    if eager_model is not None:
        for path, mod in eager_model.named_modules():
            mtype = type(mod).__name__
            hooks.append(mod.register_forward_pre_hook(_push(rec, path, mtype)))
            hooks.append(mod.register_forward_hook(_pop(rec), always_call=True))
    samples = n_batches = 0
    try:
        for i, (args, kwargs) in enumerate(batches):
            n = _samples_of(args, kwargs)
            rec.begin_forward(n)
            mode: Any = FunctionCapture(rec) if eager_model is not None else DispatchCapture(rec)
            try:
                with torch.no_grad(), mode:
                    call(*args, **kwargs)
            except (InputError, KeyboardInterrupt):
                raise
            except Exception as e:
                if "Traceback of TorchScript" in str(e):
                    e = _plain_error(call, args, kwargs) or e
                raise _run_error(e, i, samples, n, rec.last_site, _shapes(args, kwargs)) from None
            samples += n
            n_batches += 1
            if progress is not None:
                progress(n)
    finally:
        for h in hooks:
            h.remove()
    if n_batches == 0:
        raise CalibrationError("the calibration data yielded no batches")
    sites, uncovered = rec.results()
    cap = Capture(sites=sites, samples=samples, batches=n_batches, uncovered=uncovered)
    if graph_sites is not None and rec.unmatched_graph_ops:
        cap.warnings.append(
            f"{rec.unmatched_graph_ops} activation op call(s) ran inside composite ops or control flow that the "
            "graph does not list one by one; they are named by op (e.g. sigmoid#3) instead of by module"
        )
    return cap


def _push(rec: Recorder, path: str, mtype: str) -> Callable[..., None]:
    def hook(module: Any, args: Any) -> None:
        rec.module_stack.append((path, mtype))

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


def _run_error(e: Exception, batch: int, start: int, n: int, site: str | None, shapes: str = "") -> Exception:
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
