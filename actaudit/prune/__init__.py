"""Cut dead units and fold constant ones out of a trained model, with the outputs unchanged.

>>> import actaudit.prune as pr
>>> report = pr.prune("model.onnx", "calib.npy", output="small.onnx")   # doctest: +SKIP
>>> report.summary()["parameters_removed"]                              # doctest: +SKIP

Interval bounds (:mod:`actaudit.prune.interval`) prove units dead for every input in a box.
Heavy modules (torch, onnx) load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import PruneReport

__all__ = ["prune"]


def prune(model: object, data: object = None, **options: Any) -> PruneReport:
    """Audit ``model`` on ``data``, cut what is provably or observably constant, verify, (with ``output=``) write."""
    from .core import prune as _prune

    return _prune(model, data, **options)
