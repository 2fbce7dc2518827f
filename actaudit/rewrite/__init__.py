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
    slopes: dict[str, Any],
    to: str = "leaky",
    *,
    units: dict[str, tuple[int, int]] | None = None,
    shifts: dict[str, Any] | None = None,
    ranks: dict[str, int] | None = None,
    strict: bool = True,
) -> Any:
    """A copy of ``module`` with the named ReLU / ReLU6 sites replaced; the input is not modified.

    ``slopes`` maps audit site names (``layer1.0.relu#1``, ``encoder/relu``) to α, or to
    one slope per unit (a sequence: a learnable per-unit PReLU, 0 where the unit keeps
    plain ReLU, as ``report.sites[i].unit_slopes`` describes). ``shifts`` maps sites to
    the constant per unit subtracted after the activation (the exact mean correction
    ``slope·E[min(z, 0)]``). ReLU modules are swapped; a module reused at sites with
    different slopes is split, and functional ``relu`` calls are rewritten, by tracing
    the calling module with ``torch.fx`` (that module becomes a ``GraphModule``).
    ``units`` gives ``(units, unit_axis)`` per site for ``to="prelu"`` with a scalar α;
    ``ranks`` the rank of the site's tensor, batch included (default 2, or 4 for unit
    axis 1 with shifts on images: pass it). Sites that cannot be rewritten raise
    :class:`actaudit.errors.InputError` (``strict``) or are reported in a warning.
    """
    import warnings

    import numpy as np

    from ..backends.torch.surgery import rewrite_eager
    from ..edit.slopes import SitePlan
    from ..errors import InputError

    units = units or {}
    shifts = shifts or {}
    ranks = ranks or {}
    plans = []
    for n, a in slopes.items():
        vec = np.asarray(a, dtype=np.float64).reshape(-1) if np.ndim(a) else None
        n_units, axis = (
            (vec.size, units.get(n, (vec.size, 1))[1]) if vec is not None else units.get(n, (1, 1))
        )
        sh = shifts.get(n)
        rank = ranks.get(n, 2)
        plans.append(
            SitePlan(
                n,
                float(vec.max()) if vec is not None else float(a),
                n_units,
                axis,
                sample_shape=tuple([1] * (rank - 1)),
                neg_mean=None,
                unit_slopes=vec,
                kind="relu",
            )
        )
        if sh is not None:
            s_vec = np.asarray(sh, dtype=np.float64).reshape(-1)
            plans[-1].shift_override = s_vec
            plans[-1].exact_shift = True
            plans[-1].units = s_vec.size if vec is None else n_units
    if any(p.unit_slopes is not None for p in plans):
        to = "prelu"  # per-unit slopes are a PReLU whatever ``to`` says
    res = rewrite_eager(module, plans, to)
    if res.skipped:
        text = "; ".join(f"{n}: {why}" for n, why in res.skipped.items())
        if strict:
            raise InputError(f"cannot rewrite {len(res.skipped)} site(s): {text}")
        warnings.warn(f"left as ReLU: {text}", stacklevel=2)
    return res.model
