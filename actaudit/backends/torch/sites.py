"""Site bookkeeping shared by both capture modes: names, unit axes, accumulators, results."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ... import unitaxis as ua
from ...errors import InputError
from ...kinds import Activation, Thresholds
from ...naming import named_sites
from ...stats import AxisOverride, SiteInfo, SiteResult, Uncovered
from .fused import HIDDEN, HiddenOps, encoder_layer_ffn
from .graphnames import GraphNames
from .graphsites import GraphSite
from .idmap import TensorMap
from .kernel import _Acc
from .ops import (
    CARRIERS,
    CONV,
    LINEAR,
    PRODUCERS,
    RECURRENT_PRODUCERS,
    SAME_AXES,
    SPATIAL,
    first_tensor,
)
from .recurrent import Unsupported
from .recurrent_sites import RecurrentSites
from .swish import ERFS, Naming, SpelledOut, is_erf_gelu, is_tanh_gelu
from .tags import follow, tensors_of


@dataclass
class _Site:
    info: SiteInfo
    thr: Thresholds
    acc: _Acc
    base: str
    index: int
    derived: str | None = None  # the base after the module that produced the input (actaudit.naming)
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
        self.names = GraphNames(graph_sites)  # compiled graphs: each call named after its module
        self.sites: dict[tuple[str, int], _Site] = {}
        self.tags: TensorMap[ua.Tag] = TensorMap()
        # Outputs of sites whose axis is still open, followed through axis-keeping ops to a consumer.
        self.pending_out: TensorMap[tuple[str, int]] = TensorMap()
        self.spelled = SpelledOut()  # SiLU and softsign, spelled as several ops
        self.module_stack: list[tuple[str, str]] = []
        self.producers: TensorMap[str] = TensorMap()  # eager: a module's output -> its path (innermost)
        self.batch_samples = 0
        self.last_site: str | None = None
        self.interrupted = False
        self.option_error: InputError | None = None  # a --unit-axis mistake found inside the forward
        self._counts: dict[str, int] = defaultdict(int)
        from .heads import OutputOrigins

        self.origins = OutputOrigins()  # which sites' values reach the model's outputs
        self.last_key: tuple[str, int] | None = None
        self.output_sites: set[tuple[str, int]] = set()
        self.suspended = False  # while actaudit runs its own ops (a written-out recurrent cell)
        self.extra_uncovered: dict[str, Uncovered] = {}
        paths: dict[str, list[str]] = defaultdict(list)
        for g in graph_sites or []:
            if g.gate == HIDDEN:
                paths[g.op].append(g.module)
        self.hidden = HiddenOps(dict(paths))  # fused ops and silent recurrent modules: uncovered
        self._last_hidden: tuple[str, str, int] = ("", "", 0)
        self._merged_now: set[str] = set()
        self.recurrent = RecurrentSites(self, graph_sites)  # gates of fused recurrent ops, written out

    # -- per forward ----------------------------------------------------------------
    def begin_forward(self, samples: int) -> None:
        self.batch_samples = samples
        self.producers = TensorMap()
        self._counts.clear()
        self.hidden.begin_forward()
        self._merged_now.clear()
        self.names.begin_forward()
        self.recurrent.begin_forward()
        self.module_stack.clear()

    # -- provenance ---------------------------------------------------------------
    def tag(
        self, name: str, args: tuple[object, ...], out: object, kwargs: dict[str, object] | None = None
    ) -> None:
        """Attach the unit tag that ``name(*args)`` gives its output(s) (:mod:`actaudit.unitaxis`)."""
        kwargs = kwargs or {}
        outs = tensors_of(out)
        if not outs:
            return
        if name in _MULS and len(args) >= 2:
            self._mul(args, outs[0])
        self.spelled.gelu.track(name, args, outs[0])
        if name in ERFS:
            self._erf(args, outs[0])
        elif (gelu := self.spelled.erf_gelu.track(name, args, outs[0])) is not None:
            self._erf_gelu(gelu[0], gelu[1], outs[0], gelu[2])
        if self.names.param_owner:
            self.names.own(args, outs)
        if name in PRODUCERS or name in RECURRENT_PRODUCERS:
            origin = PRODUCERS.get(name, LINEAR)
            for t in outs if name in RECURRENT_PRODUCERS else outs[:1]:
                tag = ua.produced(origin, t.ndim)
                if tag is not None:
                    self.tags[t] = tag
            self._consumed(name, args)
            return
        src = next((a for a in tensors_of(list(args)) if a in self.tags or a in self.pending_out), None)
        if src is None:
            return
        for t in outs:
            tag = follow(name, args, kwargs, src, self.tags.get(src), t)
            if tag is not None:
                self.tags[t] = tag
        key = self.pending_out.get(src)
        if key is not None and (name in CARRIERS or name in SAME_AXES or name in SPATIAL):
            for t in outs:
                if t.ndim == src.ndim:
                    self.pending_out[t] = key

    def _consumed(self, name: str, args: tuple[object, ...]) -> None:
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

    def track_softsign(self, name: str, args: tuple[object, ...], out: object) -> None:
        self.spelled.track_softsign(name, args, out)

    def is_softsign(self, args: tuple[object, ...]) -> bool:
        return self.spelled.is_softsign(args)

    # -- observation ----------------------------------------------------------------
    def observe(
        self,
        base: str,
        module: str,
        op: str,
        act: Activation,
        weight: object,
        x: torch.Tensor,
        merge: bool = False,
        derived: str | None = None,
    ) -> tuple[str, int] | None:
        """Reduce one call; returns the site's key while its axis waits for a consumer to decide it.

        ``merge``: every call in a forward is the same site (a recurrent gate, once per time step);
        the batch's samples count once. ``derived``: the base after the module that produced
        ``x`` (a compiled graph's is that of the graph site :meth:`graph_base` just picked).
        """
        if derived is None and self.graph_sites is not None:
            derived, self.names.last_derived = self.names.last_derived, None
        if act.kind == "tanh" and not merge:
            gbase, op, act, x = self._tanh_gelu(base, op, act, x)
            if gbase != base:  # a GELU's site: the tanh's inner argument names nothing
                base, derived = gbase, None
        self.hidden.events += 1
        if merge:
            k = 0
            samples = 0 if base in self._merged_now else self.batch_samples
            self._merged_now.add(base)
        else:
            k = self._counts[base]
            self._counts[base] = k + 1
            samples = self.batch_samples
            if derived:  # its place among the calls of the same derived name (conv2.relu#1)
                self._counts["\0" + derived] += 1
        key = (base, k)
        site = self.sites.get(key)
        if site is None:
            axis, source = self._axis(base, k, x, derived, self._counts["\0" + (derived or "")] - 1)
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
            site = _Site(info, act.thresholds(self.f), _Acc(units, x.device), base, k, derived)
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

    def _tanh_gelu(
        self, base: str, op: str, act: Activation, z: torch.Tensor
    ) -> tuple[str, str, Activation, torch.Tensor]:
        """A tanh whose argument is ``√(2/π)·(x + 0.044715·x³)`` is GELU's tanh form: one GELU site on ``x``
        (``mlp.act/gelu``), so its units are counted as a GELU's, never as a saturating tanh."""
        x = self.spelled.gelu.root(z)
        if x is None:
            return base, op, act, z
        head, _, last = base.rpartition("/")
        gbase = f"{head}/gelu" if last == "tanh" and head else "gelu" if base == "tanh" else f"{base}/gelu"
        known = self.sites.get((gbase, self._counts[gbase]))
        if known is None and not is_tanh_gelu(z, x):  # the values decide the first call of a site
            return base, op, act, z
        return gbase, f"{op}-GELU", Activation("gelu", {"tanh": 1.0}), x

    def _erf(self, args: tuple[object, ...], out: torch.Tensor) -> None:
        """An erf of ``x/√2``: followed, and a site only when GELU's product follows (``mlp.act/gelu``)."""
        x = self.spelled.erf_gelu.erf_of(args)
        if x is None:
            return  # an erf of anything else is no activation
        module = self.module_stack[-1][0] if self.module_stack else ""
        base = f"{module}/gelu" if module else "gelu"
        self.spelled.erf_gelu.named_erf(out, x, (base, module, "erf"))

    def _erf_gelu(self, x: torch.Tensor, naming: Naming, y: torch.Tensor, whole: bool) -> None:
        """``y = 0.5·x·(1 + erf(x/√2))``: one GELU site on ``x``. The values decide a site's first call,
        and every call where a tensor multiplying the gate stood for ``x·0.5`` (``whole`` is False)."""
        if not whole and not is_erf_gelu(y, x):
            return  # checked before a compiled graph's next name is taken
        base, module, label = naming
        if self.graph_sites is not None:
            # Named as the product completes: a graph lists only the erfs of whole GELUs (gelu_graph).
            base, module, label = self.graph_base("erf", x)
            head, _, last = base.rpartition("/")
            base = (f"{head}/gelu" if head else "gelu") if last == "erf" else f"{base}/gelu"
        if whole and (base, self._counts[base]) not in self.sites and not is_erf_gelu(y, x):
            return
        key = self.observe(base, module, f"{label}-GELU", Activation("gelu"), None, x)
        if key is not None:
            self.mark_output(key, x, y)
        self.origins.after("gelu", (x,), y, self.last_key)

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
            if info.unit_axis_source == ua.GUESSED:
                # Units do not change between calls: an axis whose size does is a time or position axis.
                site.broken += (
                    ": the guessed unit axis is not a unit axis (a time or position axis); "
                    f"set --unit-axis '{info.name or site.base}=AXIS'"
                )
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
        self.pending_out = TensorMap()
        self.spelled.end_forward()

    def mark_output(self, key: tuple[str, int], x: object, out: object) -> None:
        """Follow a held site's output: to the consumer that decides its axis, or to a Mul by its input."""
        site = self.sites.get(key)
        if site is None or not isinstance(out, torch.Tensor):
            return
        if site.info.unit_axis_source == ua.GUESSED:
            self.pending_out[out] = key
        if site.info.kind == "sigmoid":
            self.spelled.sigmoid_output(key, x, out)

    def _mul(self, args: tuple[object, ...], out: torch.Tensor) -> None:
        """A held sigmoid site multiplied by its own input (``x * sigmoid(β·x)``) is a SiLU."""
        found = self.spelled.mul(args, out)
        if found is not None:
            site = self.sites.get(found[0])
            if site is not None and site.held is not None:
                site.swish = found[1]

    def _axis(
        self, base: str, k: int, x: torch.Tensor, derived: str | None = None, dk: int = 0
    ) -> tuple[int, str]:
        """(unit axis, source); an axis equal to the rank means the whole activation is one unit.
        A site is matched by its former name (``base``, ``base#k``) and its derived one, with and
        without the ``#k`` it gets when several calls share it."""
        names = (base, f"{base}#{k}", *((derived, f"{derived}#{dk}") if derived else ()))
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

    def graph_base(self, name: str, x: object = None) -> tuple[str, str, str]:
        return self.names.graph_base(name, x)

    # -- results --------------------------------------------------------------------
    def results(self) -> tuple[list[SiteResult], list[Uncovered]]:
        out, uncovered = [], []
        # Keys hold k = 0, 1, … per base in order: the former names are site_names of the bases.
        names = named_sites([(base, site.derived) for (base, _), site in self.sites.items()])
        for ((base, k), site), (name, former) in zip(self.sites.items(), names, strict=True):
            site.info.name, site.info.former_name = name, former
            site.info.model_output = (base, k) in self.output_sites
            if site.broken:
                uncovered.append(Uncovered(site.info.name, site.info.op, site.broken))
                continue
            out.append(SiteResult(site.info, site.acc.to_stats()))
        for u in self.recurrent.uncovered(self.names.gru_done):
            self.extra_uncovered.setdefault(u.name, u)
        for u in self.hidden.uncovered():
            self.extra_uncovered.setdefault(u.name, u)
        return out, [*uncovered, *self.extra_uncovered.values()]

    def module_output(self, path: str, out: object) -> None:
        """Eager: note which module returned ``out`` (the innermost one, whose hook runs first); the
        tensors of a returned tuple too (``out, _ = self.lstm(x)``), as compiled graphs read them."""
        if not path:
            return
        for t in tensors_of(out):
            if t not in self.producers:
                self.producers[t] = path

    def hidden_activation(self, name: str) -> None:
        """A fused op ran whose activation no capture sees: listed in ``uncovered``, never dropped."""
        path = self.module_stack[-1][0] if self.module_stack else ""
        self._last_hidden = (name, path, self.hidden.op(name, path))

    def fused_encoder_layer(self, args: tuple[object, ...], output: object) -> None:
        """A ``TransformerEncoderLayer`` fast-path call: its feed-forward activation written out from
        the op's own weights and audited (``layers.0.linear1.relu``, as the eager layer's site is named:
        the layer's ``activation(linear1(x))``)."""
        op, path, k = self._last_hidden
        if op != "_transformer_encoder_layer_fwd":
            return
        try:
            pre, kind = encoder_layer_ffn(args, output)
        except Unsupported:
            self.hidden.refused.add((op, path, k))
            return
        name = self.hidden.name_of(op, path, k)
        self.hidden.written.add((op, path, k))
        self.tags[pre] = ua.Tag(pre.ndim - 1, LINEAR)
        derived = f"{name}.linear1.{kind}" if name else None
        self.observe(
            f"{name}/{kind}", name, f"aten::{op}.{kind}", Activation(kind), None, pre, derived=derived
        )

    def glu_call(
        self, args: tuple[object, ...], kwargs: dict[str, object], graph: bool
    ) -> tuple[tuple[str, int] | None, tuple[str, int] | None, torch.Tensor | None]:
        """``glu(x, dim)`` = first half · sigmoid(second half): the sigmoid half is a site whose units
        are the gate's channels along ``dim``. Returns (pending key, observed key, gate tensor)."""
        x = first_tensor(args, kwargs)
        base = module = label = ""
        if graph:  # the graph's list names the call even when it cannot be observed
            base, module, label = self.graph_base("glu", x)
        if x is None or x.ndim == 0:
            return None, None, None
        dim = int(cast(int, kwargs.get("dim", args[1] if len(args) > 1 else -1))) % x.ndim
        half = int(x.shape[dim]) // 2
        self.suspended = True
        try:
            gate = x.detach().narrow(dim, half, half)
        finally:
            self.suspended = False
        if dim >= 1:
            self.tags[gate] = ua.Tag(dim, LINEAR)
        if not graph:
            path, mtype = self.module_stack[-1] if self.module_stack else ("", "")
            module = path
            base, label = (
                (path, "nn.GLU") if path and mtype == "GLU" else (f"{path}/glu" if path else "glu", "glu")
            )
        pending = self.observe(base, module, label, Activation("sigmoid"), None, gate)
        return pending, self.last_key, gate

    def fused_lstm_layer(self, args: tuple[object, ...], output: object) -> None:
        self.recurrent.fused_lstm_layer(args, output)

    def recurrent_call(self, path: str, module: nn.Module, args: tuple[object, ...], output: object) -> None:
        self.recurrent.module_call(path, module, args, output)

    def watch_silent(self, module: nn.Module, path: str, mtype: str) -> list[RemovableHandle]:
        """Hooks that list ``module`` uncovered when a call of it runs no activation op a capture sees."""
        return [
            module.register_forward_pre_hook(lambda m, a: self.hidden.module_started(path)),
            module.register_forward_hook(
                lambda m, a, o: self.hidden.module_ended(path, mtype), always_call=True
            ),
        ]


_MULS = frozenset(["mul", "mul_", "__mul__", "__rmul__", "__imul__"])
