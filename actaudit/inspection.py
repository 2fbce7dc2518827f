"""The activation sites an audit would cover, and the model's inputs, without calibration data.

Sites are found the way the audit finds them, by one forward pass on a single synthetic
sample (``input_shapes`` where the model does not declare its shapes; a ``torch.export``
program with a fixed batch gets one full batch), so the names and order match
:func:`actaudit.audit` exactly. Only structure is kept: the pass's statistics are thrown away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import InputError
from .report.inspection import Inspection
from .stats import SiteInfo

__all__ = ["Inspection", "inspect_model"]


def inspect_model(
    model: object,
    *,
    input_shapes: Sequence[str] = (),
    unit_axis: Sequence[str] = (),
    seed: int = 0,
    val_range: tuple[float, float] | None = None,
    **load_options: Any,
) -> Inspection:
    """Sites and inputs of ``model`` (a path, ``nn.Module`` or ``onnx.ModelProto``).

    ``load_options`` are the loading fields of :class:`actaudit.api.AuditOptions`
    (``arch``, ``state_key``, ``trust_pickle``, ``device``, ``provider``, ``threads``).
    """
    from .assemble import model_section
    from .calibration import data_source
    from .loading import load_model
    from .options import AuditOptions

    opts = AuditOptions(
        samples=1,
        batch_size=1,
        input_shapes=tuple(input_shapes),
        unit_axis=tuple(unit_axis),
        seed=seed,
        val_range=val_range,
        **load_options,
    )
    loaded = load_model(model, opts)
    facts = loaded.handle.model_facts()
    fixed = loaded.handle.fixed_batch
    if fixed:
        opts.samples = opts.batch_size = int(fixed)
    try:
        source = data_source(None, loaded, opts)
        cap = loaded.capture(source, opts)
    except InputError as e:
        # The shared messages suggest audit's data options; inspect takes only --input-shape / --val-range.
        if e.hint:
            e.hint = e.hint.replace(", or give --calib", "").replace(" or give --calib", "")
            e.hint = e.hint.replace("pass --calib or --data-loader", "pass --input-shape")
        raise
    plural = "" if cap.samples == 1 else "s"
    return Inspection(
        model=model_section(loaded),
        inputs=cap.inputs or [spec.to_dict() for spec in loaded.inputs],
        sites=[_site(i, s.info) for i, s in enumerate(cap.sites)],
        uncovered=[u.to_dict() for u in cap.uncovered],
        notes=list(loaded.notes) + list(cap.warnings),
        facts=facts,
        probe=f"found by one forward pass of {cap.samples} sample{plural} ({source.description})",
    )


def _site(index: int, info: SiteInfo) -> dict[str, object]:
    from .kinds import family

    return {
        "index": index,
        "name": info.name,
        **({"former_name": info.former_name} if info.former_name else {}),
        "op": info.op,
        "kind": info.kind,
        "family": family(info.kind).value,
        "module": info.module,
        "params": {k: float(v) for k, v in sorted(info.params.items())},
        "unit_axis": info.unit_axis,
        "unit_axis_source": info.unit_axis_source,
        "units": info.units,
        "sample_shape": list(info.sample_shape),
    }
