"""actaudit: audit neural-network checkpoints for dead and saturated units.

>>> import actaudit
>>> report = actaudit.audit("model.pt2", "calib.npy")     # doctest: +SKIP
>>> report.summary()["dead"]                               # doctest: +SKIP

Heavy modules (torch, onnx) load only when a model is audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .report import Report

__all__ = ["__version__", "audit"]


def audit(model: object, data: object = None, **options: Any) -> Report:
    """Audit ``model`` (a path, ``nn.Module`` or ``onnx.ModelProto``) on ``data``.

    ``data`` is a path (.npy/.npz/.pt), an array or tensor (samples along axis 0), a
    dict of arrays (one per input name), an iterable of ready batches, or ``None`` for
    synthetic inputs (then pass ``input_shapes=["1x3x32x32"]`` when the model does not
    declare them). Options are the fields of :class:`actaudit.api.AuditOptions`.
    """
    from .api import audit as _audit

    return _audit(model, data, **options)
