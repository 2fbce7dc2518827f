"""Run the instrumented model over the calibration batches and fold its per-unit vectors into statistics.

The fast statistics run on every batch; a batch whose fast sums come back non-finite
(or whose counts could be inexact in float32) is rerun with the careful variant.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from ... import unitaxis as ua
from ...data import Batch, DataSource, cap_samples
from ...errors import CalibrationError, InputError, ModelRunError
from ...hints import RELU_FROM_OUTPUT
from ...stats import AxisOverride, Capture, SiteInfo, SiteResult, SiteStats, Uncovered
from ..base import CaptureKwargs, CaptureOptions
from . import proto as onnx
from .axes import consumer_axis
from .feeds import _check_shapes, _chunk_samples, bound_batches
from .instrument import AxisRule, ReductionPlan, SiteOutputs, instrument, post_eligible
from .interrupt import run_interruptible
from .load import OnnxModel, _short
from .pack import Pack, PackAcc, instrument_packed
from .session import appended, grown_session, plain_session, session_for
from .sites import OnnxSite, find_sites

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["InternalCaptureError", "capture"]

_EXACT_FLOAT_COUNT = 2**24  # float32 counts are exact below this


def _axis_rule(site: OnnxSite, overrides: list[AxisOverride]) -> tuple[AxisRule, int | None]:
    """The site's axis rule (and where it came from), and the override's axis (checked at run time)."""
    names = (site.name, site.base, site.former or "")
    for o in overrides:
        if any(fnmatch.fnmatchcase(n, o.glob) for n in names):
            rank = site.rank
            if rank is not None and not -rank <= o.axis < rank:
                raise o.out_of_range(site.name, None, rank)
            return AxisRule(fixed=o.axis, source=ua.OVERRIDE), o.axis
    rank = site.rank
    if rank is not None:
        if rank <= 1:
            return AxisRule(by_rank=True, source=ua.WHOLE), None
        axis, source = ua.resolve(site.axis_tag, rank)
        if source == ua.WHOLE:  # a size-1 unit axis squeezed away on the way: one unit
            return AxisRule(whole=True, source=ua.WHOLE), None
        if source == ua.GUESSED:
            # The producer says nothing: the consumer decides, then the rank (legacy tags first).
            by_consumer = consumer_axis(site.scope, site.y, rank)
            if by_consumer is not None:
                return AxisRule(fixed=by_consumer, source=ua.CONSUMER), None
            if site.tag == "conv":
                return AxisRule(fixed=1, source=ua.PRODUCER), None
            if site.tag == "linear":
                return AxisRule(fixed=rank - 1, source=ua.PRODUCER), None
        return AxisRule(fixed=axis, source=source), None
    if site.tag == "conv":
        return AxisRule(fixed=1, source=ua.PRODUCER), None
    if site.tag == "linear":
        return AxisRule(last=True, source=ua.PRODUCER), None
    by_consumer = consumer_axis(site.scope, site.y, None)
    if by_consumer is not None:
        rule = AxisRule(fixed=1) if by_consumer == 1 else AxisRule(last=True)
        rule.source = ua.CONSUMER
        return rule, None
    return AxisRule(by_rank=True), None


@dataclass
class _Live:
    site: OnnxSite
    plan: ReductionPlan
    asked_axis: int | None
    fast: SiteOutputs | None = None
    careful: SiteOutputs | None = None
    info: SiteInfo | None = None
    stats: SiteStats | None = None
    broken: str | None = None
    first_call: int = -1  # index of the run that first reached it (first-execution order)
    packed: tuple[int, int] | None = None  # (pack, member) when measured in a pack (fast variant)


_Session = tuple[ort.InferenceSession, dict[int, SiteOutputs], list[_Live]]
_Built = tuple[ort.InferenceSession, dict[int, SiteOutputs], list[_Live], list[Pack]]


class _Runner:
    """Both instrumented sessions (the careful one built on first need) and the run loop."""

    def __init__(
        self,
        handle: OnnxModel,
        stuck_fraction: float,
        overrides: list[AxisOverride],
        *,
        pack: bool = True,
        post: bool = False,
    ) -> None:
        self.handle = handle
        self.f = stuck_fraction
        self.overrides = overrides
        self.pack = pack  # small sites of one shape measured together (:mod:`.pack`)
        self.post = post  # ReLU sites measured from their output only (:func:`.instrument.post_eligible`)
        self.grow = True  # sessions from the file's bytes plus the instrumentation (:func:`appended`)
        self.sessions: dict[bool, _Session] = {}
        self.accs: list[PackAcc] = []
        self.pack_lives: list[list[_Live]] = []
        self.uncovered: list[Uncovered] = []
        self.live: list[_Live] = []
        self.careful_batches = 0
        self.calls = 0
        self.warnings: list[str] = []
        # Keep the model's own outputs of every run (the same session computes them).
        self.keep_outputs = False
        self.outputs: list[list[np.ndarray]] = []
        self.output_names: list[str] | None = None
        self.last_outputs: list[np.ndarray] = []

    def _build(self, careful: bool) -> _Built:
        model = self.handle.model
        found = find_sites(model.graph)
        grow = (
            self.grow
            and self.handle.file is not None
            and all(s.scope.owner is None for s in found.sites if not s.uncovered)
        )
        if not grow:  # statistics leave subgraphs through edited If/Loop nodes: edit a copy
            model = onnx.ModelProto()
            model.CopyFrom(self.handle.model)
            found = find_sites(model.graph)
        lives, plans = [], []
        uncovered = []
        for site in found.sites:
            if site.uncovered:
                uncovered.append(Uncovered(site.name, site.op, site.uncovered))
                continue
            rule, asked = _axis_rule(site, self.overrides)
            thr = site.act.thresholds(self.f)
            plan = ReductionPlan(site, rule, thr.low, thr.high)
            plan.post = self.post and post_eligible(site, thr.low, thr.high)
            lives.append(_Live(site, plan, asked))
            plans.append(plan)
        packs: list[Pack] = []
        with appended(model) if grow else contextlib.nullcontext(model) as delta:
            if careful or not self.pack:
                outputs = instrument(model, plans, careful)
            else:
                outputs, packs = instrument_packed(model, plans)
                for k, p in enumerate(packs):
                    outputs[-1 - k] = SiteOutputs(dict(p.names))
                    for j, m in enumerate(p.members):
                        lives[m.plan].packed = (k, j)
        try:
            sess = grown_session(self.handle, delta) if grow else session_for(self.handle, model)
        except Exception as e:
            if grow:  # e.g. an onnxruntime too old to find external data beside bytes: re-serialise
                self.grow = False
                return self._build(careful)
            plain_session(self.handle)  # raises InputError when the model itself does not load
            raise RuntimeError(f"onnxruntime rejected the instrumented model: {_short(e, 600)}") from e
        if not careful:
            self.uncovered = uncovered
            self.live = lives
        return sess, outputs, lives, packs

    def session(self, careful: bool) -> _Session:
        """(session, output names per plan index (packs at -1, -2, …), sites) of one variant."""
        if careful not in self.sessions:
            key = (careful, self.pack, self.post, self.f, tuple((o.glob, o.axis) for o in self.overrides))
            cached = self.handle.built.get(key)
            if cached is None:
                uncovered_before = self.uncovered
                sess, outputs, lives, packs = self._build(careful)
                cached = self.handle.built[key] = (sess, outputs, lives, packs, list(self.uncovered))
                self.uncovered = uncovered_before
            sess, outputs, template, packs, uncovered = cached
            # Fresh per-capture state; the session and the site plans are shared.
            lives = [_Live(lv.site, lv.plan, lv.asked_axis, packed=lv.packed) for lv in template]
            if not careful:
                self.uncovered = list(uncovered)
                self.live = lives
                self.accs = [PackAcc(p) for p in packs]
                self.pack_lives = [[lives[m.plan] for m in p.members] for p in packs]
            self.sessions[careful] = (sess, outputs, lives)
        return self.sessions[careful]

    def run(self, feeds: dict[str, np.ndarray], samples: int) -> None:
        sess, outs, _ = self.session(False)
        try:
            values = self._run(sess, outs, feeds)
        except Exception:
            if not self.accs or self.calls:
                raise
            # A Concat of sites whose leading dimensions differ after all (stale static shapes).
            self.pack = False
            self.sessions.clear()
            sess, outs, _ = self.session(False)
            values = self._run(sess, outs, feeds)
        careful = not self._finite(values, self.accs)
        if careful:
            sess, outs, _ = self.session(True)
            values = self._run(sess, outs, feeds)
            self.careful_batches += 1
        else:
            for k, acc in enumerate(self.accs):
                self._fold_pack(k, acc, values[-1 - k], samples)
        if self.keep_outputs:
            self.outputs.append(self.last_outputs)
        for i, live in enumerate(self.live):
            if careful or live.packed is None:
                self._fold(live, values.get(i), samples, careful)
            if live.first_call < 0 and live.info is not None:
                live.first_call = self.calls
        self.calls += 1

    def _fold_pack(self, k: int, acc: PackAcc, v: dict[str, np.ndarray], samples: int) -> None:
        members = self.pack_lives[k]
        if acc.broken:
            return
        if members[0].info is None:
            shape = [int(d) for d in v["shape"]]
            for lv, m in zip(members, acc.pack.members, strict=True):
                shape[acc.pack.axis] = m.units
                self._start(lv, tuple(shape), acc.pack.axis)
        acc.broken = acc.fold(v, samples)
        if acc.broken is not None:
            for lv in members:
                lv.broken = acc.broken

    def flush(self) -> None:
        """Hand each packed site its counters (after the last batch).

        A post-activation site's largest value is the pre-activation's only where it is positive:
        a unit whose output never exceeded 0 gets NaN (not measured), never 0.
        """
        for lv in self.live:
            if lv.packed is not None and lv.stats is not None and not lv.broken:
                elements, samples, vec = self.accs[lv.packed[0]].vectors(lv.packed[1])
                lv.stats.add_batch(elements, samples, vec)
            if lv.plan.post and lv.stats is not None:
                st = lv.stats
                st.max[~(st.max > 0) & np.isnan(st.min)] = np.nan

    def _run(
        self, sess: ort.InferenceSession, outs: dict[int, SiteOutputs], feeds: dict[str, np.ndarray]
    ) -> dict[int, dict[str, np.ndarray]]:
        names = [n for o in outs.values() for n in o.names.values()]
        model_outputs = [o.name for o in self.handle.model.graph.output] if self.keep_outputs else []
        if not names and not model_outputs:
            run_interruptible(sess, None, feeds)
            return {}
        arrays = run_interruptible(sess, model_outputs + names, feeds)
        if model_outputs:
            from ...edit.drift import flatten_outputs, output_names

            produced = dict(zip(model_outputs, arrays[: len(model_outputs)], strict=True))
            self.last_outputs = flatten_outputs(produced)
            if self.output_names is None:
                self.output_names = output_names(produced)
            arrays = arrays[len(model_outputs) :]
        got = dict(zip(names, arrays, strict=True))
        return {i: {stat: got[n] for stat, n in o.names.items()} for i, o in outs.items()}

    @staticmethod
    def _finite(values: dict[int, dict[str, np.ndarray]], accs: list[PackAcc]) -> bool:
        """Fast results are usable: finite sums, and counts small enough to be exact in float32."""
        for key, v in values.items():
            for stat in ("min", "max", "sum", "sq", "pos_sum", "pos_sq"):
                a = v.get(stat)
                if a is not None and a.size and not np.isfinite(a).all():
                    return False
            if key < 0:
                if accs[-1 - key].per_unit_elements(v["shape"]) >= _EXACT_FLOAT_COUNT:
                    return False
                continue
            shape, axis = v["shape"], v["axis"]
            if shape.ndim == 1 and axis.size:
                k = int(axis.reshape(-1)[0])
                per_unit = math.prod(int(d) for d in shape) // max(int(shape[k]) if k < shape.size else 1, 1)
                if per_unit >= _EXACT_FLOAT_COUNT:
                    return False
            elif shape.size and (np.prod(shape, axis=-1, dtype=np.float64) >= _EXACT_FLOAT_COUNT).any():
                return False
        return True

    def _fold(self, live: _Live, v: dict[str, np.ndarray] | None, samples: int, careful: bool) -> None:
        if v is None or live.broken:
            return
        shapes = v["shape"]
        if shapes.size == 0 and v["axis"].size == 0:
            return  # an If branch that did not run on this batch
        axes = v["axis"]
        if shapes.ndim == 1:  # not inside a Loop: one call
            rows = [(shapes, int(axes.reshape(-1)[0]), {k: a for k, a in v.items()})]
        else:
            rows = [
                (shapes[r], int(axes[r].reshape(-1)[0]), {k: a[r] for k, a in v.items()})
                for r in range(shapes.shape[0])
            ]
        first = True
        for shape_row, axis, row in rows:
            shape = tuple(int(d) for d in shape_row)
            if live.info is None:
                self._start(live, shape, axis)
            assert live.info is not None and live.stats is not None
            units = live.info.units
            if live.info.unit_axis_source == ua.WHOLE and axis == len(shape):
                pass  # one unit at any rank
            elif axis != live.info.unit_axis or len(shape) <= axis or shape[axis] != units:
                live.broken = f"its unit count changed between calls (shape {list(shape)}, axis {axis})"
                if shape == tuple(live.info.sample_shape):
                    live.broken += (
                        "; a batch of 1 lost its batch axis inside the model (a Squeeze without axes?): "
                        "use a --batch-size that divides the sample count"
                    )
                return
            if row["max"].shape[:1] != (units,):
                live.broken = f"its reduced statistics have {row['max'].shape} entries for {units} units"
                return
            if "elements" in row:  # summed over the iterations of an enclosing Loop
                elements = int(row["elements"].reshape(-1)[0]) // max(units, 1)
            else:
                elements = math.prod(shape) // max(units, 1)
            vec = _vectors(row, elements, careful)
            if live.packed is not None:  # a careful batch of a packed site: into the pack's counters
                self.accs[live.packed[0]].add(live.packed[1], elements, samples if first else 0, vec)
            else:
                live.stats.add_batch(elements, samples if first else 0, vec)
            first = False

    def _start(self, live: _Live, shape: tuple[int, ...], axis: int) -> None:
        site = live.site
        if live.asked_axis is not None and not -len(shape) <= live.asked_axis < len(shape):
            names = (site.name, site.base, site.former or "")
            asked = [o for o in self.overrides if any(fnmatch.fnmatchcase(n, o.glob) for n in names)]
            raise (asked[0] if asked else AxisOverride("*", live.asked_axis)).out_of_range(site.name, shape)
        units = shape[axis] if axis < len(shape) else 1
        source = live.plan.axis.source
        if live.plan.axis.by_rank:
            source = ua.WHOLE if axis >= len(shape) else ua.GUESSED
        live.info = SiteInfo(
            name=site.name,
            op=site.op,
            kind=site.act.kind,
            params=dict(site.act.params),
            unit_axis=axis,
            units=units,
            sample_shape=shape[1:],
            module=site.module,
            former_name=site.former,
            unit_slopes=site.unit_slopes,
            model_output=site.x in self._heads(),
            unit_axis_source=source,
        )
        live.stats = SiteStats(units)

    def _heads(self) -> set[str]:
        if not hasattr(self, "_head_inputs"):
            from .facts import output_head_inputs

            self._head_inputs = output_head_inputs(self.handle.model)
        return self._head_inputs


def _vectors(row: dict[str, np.ndarray], elements: int, careful: bool) -> dict[str, np.ndarray]:
    units = row["max"].shape[0]
    out: dict[str, np.ndarray] = {
        k: row[k].astype(np.float64) for k in ("min", "max", "pos_sum", "pos_sq") if k in row
    }
    if not careful and "sum" not in row:  # a post-activation site: see instrument.POST_STATS
        out["min"] = np.full(units, np.nan)
        out["neg_sum"] = np.full(units, np.nan)
        out["neg_sq"] = np.full(units, np.nan)
        out["nonfinite"] = np.zeros(units, np.int64)
        out["low"] = elements - row["above_low"].astype(np.int64)
        out["high"] = np.zeros(units, np.int64)
    elif careful:
        out["neg_sum"] = row["neg_sum"].astype(np.float64)
        out["neg_sq"] = row["neg_sq"].astype(np.float64)
        out["nonfinite"] = row["nonfinite"].astype(np.int64)
        out["low"] = row["low"].astype(np.int64) if "low" in row else np.zeros(units, np.int64)
        out["high"] = row["high"].astype(np.int64) if "high" in row else np.zeros(units, np.int64)
    else:
        out["neg_sum"] = np.minimum(row["sum"].astype(np.float64) - out["pos_sum"], 0.0)
        out["neg_sq"] = np.maximum(row["sq"].astype(np.float64) - out["pos_sq"], 0.0)
        out["nonfinite"] = np.zeros(units, np.int64)
        out["low"] = (
            elements - row["above_low"].astype(np.int64) if "above_low" in row else np.zeros(units, np.int64)
        )
        out["high"] = (
            elements - row["below_high"].astype(np.int64)
            if "below_high" in row
            else np.zeros(units, np.int64)
        )
    return out


def capture(handle: OnnxModel, source: DataSource, **kw: Unpack[CaptureKwargs]) -> Capture:
    """Per-site statistics; with ``keep_outputs`` the model's outputs of the same runs too."""
    o = CaptureOptions(**kw)
    samples, progress, keep_outputs = o.samples, o.progress, o.keep_outputs
    t0 = time.perf_counter()
    runner = _Runner(handle, o.stuck_fraction, o.axis_overrides, post=o.relu_from_output)
    runner.keep_outputs = keep_outputs
    runner.session(False)
    t_build = time.perf_counter()
    total = 0
    drawn = [0]  # batches the source yielded (a fixed batch re-cuts them into chunks)
    warnings: list[str] = []

    def counted() -> Iterator[Batch]:
        for b in cap_samples(source.batches(), samples):
            drawn[0] += 1
            yield b

    for i, (_, chunk) in enumerate(bound_batches(handle, counted(), warnings)):
        _check_shapes(handle, chunk)
        n = _chunk_samples(handle, chunk, 1)
        try:
            runner.run(chunk, n)
        except (InputError, KeyboardInterrupt):
            raise
        except Exception as e:
            if _plain_runs(handle, chunk):
                # The model runs without actaudit's reductions: the fault is ours, not the model's.
                raise InternalCaptureError(
                    f"actaudit's instrumented graph failed on batch {i} where the model itself runs: {_short(e, 300)}"
                ) from e
            raise _run_error(e, i, total, n) from None
        total += n
        if progress is not None:
            progress(n)
    n_batches = drawn[0]
    if n_batches == 0:
        raise CalibrationError("the calibration data yielded no batches")
    runner.flush()
    post = sum(1 for lv in runner.live if lv.plan.post and lv.stats is not None)
    handle.notes[:] = [n for n in handle.notes if not n.startswith(RELU_FROM_OUTPUT)]  # an earlier capture's
    if post:
        note = (
            f"{RELU_FROM_OUTPUT} (--relu-from-output): {post} site(s); their fire rates and verdicts are "
            "exact, their pre-activation minimum, negative moments (neg_mean) and maxima <= 0 are not "
            "measured (null), and a -inf pre-activation counts as negative"
        )
        handle.notes.append(note)
    handle.last_run = {"build_s": t_build - t0, "run_s": time.perf_counter() - t_build}
    results, uncovered = [], list(runner.uncovered)
    # First-execution order, as the PyTorch backend reports: graph order within a run, and a
    # branch first taken by a later batch after everything that ran before it.
    for live in sorted(runner.live, key=lambda lv: lv.first_call if lv.first_call >= 0 else 1 << 62):
        if live.broken:
            uncovered.append(Uncovered(live.site.name, live.site.op, live.broken))
        elif live.info is None or live.stats is None:
            where = live.site.scope.path or "the graph"
            uncovered.append(
                Uncovered(live.site.name, live.site.op, f"never ran on the calibration data (in {where})")
            )
        else:
            results.append(SiteResult(live.info, live.stats))
    cap = Capture(sites=results, samples=total, batches=n_batches, uncovered=uncovered)
    cap.warnings.extend(dict.fromkeys(warnings))
    cap.warnings.extend(runner.warnings)
    guessed = ua.guessed_warning([r.info.name for r in results if r.info.unit_axis_source == ua.GUESSED])
    if guessed:
        cap.warnings.append(guessed)
    cap.inputs = [s.to_dict() for s in handle.inputs]
    if keep_outputs:
        cap.outputs, cap.output_names = runner.outputs, runner.output_names
    return cap


class InternalCaptureError(RuntimeError):
    """actaudit's own reductions failed on a batch the plain model runs (an internal error, exit 3)."""


def _plain_runs(handle: OnnxModel, feeds: dict[str, np.ndarray]) -> bool:
    try:
        plain_session(handle).run(None, feeds)
    except Exception:
        return False
    return True


def _run_error(e: Exception, batch: int, start: int, n: int) -> Exception:
    msg = _short(e, 300)
    where = f"batch {batch} (samples {start}–{start + n - 1})"
    if "out of memory" in msg.lower() or "bad_alloc" in msg.lower():
        return ModelRunError(f"ran out of memory on {where}", hint="lower --batch-size")
    return ModelRunError(f"onnxruntime raised {type(e).__name__} on {where}: {msg}")
