"""Output drift of a rewritten model against the original, and the pass ledger.

Drift is measured over every floating-point output of every calibration sample at
once: ``‖y′ − y‖ / ‖y‖`` with both norms taken over the concatenation. The original's
outputs are recorded once (during the audit pass) and kept in memory as float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..jsonform import json_float as _r

Outputs = list[np.ndarray]  # the floating-point outputs of one batch, in a fixed order


def flatten_outputs(out: object) -> Outputs:
    """Floating-point arrays of a model's output (tensor, array, tuple/list/dict, nested), in order."""
    found: Outputs = []

    def walk(x: object) -> None:
        if x is None:
            return
        if isinstance(x, np.ndarray):
            if np.issubdtype(x.dtype, np.floating):
                found.append(np.array(x, dtype=np.float32, copy=True))
            return
        if hasattr(x, "detach") and hasattr(x, "is_floating_point"):
            if x.is_floating_point():
                found.append(x.detach().float().cpu().numpy().copy())
            return
        if isinstance(x, dict):
            for k in x:
                walk(x[k])
            return
        if isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(out)
    return found


def output_names(out: object) -> list[str]:
    """Names of the arrays :func:`flatten_outputs` returns, in the same order: dict keys,
    ``output`` for a single tensor, ``output0``, ``output1``… (``output0.1`` nested) for sequences."""
    names: list[str] = []

    def walk(x: object, path: str) -> None:
        if x is None:
            return
        if isinstance(x, np.ndarray):
            if np.issubdtype(x.dtype, np.floating):
                names.append(path or "output")
            return
        if hasattr(x, "detach") and hasattr(x, "is_floating_point"):
            if x.is_floating_point():
                names.append(path or "output")
            return
        if isinstance(x, dict):
            for k in x:
                walk(x[k], f"{path}.{k}" if path else str(k))
            return
        if isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{path}.{i}" if path else f"output{i}")

    walk(out, "")
    return names


@dataclass
class Drift:
    """How far a variant's outputs moved from the original's on ``samples`` samples."""

    rel_l2: float
    max_abs: float
    samples: int
    top1: float | None = None  # fraction of samples whose argmax class is unchanged
    per_output: dict[str, float] = field(default_factory=dict)  # relative L2 of each output alone
    energy_share: dict[str, float] = field(default_factory=dict)  # each output's share of ‖y‖²

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "relative_l2": _r(self.rel_l2),
            "max_abs": _r(self.max_abs),
            "top1_agreement": _r(self.top1),
            "samples": self.samples,
        }
        if self.per_output:
            d["per_output"] = {
                k: {"relative_l2": _r(v), "share_of_norm2": _r(self.energy_share.get(k))}
                for k, v in self.per_output.items()
            }
        return d


def looks_like_class_scores(out: Outputs) -> bool:
    """One 2-D output ``[N, C]`` with at least two classes."""
    return len(out) == 1 and out[0].ndim == 2 and out[0].shape[1] >= 2


