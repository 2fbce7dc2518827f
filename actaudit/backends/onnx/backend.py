"""The ONNX backend: load a copy of the model, instrument it, run it with onnxruntime.

The user's file (or ``ModelProto``) is never modified: everything happens on an
in-memory copy, and the instrumented model only lives inside the onnxruntime session
(or a temporary directory when it is too large for one protobuf message).
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import EncodeError
from onnx import external_data_helper

from ... import unitaxis as ua
from ...data import Batch, DataSource, InputSpec, cap_samples, declared_fixed_batch, rechunk
from ...data.binding import describe_inputs, feeds_by_name
from ...errors import CalibrationError, InputError, ModelRunError
from ...stats import AxisOverride, Capture, SiteInfo, SiteResult, SiteStats, Uncovered
from ..base import CaptureKwargs, CaptureOptions
from .instrument import AxisRule, SiteOutputs, SitePlan, instrument
from .interrupt import run_interruptible
from .sites import OnnxSite, consumer_axis, find_sites

__all__ = ["OnnxModel", "available_providers", "capture", "load"]

_PROTOBUF_LIMIT = 2**31 - 2**26  # leave headroom under protobuf's 2 GiB message limit
_EXACT_FLOAT_COUNT = 2**24  # float32 counts are exact below this

if TYPE_CHECKING:
    from typing_extensions import Unpack


@dataclass
class OnnxModel:
    """A loaded ONNX model (a private copy) with the session settings chosen at load time."""

    model: onnx.ModelProto
    inputs: list[InputSpec]
    provider: str
    threads: int | None
    source: str
    notes: list[str] = field(default_factory=list)
    input_types: dict[str, np.dtype[Any]] = field(default_factory=dict)
    declared: dict[str, tuple[int | None, ...] | None] = field(default_factory=dict)
    last_run: dict[str, float] = field(default_factory=dict)  # timings of the last capture
    # Instrumented sessions built by earlier captures on this handle, keyed by what shapes
    # them (variant, stuck fraction, axis overrides): a second audit does not rebuild.
    built: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)
    device_id: int | None = None  # under torchrun: this rank's GPU (LOCAL_RANK) for a GPU provider
    fixed_batch: int | None = None  # the batch size the declared shapes fix (no free batch axis)
    unbatched: frozenset[str] = frozenset()  # inputs fed whole with every chunk of a fixed batch


# -- loading ------------------------------------------------------------------------------------
def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def resolve_provider(provider: str | None) -> str:
    """An execution provider onnxruntime offers; ``cuda`` or ``CUDA`` reads as CUDAExecutionProvider."""
    available = available_providers()
    if provider is None:
        return "CPUExecutionProvider"
    want = provider.strip().lower()
    for p in available:
        low = p.lower()
        if want in (low, low.removesuffix("executionprovider")):
            return p
    raise InputError(
        f"--provider {provider!r} is not offered by the installed onnxruntime {ort.__version__}",
        hint="available: " + ", ".join(available),
    )


def load(
    path: str | os.PathLike[str] | onnx.ModelProto, *, provider: str | None = None, threads: int | None = None
) -> OnnxModel:
    chosen = resolve_provider(provider)
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    if isinstance(path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(path)
        missing = [t.name for t in external_data_helper._get_all_tensors(model) if _is_external(t)]
        if missing:
            raise InputError(
                f"the ModelProto refers to external data for {len(missing)} tensor(s) (e.g. {missing[0]!r}) that is not loaded",
                hint="load it with onnx.load(path) (external data next to the file are then read) or pass the path",
            )
        source = "in-memory ModelProto"
    else:
        model = _load_path(Path(path))
        source = str(path)
    notes: list[str] = []
    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as e:  # keep going: sites inside functions are then not seen
            notes.append(
                f"could not inline the model's local functions ({_short(e)}); activations inside them are not audited"
            )
    model = _upgrade_old_opset(model, source, notes)
    model = _with_shapes(model, notes)
    inputs, types, declared = _input_specs(model)
    fixed, unbatched = declared_fixed_batch(inputs)
    return OnnxModel(
        model, inputs, chosen, threads, source, notes, types, declared, fixed_batch=fixed, unbatched=unbatched
    )


# The appended statistics nodes need Slice with inputs and IsInf (opset 10); 11 is the
# first opset whose Loop/If/Resize semantics onnx's version converter maps cleanly.
_MIN_OPSET = 10
_UPGRADE_TO = 11


def _upgrade_old_opset(model: onnx.ModelProto, source: str, notes: list[str]) -> onnx.ModelProto:
    """A model of opset 7-9 converted (in memory) to opset 11 with onnx's version converter.

    The audit then measures the converted graph, which computes the same function; a
    model the converter cannot handle is refused (exit 2) with its reason.
    """
    from .graph import opset_version

    old = opset_version(model)
    if old >= _MIN_OPSET or old <= 0:
        return model
    try:
        from onnx import version_converter

        new = version_converter.convert_version(model, _UPGRADE_TO)
        onnx.checker.check_model(new)
    except Exception as e:
        raise InputError(
            f"{source} uses ONNX opset {old}, which the audit's statistics nodes cannot be added to, "
            f"and onnx's version converter cannot bring it to opset {_UPGRADE_TO}: {_short(e)}",
            hint=f"re-export the model at opset {_UPGRADE_TO} or later",
        ) from None
    notes.append(f"the model's ONNX opset {old} was converted in memory to opset {_UPGRADE_TO} for the audit")
    return new


def _is_external(t: onnx.TensorProto) -> bool:
    return t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL


def _load_path(p: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise InputError(f"cannot read {p} as an ONNX model: {_short(e)}") from None
    external = [t for t in external_data_helper._get_all_tensors(model) if _is_external(t)]
    if external:
        base = p.resolve().parent
        missing = sorted(
            {
                loc
                for t in external
                for loc in [next((e.value for e in t.external_data if e.key == "location"), "")]
                if not (base / loc).is_file()
            }
        )
        if missing:
            raise InputError(
                f"model {p} keeps weights in external data file(s) {', '.join(repr(m) for m in missing)} "
                f"that are not in {base}",
                hint="ONNX looks for external data next to the model file: copy them there",
            )
        try:
            external_data_helper.load_external_data_for_model(model, str(base))
        except Exception as e:
            raise InputError(f"cannot read the external data of {p}: {_short(e)}") from None
    return model


def over_limit(model: onnx.ModelProto) -> bool:
    """Is ``model`` too large for one protobuf message (``_PROTOBUF_LIMIT``, read at call time)?

    Above 2 GiB protobuf refuses even to size the message: ``ByteSize`` raises EncodeError.
    """
    try:
        return model.ByteSize() > _PROTOBUF_LIMIT
    except EncodeError:
        return True


def _with_shapes(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    """Static shape inference (ranks and dtypes for the unit axis); without it sites fall back to run-time rules."""
    if over_limit(model):
        notes.append("model is over 2 GB: static shape inference skipped, unit axes are chosen at run time")
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return model


def _input_specs(model: onnx.ModelProto) -> tuple[list[InputSpec], dict[str, np.dtype[Any]], dict[str, Any]]:
    inits = {t.name for t in model.graph.initializer}
    specs, types, declared = [], {}, {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue  # an input with a default value (old IR): not fed
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except Exception:
            dtype = np.dtype(np.float32)
        shape = None
        if tt.HasField("shape"):
            shape = tuple(
                int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tt.shape.dim
            )
        specs.append(InputSpec(vi.name, shape, str(dtype)))
        types[vi.name] = dtype
        declared[vi.name] = shape
    return specs, types, declared


# -- binding batches to inputs ------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    if isinstance(x, (int, float, bool, np.generic, list, tuple)):
        return np.asarray(x)
    raise CalibrationError(f"calibration inputs must be arrays or tensors, not {type(x).__name__}")


def bind(handle: OnnxModel, batch: Batch) -> dict[str, np.ndarray]:
    """Every input by name (:func:`actaudit.data.binding.feeds_by_name`), as arrays of the graph's dtypes."""
    return {n: _cast(n, _to_numpy(v), handle) for n, v in feeds_by_name(batch, handle.inputs).items()}


