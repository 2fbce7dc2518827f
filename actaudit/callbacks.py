"""Audit during training: :class:`DeadUnitMonitor` for a plain PyTorch loop, plus thin adapters.

Every ``every`` steps the monitor audits a held-out batch with the same counters and
thresholds as ``actaudit audit``, folds the report into an :class:`actaudit.history.History`
and rewrites the history file atomically (the same ``actaudit.history/1`` JSON that
``actaudit history`` writes, so ``actaudit history``'s renderings read both alike).

    monitor = DeadUnitMonitor(model, held_out, "dead-units.json", every=500)
    for step, batch in enumerate(loader):
        ...
        monitor.step(step)

The adapters for the ``transformers`` Trainer and PyTorch Lightning import their framework
only when built; this module imports neither (nor torch).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .history import History

if TYPE_CHECKING:
    from .report.audit import Report

__all__ = ["DeadUnitMonitor", "lightning_callback", "transformers_callback"]


class DeadUnitMonitor:
    """Audits ``model`` on ``data`` every ``every`` steps and keeps the history file ``path`` up to date.

    ``options`` are :class:`actaudit.options.AuditOptions` fields (``settings``, ``samples``,
    ``batch_size``...). The model's training mode is restored after each audit; the audit
    runs without gradients and changes no weight. ``path`` is replaced at every audit;
    an existing file is refused unless ``overwrite=True``.
    """

    def __init__(
        self,
        model: Any,
        data: object,
        path: str | os.PathLike[str] | None = None,
        *,
        every: int = 1000,
        overwrite: bool = False,
        **options: object,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r}: audit every N >= 1 steps")
        self.model, self.data, self.path, self.every = model, data, path, every
        self.options = {"quiet": True, **options}
        self.history = History()
        if path is not None:
            from .fileio import check_target

            check_target(path, overwrite)

    def step(self, step: int) -> bool:
        """Audit when ``step`` is a multiple of ``every``; True when it did."""
        if step % self.every:
            return False
        self.audit(f"step-{step}")
        return True

    def audit(self, label: str) -> Report:
        """Audit now, fold the report in under ``label``, write the file; returns the report."""
        from .api import audit

        training = getattr(self.model, "training", None)
        try:
            report = audit(self.model, self.data, **self._options())
        finally:
            if training is not None:
                self.model.train(training)
        self.history.add(label, report)
        if self.path is not None:
            from .fileio import write_text_atomic

            write_text_atomic(self.path, self.history.render("json"), force=True)
        return report

    def _options(self) -> dict[str, Any]:  # AuditOptions fields, checked when audit() builds them
        from .options import AuditOptions

        known = set(AuditOptions.__dataclass_fields__)
        return {k: v for k, v in self.options.items() if k in known}


def transformers_callback(monitor: DeadUnitMonitor) -> Any:
    """A ``transformers.TrainerCallback`` that calls ``monitor.step`` at every optimizer step."""
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            monitor.step(int(state.global_step))
            return control

    return _Callback()


def lightning_callback(monitor: DeadUnitMonitor) -> Any:  # pragma: no cover - Lightning is optional
    """A ``lightning.pytorch.Callback`` that calls ``monitor.step`` after every training batch."""
    try:
        from lightning.pytorch import Callback
    except ImportError:
        from pytorch_lightning import Callback

    class _Callback(Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any, **kw: Any) -> None:
            monitor.step(int(trainer.global_step))

    return _Callback()
