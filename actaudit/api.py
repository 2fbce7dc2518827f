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
from .errors import InputError
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
    strip_prefix: Sequence[str] = ()
    non_strict: bool = False
    unit_axis: Sequence[str] = ()
    settings: Settings = field(default_factory=Settings)
    fail_on: Sequence[str] = ()
    device: str = "cpu"
    provider: str | None = None
    threads: int | None = None
    per_unit: bool = False
    progress: Callable[[int], None] | None = None


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
        return mod.capture(  # type: ignore[no-any-return,unused-ignore]
            self.handle,
            source,
            samples=opts.samples,
            stuck_fraction=opts.settings.stuck_fraction,
            axis_overrides=overrides,
            progress=opts.progress,
        )


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
            device=opts.device,
            strip_prefixes=tuple(opts.strip_prefix),
            non_strict=opts.non_strict,
        )
        return LoadedModel("torch", h, h.fmt, str(p), sha)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        h = _backend_module("torch").from_module(model)
        return LoadedModel("torch", h, "in-memory", None, None)
    onnx = sys.modules.get("onnx")
    if onnx is not None and isinstance(model, onnx.ModelProto):
        h = _backend_module("onnx").load(model, provider=opts.provider, threads=opts.threads)
        return LoadedModel("onnx", h, "onnx", None, None)
    raise InputError(
        f"cannot audit a {type(model).__name__}: give a path, a torch.nn.Module or an onnx.ModelProto"
    )


def data_source(data: Any, model: LoadedModel, opts: AuditOptions) -> DataSource:
    given = [x is not None for x in (data, opts.calib, opts.data_loader)]
    if sum(given) > 1:
        raise InputError("give one of --calib, --data-loader (or the data argument), not several")
    if opts.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {opts.batch_size}")
    if opts.samples is not None and opts.samples < 1:
        raise InputError(f"--samples must be at least 1, got {opts.samples}")
    if opts.calib is not None:
        return load_calib_file(opts.calib, opts.batch_size)
    if opts.data_loader is not None:
        return from_loader(opts.data_loader)
    if data is None:
        shapes = parse_input_shapes(opts.input_shapes)
        return synthetic(
            model.inputs,
            shapes,
            samples=opts.samples or DEFAULT_SYNTHETIC_SAMPLES,
            batch_size=opts.batch_size,
            seed=opts.seed,
        )
    if isinstance(data, (str, os.PathLike)):
        return load_calib_file(data, opts.batch_size)
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


def audit(model: Any, data: Any = None, *, options: AuditOptions | None = None, **kw: Any) -> Report:
    """Audit ``model`` on ``data``; keyword arguments are :class:`AuditOptions` fields."""
    opts = options or AuditOptions(**kw)
    gates = [parse_gate(g) for g in opts.fail_on]
    t0 = time.perf_counter()
    loaded = load_model(model, opts)
    t_load = time.perf_counter()
    source = data_source(data, loaded, opts)
    set_total = getattr(opts.progress, "set_total", None)
    if set_total is not None:
        t = source.total_samples
        set_total(min(t, opts.samples) if t and opts.samples else (t or opts.samples))
    cap = loaded.capture(source, opts)
    t_cap = time.perf_counter()
    return build_report(
        loaded, source, cap, opts, gates, {"load_s": t_load - t0, "capture_s": t_cap - t_load}
    )


def build_report(
    loaded: LoadedModel,
    source: DataSource,
    cap: Capture,
    opts: AuditOptions,
    gates: list[Any],
    timings: dict[str, float],
) -> Report:
    verdicts = [classify(s.info, s.stats, opts.settings) for s in cap.sites]
    warnings = list(loaded.notes) + list(cap.warnings)
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
