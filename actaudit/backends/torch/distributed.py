"""Per-unit counters of every rank added up with ``torch.distributed`` collectives.

Only the reduced vectors travel (sums and counts with ``SUM``, minima with ``MIN``,
maxima with ``MAX``), never activations; ONNX audits use the same path, their vectors
come from onnxruntime as NumPy arrays. gloo on CPU, NCCL when the audit runs on CUDA.
Every collective has the group's timeout, so a rank that stops answering fails the run
instead of hanging it (torchrun itself stops the job when a rank process dies).
"""

from __future__ import annotations

import datetime
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ...distributed import DistEnv, RankFailed
from ...errors import EXIT_INTERNAL
from ...stats import FIELDS, Capture, SiteResult, SiteStats

T = TypeVar("T")
_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


class Group:
    """The process group of one audit; ``close()`` tears it down."""

    def __init__(self, env: DistEnv, device: str = "cpu") -> None:
        self.env = env
        cuda = device.startswith("cuda")
        self.backend = "nccl" if cuda and dist.is_nccl_available() else "gloo"
        self.device = torch.device(device if ":" in device or not cuda else f"cuda:{env.local_rank}")
        if cuda:
            torch.cuda.set_device(self.device)
        try:
            dist.init_process_group(
                self.backend,
                rank=env.rank,
                world_size=env.world_size,
                timeout=datetime.timedelta(seconds=env.timeout_s),
                device_id=self.device if self.backend == "nccl" else None,
            )
        except Exception as e:
            raise RankFailed(
                f"rank {env.rank} of {env.world_size}: cannot join the process group ({self.backend}): "
                f"{type(e).__name__}: {' '.join(str(e).split())[:200]}",
                EXIT_INTERNAL,
            ) from None

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def gather(self, obj: T) -> list[T]:
        out: list[T] = [obj] * self.env.world_size
        try:
            dist.all_gather_object(out, obj)
        except Exception as e:
            raise self._lost(e) from None
        return out

    def _lost(self, e: Exception) -> RankFailed:
        """A collective that failed: a rank died or did not answer within the timeout."""
        return RankFailed(
            f"rank {self.env.rank} of {self.env.world_size}: the other ranks did not answer within "
            f"{self.env.timeout_s:g} s or left the job ({type(e).__name__}: {' '.join(str(e).split())[:160]})",
            EXIT_INTERNAL,
            hint="see the other ranks' errors; raise --dist-timeout if some ranks are much slower",
        )

    def check(self, failure: tuple[int, str] | None) -> None:
        """Every rank learns whether any failed; the lowest failing rank's line is the run's error."""
        failures = self.gather(failure)
        for r, f in enumerate(failures):
            if f is not None:
                code, line = f
                msg = line if r == 0 else f"rank {r} of {self.env.world_size}: {line}"
                raise RankFailed(msg, code, silent=not self.env.is_main)

    def combine(self, cap: Capture) -> Capture:
        """The capture of all ranks together; every rank must have seen the same sites."""
        shape = (
            [(s.info.name, s.info.op, s.info.kind, s.info.units, s.info.unit_axis) for s in cap.sites],
            [u.to_dict() for u in cap.uncovered],
        )
        gathered = self.gather((shape, list(cap.warnings)))
        for r, (other, _) in enumerate(gathered):
            if other != shape:
                raise RankFailed(
                    f"rank {r} saw other activation sites than rank {self.env.rank} (data-dependent "
                    "control flow?): the ranks' statistics cannot be added up",
                    hint="audit this model in one process",
                    silent=not self.env.is_main,
                )
        # one collective per (merge rule, dtype) of the counters table; the run's and each site's
        # sample, batch and element counts ride at the head of the integer sums
        counts = [
            cap.samples,
            cap.batches,
            *(n for s in cap.sites for n in (s.stats.elements, s.stats.samples)),
        ]
        groups: dict[tuple[str, bool], list[np.ndarray]] = {(f.merge, f.integer): [] for f in FIELDS}
        groups[("sum", True)].append(np.array(counts, dtype=np.int64))
        for s in cap.sites:
            for f in FIELDS:
                groups[(f.merge, f.integer)].append(getattr(s.stats, f.name).astype(f.dtype))
        reduced = {key: self._reduce(_cat(parts), _OPS[key[0]]) for key, parts in groups.items()}
        head = reduced[("sum", True)]
        at = {key: 0 for key in groups} | {("sum", True): len(counts)}
        sites = []
        for i, s in enumerate(cap.sites):
            u = s.info.units
            st = SiteStats(u, int(head[2 + 2 * i]), int(head[3 + 2 * i]))
            for f in FIELDS:
                key = (f.merge, f.integer)
                setattr(st, f.name, reduced[key][at[key] : at[key] + u].copy())
                at[key] += u
            sites.append(SiteResult(s.info, st))
        out_head = (int(head[0]), int(head[1]))
        warnings = list(dict.fromkeys(w for _, ws in gathered for w in ws))
        out = Capture(sites, *out_head, list(cap.uncovered), warnings, list(cap.inputs))
        return out

    def _reduce(self, a: np.ndarray, op: dist.ReduceOp.RedOpType) -> np.ndarray:
        if a.size == 0:
            return a
        t = torch.from_numpy(a).to(self.device)
        try:
            dist.all_reduce(t, op=op)
        except Exception as e:
            raise self._lost(e) from None
        return t.cpu().numpy()


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