class Reference:
    """The original model's outputs, batch by batch, and their norm."""

    def __init__(
        self, batches: list[Outputs], names: list[str] | None = None, select: list[int] | None = None
    ) -> None:
        if not batches:
            raise ValueError("no reference outputs")
        self.batches = batches
        n_out = len(batches[0])
        self.names = (
            list(names) if names is not None and len(names) == n_out else [f"output{i}" for i in range(n_out)]
        )
        self.select = list(range(n_out)) if select is None else list(select)
        self.samples_per_batch = [_batch_len(b) for b in batches]
        self.samples = sum(self.samples_per_batch)
        self.class_scores = looks_like_class_scores(batches[0])

    def keep_only(self, spec: str | None) -> None:
        """``--drift-outputs NAME[,NAME]``: measure the drift over these outputs only (all when None)."""
        if not spec:
            return
        want = [w.strip() for w in spec.split(",") if w.strip()]
        missing = [w for w in want if w not in self.names]
        if missing or not want:
            raise InputError(
                f"--drift-outputs {spec!r}: no floating-point output named {', '.join(missing) or '(empty)'}",
                hint=f"the model's outputs are: {', '.join(self.names)}",
            )
        self.select = [self.names.index(w) for w in want]

    def norm(self, n_batches: int | None = None) -> float:
        bs = self.batches[:n_batches] if n_batches is not None else self.batches
        return math.sqrt(
            sum(float(np.square(b[i], dtype=np.float64).sum()) for b in bs for i in self.select if i < len(b))
        )

    def batches_for(self, samples: int | None) -> int:
        """How many whole batches cover at least ``samples`` samples (all when None)."""
        if samples is None:
            return len(self.batches)
        total = 0
        for i, n in enumerate(self.samples_per_batch):
            total += n
            if total >= samples:
                return i + 1
        return len(self.batches)

    def compare(self, produced: Iterable[Outputs], n_batches: int | None = None) -> Drift:
        n_batches = len(self.batches) if n_batches is None else n_batches
        n_out = len(self.names)
        d_out = [0.0] * n_out
        r_out = [0.0] * n_out
        max_abs = 0.0
        agree = seen = 0
        count = 0
        for i, out in enumerate(produced):
            if i >= n_batches:
                break
            ref = self.batches[i]
            if len(out) != len(ref) or any(a.shape != b.shape for a, b in zip(out, ref, strict=False)):
                raise ValueError(
                    f"batch {i}: the rewritten model's outputs {[a.shape for a in out]} differ in layout from the "
                    f"original's {[b.shape for b in ref]}"
                )
            for j, (a, b) in enumerate(zip(out, ref, strict=True)):
                d = a.astype(np.float64) - b.astype(np.float64)
                d_out[j] += float(np.square(d).sum())
                r_out[j] += float(np.square(b, dtype=np.float64).sum())
                if d.size and j in self.select:
                    max_abs = max(max_abs, float(np.abs(d).max()))
            if self.class_scores:
                agree += int((out[0].argmax(1) == ref[0].argmax(1)).sum())
                seen += ref[0].shape[0]
            count += 1
        if count < n_batches:
            raise ValueError(f"the rewritten model produced {count} batches, expected {n_batches}")
        diff_sq = sum(d_out[j] for j in self.select)
        ref_sq = sum(r_out[j] for j in self.select)
        rel = _rel(diff_sq, ref_sq)
        samples = sum(self.samples_per_batch[:n_batches])
        total = sum(r_out)
        per = {self.names[j]: _rel(d_out[j], r_out[j]) for j in range(n_out)} if n_out > 1 else {}
        share = (
            {self.names[j]: (r_out[j] / total if total > 0 else 0.0) for j in range(n_out)}
            if n_out > 1
            else {}
        )
        return Drift(rel, max_abs, samples, (agree / seen) if seen else None, per, share)


def _rel(diff_sq: float, ref_sq: float) -> float:
    return math.sqrt(diff_sq) / math.sqrt(ref_sq) if ref_sq > 0 else (0.0 if diff_sq == 0 else math.inf)


def _batch_len(outs: Outputs) -> int:
    for a in outs:
        if a.ndim:
            return int(a.shape[0])
    return 1


@dataclass
class Ledger:
    """Every run over calibration data, in samples; a pass is one run over all of it."""

    total_samples: int
    entries: list[tuple[str, int]] = field(default_factory=list)

    def add(self, purpose: str, samples: int) -> None:
        self.entries.append((purpose, samples))

    @property
    def passes(self) -> float:
        return sum(s for _, s in self.entries) / max(self.total_samples, 1)

    def by_purpose(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for purpose, s in self.entries:
            out[purpose] = out.get(purpose, 0.0) + s / max(self.total_samples, 1)
        return {k: round(v, 3) for k, v in out.items()}