def bound_batches(handle: OnnxModel, stream: Iterable[Batch], warnings: list[str]) -> Iterator[Batch]:
    """Batches bound by name, re-cut to the declared fixed batch size (the one path, as for torch)."""
    bound: Iterator[Batch] = (([], bind(handle, b)) for b in stream)
    if handle.fixed_batch is None:
        return bound
    return rechunk(bound, handle.fixed_batch, whole=handle.unbatched, warnings=warnings)


def _cast(name: str, x: np.ndarray, handle: OnnxModel) -> np.ndarray:
    want = handle.input_types.get(name)
    if x.dtype.hasobject:
        raise CalibrationError(f"input {name!r}: arrays of Python objects are not calibration data")
    if want is None or x.dtype == want:
        return np.asarray(x, order="C")
    if np.issubdtype(want, np.floating) and (
        np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
    ):
        if not np.issubdtype(x.dtype, np.floating):
            from ...hints import cast_note

            note = cast_note(name, str(x.dtype), str(want))
            if note not in handle.notes:
                handle.notes.append(note)
        return np.asarray(x, dtype=want, order="C")
    if np.issubdtype(want, np.integer) and np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < np.iinfo(want).min or x.max() > np.iinfo(want).max):
            raise CalibrationError(f"input {name!r}: values do not fit the model's {want}")
        return np.asarray(x, dtype=want, order="C")
    if want == np.bool_ and (x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer)):
        return np.asarray(x != 0, order="C")
    raise CalibrationError(
        f"input {name!r} is {x.dtype} {list(x.shape)} but the model expects {want}",
        hint=f"the model's inputs are {describe_inputs(handle.inputs)}",
    )


