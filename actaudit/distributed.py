"""Audits under ``torchrun``: which rank this process is, and how ranks report a failure.

The environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) makes ``actaudit audit`` one rank of a job: rank ``r`` of ``N`` runs shard
``r`` of the calibration stream (:mod:`actaudit.shard`), the per-unit counters are added up
with collectives (:mod:`actaudit.backends.torch.distributed`) and rank 0 alone writes the
report and decides the exit code. Nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import EXIT_USAGE, ActauditError, InputError

DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env(timeout_s: float | None = None) -> DistEnv | None:
    """The torchrun rank of this process; ``None`` outside torchrun or with a single process."""
    env = os.environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise InputError(
            f"RANK={env.get('RANK')!r} / WORLD_SIZE={env.get('WORLD_SIZE')!r} are not integers",
            hint="run under torchrun, or unset RANK and WORLD_SIZE",
        ) from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in env:
            raise InputError(
                f"WORLD_SIZE={world} is set but {name} is not", hint="start the ranks with torchrun"
            )
    return DistEnv(rank, world, local, DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s))


class RankFailed(ActauditError):
    """A rank failed: rank 0 shows its line, the other ranks exit with the same code in silence."""

    def __init__(
        self, message: str, exit_code: int = EXIT_USAGE, *, hint: str | None = None, silent: bool = False
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.silent = silent
