"""The library entry point: ``audit(model, data, ...) -> Report``.

Data flows one way: load → calibrate → capture per-site statistics → classify →
report. The CLI is a thin layer over this module.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .data import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEED,
    DEFAULT_SYNTHETIC_SAMPLES,
    DataSource,
    InputSpec,
    from_arrays,
    from_loader,
    load_calib_file,
    normalize_batch,
    parse_input_shapes,
    synthetic,
)
from .detect import ONNX, detect_format
from .errors import CalibrationError, InputError
from .fileio import sha256_file
from .gates import evaluate, parse_gate
from .report import Report
from .stats import AxisOverride, Capture
from .verdicts import Settings, classify

MIN_SAMPLES_FOR_CONFIDENCE = 30


@dataclass
class AuditOptions:
    """Every knob of an audit; ``None`` means "use the default"."""

    calib: str | os.PathLike[str] | None = None
    data_loader: str | None = None
    samples: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    input_shapes: Sequence[str] = ()
    seed: int = DEFAULT_SEED
    arch: str | None = None
    state_key: str | None = None
    trust_pickle: bool = False
    trust_code: bool = False
    strip_prefix: Sequence[str] = ()
    non_strict: bool = False
    unit_axis: Sequence[str] = ()
    settings: Settings = field(default_factory=Settings)
    fail_on: Sequence[str] = ()
    device: str = "cpu"
    provider: str | None = None
    threads: int | None = None
    per_unit: bool = False
    input_range: Sequence[str] = ()  # [NAME=]LOW,HIGH: prove units dead by interval bounds
    progress: Callable[[int], None] | None = None
    # Maps each item a loader yields to the model's inputs, e.g. ``lambda b: b[0]`` for (inputs, labels).
    input_fn: Callable[[Any], Any] | None = None
    val_range: tuple[float, float] | None = None  # synthetic values drawn from [LOW, HIGH]
    shard: Any = None  # actaudit.shard.Shard: run only that part of the data, report exact counters
    dist: Any = None  # actaudit.distributed.DistEnv: this process is one rank of a torchrun job


def parse_axis_overrides(specs: Iterable[str]) -> list[AxisOverride]:
    out = []
    for spec in specs:
        glob, sep, axis = spec.rpartition("=")
        try:
            value = int(axis)
        except ValueError:
            value = None
        if not sep or not glob or value is None:
            raise InputError(f"--unit-axis {spec!r} is not SITE_GLOB=AXIS (e.g. 'encoder.*=-1')")
        out.append(AxisOverride(glob, value))
    return out


class LoadedModel:
    """A model from either backend, with the facts the report needs."""

    def __init__(self, backend: str, handle: Any, fmt: str, path: str | None, sha256: str | None) -> None:
        self.backend = backend  # "torch" | "onnx"
        self.handle = handle
        self.fmt = fmt
        self.path = path
        self.sha256 = sha256

    @property
    def inputs(self) -> list[InputSpec]:
        return list(self.handle.inputs)

    @property
    def notes(self) -> list[str]:
        return list(getattr(self.handle, "notes", []))

    def capture(self, source: DataSource, opts: AuditOptions) -> Capture:
        overrides = parse_axis_overrides(opts.unit_axis)
        mod = _backend_module(self.backend)
        cap: Capture = mod.capture(
            self.handle,
            source,
            samples=opts.samples,
            stuck_fraction=opts.settings.stuck_fraction,
            axis_overrides=overrides,
            progress=opts.progress,
        )
        check_axis_overrides(overrides, cap)
        return cap


def check_axis_overrides(overrides: Sequence[AxisOverride], cap: Capture) -> None:
    """A ``--unit-axis`` glob that matches no site is a typo in the option: in CI it must not pass silently."""
    import fnmatch
    import re

    for o in overrides:
        names = set()
        for n in [*(s.info.name for s in cap.sites), *(u.name for u in cap.uncovered)]:
            names |= {n, re.sub(r"#\d+$", "", n)}
        names |= {s.info.module for s in cap.sites}
        if not any(fnmatch.fnmatchcase(n, o.glob) for n in names if n):
            listed = [s.info.name for s in cap.sites]
            shown = ", ".join(listed[:12]) + (" …" if len(listed) > 12 else "")
            raise InputError(
                f"--unit-axis {o.glob}={o.axis}: the glob {o.glob!r} matches no site",
                hint=f"sites are: {shown or 'none'} (actaudit inspect MODEL lists them)",
            )


def _read_pt(p: Path) -> DataSource:
    from .backends.torch.data import load_pt_batches

    return load_pt_batches(p)


CALIB_READERS = {".pt": _read_pt, ".pth": _read_pt}


def _backend_module(name: str) -> Any:
    if name == "torch":
        from .backends.torch import backend as torch_backend

        return torch_backend
    from .backends.onnx import backend as onnx_backend

    return onnx_backend


def load_model(model: Any, opts: AuditOptions) -> LoadedModel:
    """A path (any supported format), an in-memory ``nn.Module`` or an ONNX ``ModelProto``."""
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        fmt = detect_format(p)
        sha = sha256_file(p)
        if fmt == ONNX:
            if opts.arch or opts.strip_prefix or opts.non_strict:
                raise InputError(
                    "--arch, --strip-prefix and --non-strict apply to state_dict checkpoints, not to ONNX models"
                )
            h = _backend_module("onnx").load(p, provider=opts.provider, threads=opts.threads)
            return LoadedModel("onnx", h, "onnx", str(p), sha)
        if opts.provider:
            raise InputError("--provider applies to ONNX models; use --device for PyTorch checkpoints")
        h = _backend_module("torch").load(
            p,
            arch=opts.arch,
            state_key=opts.state_key,
            trust_pickle=opts.trust_pickle,
            trust_code=opts.trust_code,
            device=opts.device,
            strip_prefixes=tuple(opts.strip_prefix),
            non_strict=opts.non_strict,
        )
        return LoadedModel("torch", h, h.fmt, str(p), sha)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        h = _backend_module("torch").from_module(model)
        return LoadedModel(
            "torch", h, "in-memory" if h.fmt != "torchscript" else "in-memory torchscript", None, None
        )
    if torch is not None and isinstance(model, getattr(torch.export, "ExportedProgram", ())):
        h = _backend_module("torch").from_exported_program(model)
        return LoadedModel("torch", h, "in-memory torch.export", None, None)
    onnx = sys.modules.get("onnx")
    if onnx is not None and isinstance(model, onnx.ModelProto):
        h = _backend_module("onnx").load(model, provider=opts.provider, threads=opts.threads)
        return LoadedModel("onnx", h, "onnx", None, None)
    raise InputError(
        f"cannot audit a {type(model).__name__}: give a path, a torch.nn.Module (eager or ScriptModule), "
        "a torch.export.ExportedProgram or an onnx.ModelProto"
    )


def data_source(data: Any, model: LoadedModel, opts: AuditOptions) -> DataSource:
    """The batches to calibrate on, with ``opts.input_fn`` applied to every item when given."""
    source = _data_source(data, model, opts)
    fn = opts.input_fn
    if fn is None:
        return source
    inner = source.batches

    def mapped() -> Any:
        for args, kwargs in inner():
            raw = (
                kwargs if kwargs and not args else (args[0] if len(args) == 1 and not kwargs else tuple(args))
            )
            yield normalize_batch(fn(raw))

    return DataSource(
        mapped, source.description + " (through input_fn)", source.synthetic, source.total_samples
    )


_LABELS_HINT = (
    "if the data yields (inputs, labels) pairs, pass input_fn=lambda batch: batch[0] "
    "; with the CLI, write a --data-loader function that yields the inputs only"
)


def _labels_hint(e: InputError, data: Any, opts: AuditOptions) -> InputError:
    """The model rejected a batch of several positional values: likely labels passed to ``forward``."""
    text = e.message.lower()
    iterable = data is not None and not isinstance(data, (str, os.PathLike, np.ndarray, dict))
    loader = iterable or opts.data_loader is not None
    if (
        loader
        and opts.input_fn is None
        and e.hint is None
        and ("positional" in text or "argument" in text or "inputs but the model takes" in text)
    ):
        e.hint = _LABELS_HINT
    return e


def _data_source(data: Any, model: LoadedModel, opts: AuditOptions) -> DataSource:
    given = [x is not None for x in (data, opts.calib, opts.data_loader)]
    if sum(given) > 1:
        raise InputError("give one of --calib, --data-loader (or the data argument), not several")
    if opts.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {opts.batch_size}")
    if opts.samples is not None and opts.samples < 1:
        raise InputError(f"--samples must be at least 1, got {opts.samples}")
    if opts.calib is not None:
        return load_calib_file(opts.calib, opts.batch_size, CALIB_READERS)
    if opts.data_loader is not None:
        return from_loader(opts.data_loader)
    if data is None:
        from dataclasses import replace

        from .data import split_input_dtypes

        plain, dtypes = split_input_dtypes(opts.input_shapes)
        shapes = parse_input_shapes(plain)
        _check_batch_axis(shapes, model.inputs)
        specs = [
            replace(s, dtype=dtypes.get(s.name) or (dtypes.get(None) if i == 0 else None) or s.dtype)
            for i, s in enumerate(model.inputs)
        ]
        return synthetic(
            specs,
            shapes,
            samples=opts.samples or DEFAULT_SYNTHETIC_SAMPLES,
            batch_size=opts.batch_size,
            seed=opts.seed,
            val_range=opts.val_range,
        )
    if isinstance(data, (str, os.PathLike)):
        return load_calib_file(data, opts.batch_size, CALIB_READERS)
    if isinstance(data, np.ndarray) or type(data).__name__ == "Tensor":
        return from_arrays([data], opts.batch_size, f"in-memory {type(data).__name__} {tuple(data.shape)}")
    if isinstance(data, dict):
        return from_arrays(data, opts.batch_size, "in-memory arrays " + ", ".join(map(str, data)))
    if hasattr(data, "__iter__"):
        items = data
        return DataSource(
            lambda: (normalize_batch(b) for b in items), f"in-memory {type(data).__name__} of batches"
        )
    raise InputError(f"cannot use a {type(data).__name__} as calibration data")


def _check_batch_axis(shapes: dict[str | None, tuple[int, ...]], inputs: list[InputSpec]) -> None:
    """``--input-shape 3x16x16`` for a model declaring ``?x3x16x16``: say so before a confusing run."""
    from .hints import batch_axis_hint

    for name, shape in shapes.items():
        spec = next((s for s in inputs if s.name == name), inputs[0] if len(inputs) == 1 else None)
        if spec is None or spec.shape is None:
            continue
        fix = batch_axis_hint(shape, spec.shape)
        if fix:
            typed = "x".join(map(str, shape))
            raise InputError(
                f"--input-shape {(name + '=') if name else ''}{typed}: input {spec.name!r} has "
                f"{len(spec.shape)} axes ({_dims(spec.shape)}) but {typed} gives {len(shape)}",
                hint=fix,
            )


def _dims(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _synthetic_hint(e: InputError, opts: AuditOptions) -> InputError:
    """A model that raised on synthetic data before any activation: the shape typed is the likely cause."""
    if opts.input_shapes and e.hint is None and "before any activation" in e.message:
        typed = ", ".join(opts.input_shapes)
        e.hint = (
            f"--input-shape {typed}: the leading dim is the batch axis, replaced by --batch-size; "
            f"for one sample of that shape write 1x{typed.split('=')[-1]}"
        )
    return e


def audit(model: Any, data: Any = None, *, options: AuditOptions | None = None, **kw: Any) -> Report:
    """Audit ``model`` on ``data``; keyword arguments are :class:`AuditOptions` fields."""
    opts = options or AuditOptions(**kw)
    gates = [parse_gate(g) for g in opts.fail_on]
    if opts.dist is not None:
        return _audit_distributed(model, data, opts, gates)
    t0 = time.perf_counter()
    stage = getattr(opts.progress, "stage", None)
    if stage is not None:
        stage("loading the model")
    loaded = load_model(model, opts)
    t_load = time.perf_counter()
    source = data_source(data, loaded, opts)
    t = source.total_samples
    total = min(t, opts.samples) if t and opts.samples else (t or opts.samples)
    set_total = getattr(opts.progress, "set_total", None)
    if total and opts.shard is not None:
        total = -(-total // opts.shard.count)
    if stage is not None:
        stage("calibrating", total)
    elif set_total is not None:
        set_total(total)
    part = source
    if opts.shard is not None:
        from .shard import sharded

        part = sharded(source, opts.shard, opts.samples, getattr(loaded.handle, "fixed_batch", None))
    try:
        cap = loaded.capture(part, opts)
    except InputError as e:
        raise (_synthetic_hint(e, opts) if source.synthetic else _labels_hint(e, data, opts)) from None
    t_cap = time.perf_counter()
    report = build_report(
        loaded, part, cap, opts, gates, {"load_s": t_load - t0, "capture_s": t_cap - t_load}
    )
    if opts.input_range:
        from .prune.core import attach_proofs

        attach_proofs(report, loaded, source, opts)
    if opts.shard is not None:
        from .shard import shard_report

        return shard_report(report, loaded, source, cap, opts, t_cap - t_load)
    return report


def _audit_distributed(model: Any, data: Any, opts: AuditOptions, gates: list[Any]) -> Report:
    """One rank of a torchrun job: its shard of the data, then the counters of all ranks added up.

    Every rank reaches the same collective whether it succeeded or failed, so one rank's
    error ends the whole run at once with that rank's line (no rank waits for the others).
    """
    from .backends.torch.distributed import Group
    from .errors import EXIT_INTERNAL, ActauditError
    from .shard import Shard, sharded

    env = opts.dist
    t0 = time.perf_counter()
    group = Group(env, opts.device)
    try:
        failure: tuple[int, str] | None = None
        try:
            loaded = load_model(model, opts)
            if loaded.backend == "onnx":
                loaded.handle.device_id = env.local_rank  # used by GPU providers only
            t_load = time.perf_counter()
            source = data_source(data, loaded, opts)
            part = sharded(
                source,
                Shard(env.rank, env.world_size),
                opts.samples,
                getattr(loaded.handle, "fixed_batch", None),
            )
            cap = loaded.capture(part, opts)
        except ActauditError as e:
            failure = (e.exit_code, e.one_line())
        except Exception as e:
            failure = (EXIT_INTERNAL, f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
        group.check(failure)
        cap = group.combine(cap)
        t_cap = time.perf_counter()
    finally:
        group.close()
    report = build_report(
        loaded, source, cap, opts, gates, {"load_s": t_load - t0, "capture_s": t_cap - t_load}
    )
    if opts.input_range:
        from .prune.core import attach_proofs

        attach_proofs(report, loaded, source, opts)
    report.run["processes"] = env.world_size
    report.run["process_group"] = group.backend
    return report


_INFO_PREFIXES = ("weights from key",)


def is_info(note: str) -> bool:
    """A loader note that reports a choice the tool made for the user, not something to fix."""
    return note.startswith(_INFO_PREFIXES)


def build_report(
    loaded: LoadedModel,
    source: DataSource,
    cap: Capture,
    opts: AuditOptions,
    gates: list[Any],
    timings: dict[str, float],
) -> Report:
    if cap.samples == 0:
        # A gate such as dead>0 would pass on no data at all: a CI bypass, not a result.
        raise CalibrationError(
            f"calibration data {source.description} gave 0 samples",
            hint="give data with at least one sample along axis 0",
        )
    verdicts = [classify(s.info, s.stats, opts.settings) for s in cap.sites]
    notes = [n for n in loaded.notes if is_info(n)]
    warnings = [n for n in loaded.notes if not is_info(n)] + list(cap.warnings)
    if source.synthetic:
        warnings.append(
            "calibration data is synthetic (random inputs): verdicts describe random inputs, not real data; "
            "pass --calib or --data-loader"
        )
    offered = source.total_samples
    if offered is not None and opts.samples is not None:
        offered = min(offered, opts.samples)
    if offered is not None and 0 < cap.samples < offered:
        warnings.append(
            f"{offered - cap.samples} of {offered} calibration samples were not used: the model takes "
            "batches of a fixed size and the remainder did not fill one"
        )
    if cap.samples < MIN_SAMPLES_FOR_CONFIDENCE:
        warnings.append(
            f"only {cap.samples} calibration samples: a unit that fires on up to "
            f"{100 * (1 - 0.05 ** (1 / max(cap.samples, 1))):.0f}% of inputs can still look dead"
        )
    nonfinite = [v.info.name for v in verdicts if int(v.stats.nonfinite.sum())]
    if nonfinite:
        warnings.append(
            "non-finite pre-activations (NaN/Inf) at "
            + ", ".join(nonfinite[:5])
            + ": verdicts there use finite values only"
        )
    if not verdicts:
        warnings.append("no activation call sites were found")
    calibration = {
        "source": source.description,
        "samples": cap.samples,
        "batches": cap.batches,
        "batch_size": opts.batch_size,
        "synthetic": source.synthetic,
    }
    if source.synthetic:
        calibration["seed"] = opts.seed
    report = Report(
        model={"path": loaded.path, "format": loaded.fmt, "sha256": loaded.sha256},
        calibration=calibration,
        settings=opts.settings,
        sites=verdicts,
        uncovered=cap.uncovered,
        warnings=warnings,
        notes=notes,
        inputs=cap.inputs,
        per_unit=opts.per_unit,
    )
    report.gates = evaluate(gates, verdicts, report.summary())
    report.run = {
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "host": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "versions": _versions(loaded.backend),
    }
    return report


def _versions(backend: str) -> dict[str, str]:
    names = ["torch"] if backend == "torch" else ["onnx", "onnxruntime"]
    out = {}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out
