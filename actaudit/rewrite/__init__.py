"""ReLU → LeakyReLU/PReLU rewrites with a slope chosen under an output-drift budget.

>>> import actaudit.rewrite as rw
>>> report = rw.rewrite("model.pt2", "calib.npy", output="leaky.pt2")   # doctest: +SKIP
>>> report.slopes                                                        # doctest: +SKIP
{'features.3': 0.042, 'classifier.1': 0.3}
>>> model = rw.apply(my_module, report)   # the same slopes, shifts, recycled rows  # doctest: +SKIP

Heavy modules (torch, onnx) load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import RewriteOptions
    from .report import RewriteReport

__all__ = ["RewriteOptions", "RewriteReport", "apply", "apply_slopes", "rewrite"]


def rewrite(model: Any, data: Any = None, **options: Any) -> RewriteReport:
    """Audit ``model`` on ``data``, choose slopes, rewrite, verify and (with ``output=``) write.

    Options are the fields of :class:`actaudit.rewrite.core.RewriteOptions` and of
    :class:`actaudit.api.AuditOptions`. The rewritten model is ``report.model_out``.
    """
    from .core import rewrite as _rewrite

    return _rewrite(model, data, **options)


def apply_slopes(module: Any, slopes: dict[str, Any], to: str = "leaky", **kw: Any) -> Any:
    """A copy of ``module`` with the named sites' slopes: :func:`actaudit.backends.torch.apply.apply_slopes`."""
    from ..backends.torch.apply import apply_slopes as _apply

    return _apply(module, slopes, to, **kw)


def apply(module: Any, report: RewriteReport, *, strict: bool = True) -> Any:
    """A copy of ``module`` with what ``report`` (a rewrite of the same model) did to it, exactly.

    Slopes go in per unit with their shift (``slope·E[min(z, 0)]``, measured on the calibration
    data), so the copy computes what the rewrite measured (its drift), and learnable slopes keep
    their bound. For recycled sites the re-initialised rows and zeroed columns are copied from
    ``report.model_out``. ``module`` itself is not modified.
    """
    from .applying import apply_report

    return apply_report(module, report, strict=strict)
