"""ReLU → LeakyReLU/PReLU rewrites with a slope chosen under an output-drift budget.

>>> import actaudit.rewrite as rw
>>> report = rw.rewrite("model.pt2", "calib.npy", output="leaky.pt2")   # doctest: +SKIP
>>> report.slopes                                                        # doctest: +SKIP
{'features.3': 0.042, 'classifier.1': 0.3}
>>> model = rw.apply_slopes(my_module, report.slopes)                    # doctest: +SKIP

Heavy modules (torch, onnx) load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import RewriteOptions
    from .report import RewriteReport

__all__ = ["RewriteOptions", "RewriteReport", "apply_slopes", "rewrite"]


def rewrite(model: Any, data: Any = None, **options: Any) -> RewriteReport:
    """Audit ``model`` on ``data``, choose slopes, rewrite, verify and (with ``output=``) write.

    Options are the fields of :class:`actaudit.rewrite.core.RewriteOptions` and of
    :class:`actaudit.api.AuditOptions`. The rewritten model is ``report.model_out``.
    """
    from .core import rewrite as _rewrite

    return _rewrite(model, data, **options)


def apply_slopes(
    module: Any,
    slopes: dict[str, float],
    to: str = "leaky",
    *,
    units: dict[str, tuple[int, int]] | None = None,
    strict: bool = True,
) -> Any:
    """A copy of ``module`` with the named ReLU sites replaced; the input is not modified.

    ``slopes`` maps audit site names (``layer1.0.relu#1``, ``encoder/relu``) to α. ReLU
    modules are swapped; a module reused at sites with different slopes is split, and
    functional ``relu`` calls are rewritten, by tracing the calling module with
    ``torch.fx`` (that module becomes a ``GraphModule``). ``units`` gives
    ``(units, unit_axis)`` per site for ``to="prelu"``; without it PReLU learns one
    slope per site. Sites that cannot be rewritten raise :class:`actaudit.errors.InputError`
    (``strict``) or are reported in a warning.
    """
    import warnings

    from ..backends.torch.surgery import rewrite_eager
    from ..errors import InputError
    from .plan import SitePlan

    units = units or {}
    plans = [SitePlan(n, float(a), *units.get(n, (1, 1))) for n, a in slopes.items()]
    res = rewrite_eager(module, plans, to)
    if res.skipped:
        text = "; ".join(f"{n}: {why}" for n, why in res.skipped.items())
        if strict:
            raise InputError(f"cannot rewrite {len(res.skipped)} site(s): {text}")
        warnings.warn(f"left as ReLU: {text}", stacklevel=2)
    return res.model
