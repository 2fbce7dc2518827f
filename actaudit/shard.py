"""Shards of the calibration stream: which batches one process of a split audit runs.

Batch ``i`` of the stream (after ``--samples`` has capped it and, for a model with a
fixed batch size, after it was re-sliced to that size) belongs to shard ``i mod N``. The
rule needs no sample count up front, so it works alike for files, data loaders and
synthetic inputs, and every sample lands in exactly one shard. Every process still reads
(or generates) the whole stream and drops the batches that are not its own: the model
runs each sample once, but a data loader's own cost is paid in every process.

Nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .data import Batch, DataSource, cap_samples
from .errors import CalibrationError, InputError

if TYPE_CHECKING:
    from .loading import LoadedModel
    from .options import AuditOptions
    from .stats import Capture

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``; shown 1-based as ``K/N``."""

    index: int
    count: int

    @property
    def label(self) -> str:
        return f"{self.index + 1}/{self.count}"

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index + 1, "count": self.count}


def parse_shard(text: str) -> Shard:
    """``K/N`` with ``1 <= K <= N`` (the K-th of N parts)."""
    m = _SHARD_RE.match(text)
    if not m:
        raise InputError(f"--shard {text!r} is not K/N", hint="e.g. --shard 1/4 ... --shard 4/4")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise InputError(f"--shard {text!r}: K must be between 1 and N (N >= 1)", hint="e.g. --shard 1/4")
    return Shard(k - 1, n)


def take_shard(batches: Iterable[Batch], shard: Shard) -> Iterator[Batch]:
    for i, b in enumerate(batches):
        if i % shard.count == shard.index:
            yield b


def sharded(
    source: DataSource,
    shard: Shard,
    samples: int | None,
    recut: Callable[[Iterable[Batch], list[str]], Iterator[Batch]] | None = None,
) -> DataSource:
    """The part of ``source`` that ``shard`` runs.

    The cap and the fixed-batch re-slicing happen here, before the split, so that the
    shards together see exactly the batches a single run sees; the backend's own cap and
    re-slicing are then no-ops.
    """

    def batches() -> Iterator[Batch]:
        stream: Iterable[Batch] = cap_samples(source.batches(), samples)
        if recut is not None:  # the model's binding and fixed-batch re-slicing (ModelHandle.batches)
            stream = recut(stream, [])
        n = 0
        for b in take_shard(stream, shard):
            n += 1
            yield b
        if n == 0:
            raise CalibrationError(
                f"shard {shard.label} got no batch: the calibration data has fewer batches than shards",
                hint="use fewer shards or a smaller --batch-size",
            )

    return DataSource(
        batches,
        source.description,
        synthetic=source.synthetic,
        total_samples=None,  # the shard's share is known only once it ran
        details=dict(source.details),
    )


def shard_report(
    report: Any,  # a report.audit.Report: the load floor does not import the report
    loaded: LoadedModel,
    source: DataSource,
    cap: Capture,
    opts: AuditOptions,
    capture_s: float,
) -> Any:
    """Turn a shard's report into one that ``actaudit merge`` reads: exact counters, no gate verdicts.

    Gates are parsed and their site globs checked here (a typo fails early, on every
    shard), but evaluated only on the merged report: a shard's share decides nothing.
    """
    from .counters import counters_section

    offered = source.total_samples
    if offered is not None and opts.samples is not None:
        offered = min(offered, opts.samples)
    report.counters = counters_section(
        shard=cast(Shard, opts.shard).to_dict(),
        backend=loaded.backend,
        offered=offered,
        options={
            "samples": opts.samples,
            "seed": opts.seed,
            "unit_axis": list(opts.unit_axis),
            "fail_on": list(opts.fail_on),
            "allow_uncovered": bool(opts.allow_uncovered),
            "per_unit": bool(opts.per_unit),
        },
        notes=[*loaded.notes, *cap.warnings],
        cap=cap,
        capture_s=capture_s,
    )
    report.gates = []
    report.warnings.append(
        f"shard {cast(Shard, opts.shard).label} of the calibration data: gates are evaluated when the shard reports "
        "are combined with actaudit merge"
    )
    report.run["shard"] = cast(Shard, opts.shard).to_dict()
    return report
