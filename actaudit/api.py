"""The library entry point: ``audit(model, data, ...) -> Report``.

Data flows one way: load → calibrate → capture per-site statistics → classify →
report. The CLI is a thin layer over this module.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .assemble import MIN_SAMPLES_FOR_CONFIDENCE, build_report, is_info
from .calibration import data_source, labels_hint, synthetic_hint
from .data import DataSource
from .distributed import DistEnv
from .errors import InputError
from .gates import Gate, parse_gate
from .loading import LoadedModel, check_axis_overrides, load_model, load_options
from .options import AuditOptions, parse_axis_overrides
from .report import Report

if TYPE_CHECKING:
    from .shard import Shard

__all__ = [
    "MIN_SAMPLES_FOR_CONFIDENCE",
    "AuditOptions",
    "LoadedModel",
    "audit",
    "build_report",
    "check_axis_overrides",
    "data_source",
    "is_info",
    "load_model",
    "load_options",
    "parse_axis_overrides",
]


def audit(model: object, data: object = None, *, options: AuditOptions | None = None, **kw: Any) -> Report:
    """Audit ``model`` on ``data``; keyword arguments are :class:`AuditOptions` fields."""
    opts = options or AuditOptions(**kw)
    gates = [parse_gate(g) for g in opts.fail_on]
    if opts.dist is not None:
        return _audit_distributed(model, data, opts, opts.dist, gates)
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
    shard = _shard(opts)
    if total and shard is not None:
        total = -(-total // shard.count)
    if stage is not None:
        stage("calibrating", total)
    elif set_total is not None:
        set_total(total)
    part = source
    if shard is not None:
        from .shard import sharded

        part = sharded(source, shard, opts.samples, loaded.handle.batches)
    try:
        cap = loaded.capture(part, opts)
    except InputError as e:
        raise (synthetic_hint(e, opts) if source.synthetic else labels_hint(e, data, opts)) from None
    t_cap = time.perf_counter()
    report = build_report(
        loaded, part, cap, opts, gates, {"load_s": t_load - t0, "capture_s": t_cap - t_load}
    )
    if opts.input_range:
        _attach_proofs(report, loaded, source, opts)
    if shard is not None:
        from .shard import shard_report

        return shard_report(report, loaded, source, cap, opts, t_cap - t_load)
    return report


def _shard(opts: AuditOptions) -> Shard | None:
    if opts.shard is None:
        return None
    from .shard import Shard

    if not isinstance(opts.shard, Shard):
        raise TypeError(f"shard must be an actaudit.shard.Shard, not {type(opts.shard).__name__}")
    return opts.shard


def _audit_distributed(
    model: object, data: object, opts: AuditOptions, env: DistEnv, gates: list[Gate]
) -> Report:
    """One rank of a torchrun job: its shard of the data, then the counters of all ranks added up.

    Every rank reaches the same collective whether it succeeded or failed, so one rank's
    error ends the whole run at once with that rank's line (no rank waits for the others).
    """
    from .backends.torch.distributed import Group
    from .errors import EXIT_INTERNAL, ActauditError
    from .shard import Shard, sharded

    t0 = time.perf_counter()
    group = Group(env, opts.device)
    try:
        failure: tuple[int, str] | None = None
        try:
            loaded = load_model(model, opts)
            loaded.handle.use_local_device(env.local_rank)
            t_load = time.perf_counter()
            source = data_source(data, loaded, opts)
            part = sharded(source, Shard(env.rank, env.world_size), opts.samples, loaded.handle.batches)
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
        _attach_proofs(report, loaded, source, opts)
    report.run["processes"] = env.world_size
    report.run["process_group"] = group.backend
    return report


def _attach_proofs(report: Report, loaded: LoadedModel, source: DataSource, opts: AuditOptions) -> None:
    from .prune.proofs import attach_proofs

    stuck = opts.settings.stuck_fraction
    attach_proofs(
        report.sites, report.warnings, loaded.handle, source, opts.samples, list(opts.input_range), stuck
    )