def _check_shapes(handle: OnnxModel, feeds: dict[str, np.ndarray]) -> None:
    for name, x in feeds.items():
        want = handle.declared.get(name)
        if want is None:
            continue
        ok = len(want) == x.ndim and all(w is None or w == g for w, g in zip(want, x.shape, strict=False))
        if not ok:
            from ...hints import layout_hint

            fix = layout_hint(tuple(x.shape), want)
            raise CalibrationError(
                f"input {name!r} has shape {list(x.shape)} but the model expects "
                f"{['?' if d is None else d for d in want]}",
                hint=(f"{fix}; " if fix else "") + f"the model's inputs are {describe_inputs(handle.inputs)}",
            )


# -- sessions -----------------------------------------------------------------------------------
def _options(handle: OnnxModel) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if handle.threads is not None:
        so.intra_op_num_threads = handle.threads
        so.inter_op_num_threads = 1
    return so


_GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "TensorrtExecutionProvider")


def _providers(handle: OnnxModel) -> list[Any]:
    if handle.provider == "CPUExecutionProvider":
        return ["CPUExecutionProvider"]
    if handle.device_id is not None and handle.provider in _GPU_PROVIDERS:
        return [(handle.provider, {"device_id": str(handle.device_id)}), "CPUExecutionProvider"]
    return [handle.provider, "CPUExecutionProvider"]


