"""What rewrite and prune share: the original measured once, variants re-run against it, the verified write.

Both commands load the model, run one audit pass that also keeps the model's outputs
(:class:`Original`), compare edited variants with those outputs (:func:`variant_drift`),
and write the chosen variant beside the output, reload it, re-measure it and only then
publish it (:func:`write_verified`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

from .assemble import build_report
from .backends.base import Pruner, Surgery
from .calibration import data_source
from .data import DataSource
from .edit.drift import Drift, Outputs, Reference
from .errors import EXIT_GATE, ActauditError, CalibrationError, InputError
from .fileio import sha256_file
from .loading import LoadedModel
from .options import AuditOptions
from .report import Report

T = TypeVar("T")


class VerificationError(ActauditError):
    """The written file did not reload, check or reproduce the measured outputs; nothing was written."""

    exit_code = EXIT_GATE


def options_from(cls: type[T], kw: dict[str, object], what: str) -> T:
    """``cls`` (a dataclass with an ``audit: AuditOptions`` field) from flat keyword arguments."""
    mine = {f.name for f in fields(cls)} - {"audit"}  # type: ignore[arg-type]
    theirs = {f.name for f in fields(AuditOptions)}
    unknown = set(kw) - mine - theirs
    if unknown:
        raise TypeError(f"unknown {what} option(s): {', '.join(sorted(unknown))}")
    audit = kw.get("audit") or AuditOptions(**{k: v for k, v in kw.items() if k in theirs})  # type: ignore[arg-type]
    return cls(**{k: v for k, v in kw.items() if k in mine}, audit=audit)  # type: ignore[call-arg]


def check_output(output: str | os.PathLike[str] | None, force: bool, model: object) -> None:
    """Refuse before the (slow) run, not after it."""
    if output is None:
        return
    out = Path(output)
    if isinstance(model, (str, os.PathLike)):
        src = Path(model)
        if src.exists() and (out.resolve() == src.resolve() or (out.exists() and os.path.samefile(src, out))):
            raise InputError(
                f"output {out} is the input model", hint="the input is never modified; write to another path"
            )
    if out.is_dir():
        raise InputError(f"output {out} is a directory", hint="give a file path")
    if out.exists() and not force:
        raise InputError(f"output {out} already exists", hint="pass --force to overwrite it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist", hint="create it first")


@dataclass
class Original:
    """The unedited model after its one audit pass: the audit and the outputs to compare against."""

    loaded: LoadedModel
    source: DataSource
    audit: Report
    ref: Reference


def measure_original(
    loaded: LoadedModel, data: object, opts: AuditOptions, drift_outputs: str | None = None
) -> Original:
    """One pass over the calibration data: per-site statistics and the model's outputs together.

    ``drift_outputs`` (``NAME[,NAME]``) narrows the reference to those outputs.
    """
    source = data_source(data, loaded, opts)
    cap = loaded.capture(source, opts, keep_outputs=True)
    audit = build_report(loaded, source, cap, opts, [], {})
    if not cap.outputs:
        raise CalibrationError("the model produced no outputs on the calibration data")
    ref = Reference(cap.outputs, cap.output_names)
    ref.keep_only(drift_outputs)
    if not any(len(b) for b in ref.batches):
        raise InputError("the model has no floating-point outputs: drift cannot be measured")
    if ref.norm() == 0:
        raise InputError(
            "the model's outputs are all zero on the calibration data: relative drift is undefined"
        )
    return Original(loaded, source, audit, ref)


def variant_drift(ref: Reference, produced: Iterator[Outputs], n_batches: int | None = None) -> Drift:
    """The drift of a variant's outputs; a calibration source that cannot be re-read is the user's to fix."""
    try:
        return ref.compare(produced, n_batches)
    except ValueError as e:
        raise CalibrationError(
            f"re-running the calibration data failed: {e}",
            hint="calibration data given in memory must be re-iterable (a list, not a generator)",
        ) from None


@dataclass
class Written:
    """What :func:`write_verified` measured on the reloaded file, and the report's ``output`` section."""

    reloaded: object
    drift: Drift
    output: dict[str, object]


def write_verified(
    editor: Surgery | Pruner,
    model: object,
    original: Original,
    out: Path,
    *,
    force: bool,
    notes: list[str],
    rerun: Callable[[object], Iterator[Outputs]],
    expect: float,
    tolerance: float,
    what: str,
    check: Callable[[object], None] = lambda reloaded: None,
) -> Written:
    """Write ``model`` beside ``out``, reload it, ``rerun`` the data through it and ``check`` it; publish only then.

    The reloaded file must drift ``expect`` within ``tolerance`` (a fraction of the larger
    of ``expect`` and the budget folded into it by the caller); any failure removes the
    temporary file and raises :class:`VerificationError`.
    """
    with editor.stage(model, notes, out, force) as tmp:
        try:
            reloaded = editor.reload(tmp)
        except ActauditError:
            raise
        except Exception as e:
            raise VerificationError(
                f"the {what} model does not reload from disk: {type(e).__name__}: {e}; nothing was written"
            ) from None
        try:
            d = original.ref.compare(rerun(reloaded))
        except Exception as e:
            raise VerificationError(
                f"the reloaded model failed on the calibration data: {type(e).__name__}: {e}; nothing was written"
            ) from None
        if abs(d.rel_l2 - expect) > 1e-6 + tolerance:
            raise VerificationError(
                f"the reloaded file drifts {d.rel_l2:.4g} from the original, but the in-memory {what} model "
                f"measured {expect:.4g}; nothing was written"
            )
        check(reloaded)
    output: dict[str, object] = {
        "path": str(out),
        "written": True,
        "format": editor.output_format,
        "sha256": _digest(out),
        "checks": list(editor.checks),
    }
    data = editor.written_data  # weights written beside the model (over 2 GB)
    if data is not None:
        output["external_data"] = {"path": str(data), "sha256": sha256_file(data)}
    return Written(reloaded, d, output)


def _digest(out: Path) -> str:
    """A file's sha256; for a folder (a Hugging Face checkpoint), one sha256 over its files' names and digests."""
    if not out.is_dir():
        return sha256_file(out)
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in out.iterdir() if p.is_file()):
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()