def session_for(handle: OnnxModel, model: onnx.ModelProto) -> ort.InferenceSession:
    """An onnxruntime session; models over the protobuf limit go through a temporary directory."""
    so, providers = _options(handle), _providers(handle)
    if not over_limit(model):
        return ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    with tempfile.TemporaryDirectory(prefix="actaudit-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        save_external(model, path, "weights.bin")
        return ort.InferenceSession(path, so, providers=providers)


def save_external(model: onnx.ModelProto, path: str, location: str) -> None:
    """``onnx.save`` with every weight in ``location`` beside ``path``; ``model`` is left as it was.

    ``onnx.save_model(save_as_external_data=True)`` moves the tensors' bytes out of the
    proto it is given: a second save of the same proto would then write an almost empty
    data file. The bytes are read back from the file just written.
    """
    try:
        onnx.save_model(
            model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location
        )
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the save's own error is the one to report
            external_data_helper.load_external_data_for_model(model, os.path.dirname(path))
        raise
    external_data_helper.load_external_data_for_model(model, os.path.dirname(path))


def plain_session(handle: OnnxModel) -> ort.InferenceSession:
    """The model as given, for comparisons (and to tell a bad model from a bad instrumentation)."""
    try:
        return session_for(handle, handle.model)
    except Exception as e:
        raise InputError(f"onnxruntime cannot load {handle.source}: {_short(e)}") from None


# -- capture ------------------------------------------------------------------------------------
def _axis_rule(site: OnnxSite, overrides: list[AxisOverride]) -> tuple[AxisRule, int | None]:
    """The site's axis rule (and where it came from), and the override's axis (checked at run time)."""
    names = (site.name, site.base)
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
    plan: SitePlan
    asked_axis: int | None
    fast: SiteOutputs | None = None
    careful: SiteOutputs | None = None
    info: SiteInfo | None = None
    stats: SiteStats | None = None
    broken: str | None = None
    first_call: int = -1  # index of the run that first reached it (first-execution order)


class _Runner:
    """Both instrumented sessions (the careful one built on first need) and the run loop."""

    def __init__(self, handle: OnnxModel, stuck_fraction: float, overrides: list[AxisOverride]) -> None:
        self.handle = handle
        self.f = stuck_fraction
        self.overrides = overrides
        self.sessions: dict[bool, tuple[ort.InferenceSession, dict[int, SiteOutputs], list[_Live]]] = {}
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

    def _build(self, careful: bool) -> tuple[ort.InferenceSession, dict[int, SiteOutputs], list[_Live]]:
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
            plan = SitePlan(site, rule, thr.low, thr.high)
            lives.append(_Live(site, plan, asked))
            plans.append(plan)
        outputs = instrument(model, plans, careful)
        try:
            sess = session_for(self.handle, model)
        except Exception as e:
            plain_session(self.handle)  # raises InputError when the model itself does not load
            raise RuntimeError(f"onnxruntime rejected the instrumented model: {_short(e, 600)}") from e
        if not careful:
            self.uncovered = uncovered
            self.live = lives
        return sess, outputs, lives

    def session(self, careful: bool) -> tuple[ort.InferenceSession, dict[int, SiteOutputs], list[_Live]]:
        if careful not in self.sessions:
            key = (careful, self.f, tuple((o.glob, o.axis) for o in self.overrides))
            cached = self.handle.built.get(key)
            if cached is None:
                uncovered_before = self.uncovered
                sess, outputs, lives = self._build(careful)
                cached = self.handle.built[key] = (sess, outputs, lives, list(self.uncovered))
                self.uncovered = uncovered_before
            sess, outputs, template, uncovered = cached
            # Fresh per-capture state; the session and the site plans are shared.
            lives = [_Live(lv.site, lv.plan, lv.asked_axis) for lv in template]
            if not careful:
                self.uncovered = list(uncovered)
                self.live = lives
            self.sessions[careful] = (sess, outputs, lives)
        return self.sessions[careful]

    def run(self, feeds: dict[str, np.ndarray], samples: int) -> None:
        sess, outs, _ = self.session(False)
        values = self._run(sess, outs, feeds)
        if not self._finite(values):
            sess, outs, _ = self.session(True)
            values = self._run(sess, outs, feeds)
            self.careful_batches += 1
            careful = True
        else:
            careful = False
        if self.keep_outputs:
            self.outputs.append(self.last_outputs)
        for i, live in enumerate(self.live):
            self._fold(live, values.get(i), samples, careful)
            if live.first_call < 0 and live.info is not None:
                live.first_call = self.calls
        self.calls += 1

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
            from ...rewrite.drift import flatten_outputs, output_names

            produced = dict(zip(model_outputs, arrays[: len(model_outputs)], strict=True))
            self.last_outputs = flatten_outputs(produced)
            if self.output_names is None:
                self.output_names = output_names(produced)
            arrays = arrays[len(model_outputs) :]
        got = dict(zip(names, arrays, strict=True))
        return {i: {stat: got[n] for stat, n in o.names.items()} for i, o in outs.items()}

    @staticmethod
    def _finite(values: dict[int, dict[str, np.ndarray]]) -> bool:
        """Fast results are usable: finite sums, and counts small enough to be exact in float32."""
        for v in values.values():
            for stat in ("min", "max", "sum", "sq", "pos_sum", "pos_sq"):
                a = v.get(stat)
                if a is not None and a.size and not np.isfinite(a).all():
                    return False
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
            if row["min"].shape[:1] != (units,):
                live.broken = f"its reduced statistics have {row['min'].shape} entries for {units} units"
                return
            if "elements" in row:  # summed over the iterations of an enclosing Loop
                elements = int(row["elements"].reshape(-1)[0]) // max(units, 1)
            else:
                elements = math.prod(shape) // max(units, 1)
            vec = _vectors(row, elements, careful)
            live.stats.add_batch(elements, samples if first else 0, vec)
            first = False

    def _start(self, live: _Live, shape: tuple[int, ...], axis: int) -> None:
        site = live.site
        if live.asked_axis is not None and not -len(shape) <= live.asked_axis < len(shape):
            names = (site.name, site.base)
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
    units = row["min"].shape[0]
    out: dict[str, np.ndarray] = {k: row[k].astype(np.float64) for k in ("min", "max", "pos_sum", "pos_sq")}
    if careful:
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


def batches_for(
    handle: OnnxModel, source: DataSource, samples: int | None, warnings: list[str] | None = None
) -> Iterator[Batch]:
    return bound_batches(handle, cap_samples(source.batches(), samples), [] if warnings is None else warnings)


def capture(handle: OnnxModel, source: DataSource, **kw: Unpack[CaptureKwargs]) -> Capture:
    """Per-site statistics; with ``keep_outputs`` the model's outputs of the same runs too."""
    o = CaptureOptions(**kw)
    samples, progress, keep_outputs = o.samples, o.progress, o.keep_outputs
    t0 = time.perf_counter()
    runner = _Runner(handle, o.stuck_fraction, o.axis_overrides)
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


def _chunk_samples(handle: OnnxModel, chunk: dict[str, np.ndarray], default: int) -> int:
    """Samples in a chunk: the leading dimension of the first input (in model order) that has one."""
    for spec in handle.inputs:
        x = chunk.get(spec.name)
        if x is not None and x.ndim > 0:
            return int(x.shape[0])
    return default


def _run_error(e: Exception, batch: int, start: int, n: int) -> Exception:
    msg = _short(e, 300)
    where = f"batch {batch} (samples {start}–{start + n - 1})"
    if "out of memory" in msg.lower() or "bad_alloc" in msg.lower():
        return ModelRunError(f"ran out of memory on {where}", hint="lower --batch-size")
    return ModelRunError(f"onnxruntime raised {type(e).__name__} on {where}: {msg}")


def _short(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + " …"


def model_facts(handle: OnnxModel) -> dict[str, Any]:
    """Opset, producer, counts, inputs and outputs with symbolic dims (see :mod:`.facts`)."""
    from .facts import model_facts as facts

    return facts(handle.model)
