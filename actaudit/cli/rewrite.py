"""``actaudit rewrite MODEL -o OUT``: ReLU → LeakyReLU/PReLU, slopes verified against a drift budget.

The slope search, the rewrite and its verification are :func:`actaudit.rewrite.core.rewrite`;
this module parses the slope options and refuses an ``-o`` whose extension names another format.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ..errors import EXIT_GATE
from .common import audit_options, check_files, config_file, publish, say
from .options import Finite, defaulted, max_drift_option, output_format_option, writer_options, writer_outputs

if TYPE_CHECKING:
    from ..report.rewrite import RewriteReport


class _Alpha(click.ParamType):
    """``auto`` or a slope in (0, 1)."""

    name = "auto|FLOAT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        try:
            alpha = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither 'auto' nor a number", param, ctx)
        if not 0 < alpha < 1:
            self.fail(f"{alpha:g} is not a slope in (0, 1)", param, ctx)
        return alpha


class _Range(click.ParamType):
    """``LOW,HIGH`` with 0 < LOW <= HIGH < 1."""

    name = "LOW,HIGH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            lo, hi = (float(x) for x in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not LOW,HIGH (e.g. 0.001,0.3)", param, ctx)
        if not 0 < lo <= hi < 1:
            self.fail(f"{value!r}: need 0 < LOW <= HIGH < 1", param, ctx)
        return (lo, hi)


_ONNX_EXT = (".onnx",)
_TORCH_EXT = (".pt2", ".ts", ".pt", ".pth", ".jit")


def check_output_extension(model: str, output: str, output_format: str | None) -> None:
    """Refuse, before the run, an ``-o`` whose extension names a format the rewrite would not write.

    Rewrite keeps the input's format (``--output-format`` only chooses between TorchScript and
    torch.export for eager inputs): ``x.ts -o y.onnx`` would otherwise write TorchScript into ``y.onnx``.
    """
    import os

    from ..detect import ONNX, detect_format
    from ..errors import InputError

    if not os.path.isfile(model):
        return  # the loader reports a missing model with its own message
    ext = os.path.splitext(output)[1].lower()
    fmt = detect_format(model)
    stem = os.path.splitext(output)[0]
    if fmt == ONNX and ext in _TORCH_EXT:
        raise InputError(
            f"-o {output}: rewrite writes an ONNX model as ONNX, but {ext} names a PyTorch format",
            hint=f"write to {stem}.onnx",
        )
    if fmt != ONNX and ext in _ONNX_EXT:
        keep = ".pt2" if fmt == "torch.export" or output_format == "pt2" else ".ts"
        raise InputError(
            f"-o {output}: rewrite writes a {fmt} model in a PyTorch format, not ONNX",
            hint=f"write to {stem}{keep}, then convert the result with torch.onnx.export",
        )


@click.command("rewrite")
@click.argument("model", type=click.Path(dir_okay=True))
@writer_options("rewritten")
@defaulted(
    "--mode",
    click.Choice(["train", "deploy", "learnable", "recycle", "recycle-leaky"]),
    "train",
    help="train (to train on): recycle where recycling can (recycle-leaky), deploy slopes on the dead units "
    "of the sites it refuses (a batch norm between, a residual add after, ...), one drift budget for the whole model. "
    "deploy: keep the function, give dead units small fixed slopes (exact mean shift). "
    "learnable: the same slopes as PReLU parameters clamped to [0, HIGH of --alpha-range]. "
    "recycle: to train on: re-initialise each dead unit's incoming weights (seeded by --seed) so that it fires "
    "on 80 % of the calibration data and zero its outgoing weights (output unchanged). "
    "recycle-leaky: recycle, and give recycled units slope --alpha (default 0.01).",
)
@defaulted(
    "--alpha",
    _Alpha(),
    "auto",
    help="'auto': slopes chosen on the calibration data within --max-drift (per dead unit by default, per site "
    "with --to leaky or --slope-units all). A number: that slope everywhere it goes (a drift over budget fails).",
)
@defaulted(
    "--alpha-range",
    _Range(),
    "0.01,0.3",
    help="Search range of the automatic slope; HIGH is also the cap of per-unit slopes.",
)
@max_drift_option(0.01, "Budget for ‖y′−y‖/‖y‖ over all outputs of the calibration set.")
@click.option(
    "--to",
    "to",
    type=click.Choice(["leaky", "prelu"]),
    default="prelu",
    show_default=True,
    help="prelu: a slope per unit (dead units only by default), learnable where the format allows; "
    "leaky: one fixed α per site.",
)
@click.option(
    "--sites",
    default="dead",
    show_default=True,
    metavar="dead|all|GLOB[,GLOB]",
    help="Which ReLU sites: those with dead units, all, or names matching globs.",
)
@click.option(
    "--slope-units",
    type=click.Choice(["all", "dead"]),
    default=None,
    help="With --to prelu: 'dead' (default) gives slopes to dead units only, live units keep slope 0 (plain ReLU); "
    "'all' gives every unit of a selected site one α. --to leaky is always 'all'.",
)
@defaulted(
    "--min-slope",
    Finite(0, 1, min_open=True, max_open=True),
    0.01,
    help="Smallest slope that counts as revived (the audit's stuck fraction: a smaller slope still counts as dead).",
)
@defaulted(
    "--shift",
    click.Choice(["exact", "fold", "none"]),
    "exact",
    help="exact: subtract slope·E[min(z,0)] per unit right after the activation (keeps the mean for any consumer); "
    "fold: into the next layer's bias (same as --compensate); none: no correction.",
)
@click.option(
    "--drift-outputs",
    metavar="NAME[,NAME]",
    help="Measure the drift over these outputs only (default: all floating-point outputs; the report names them).",
)
@click.option(
    "--write-over-budget",
    is_flag=True,
    help="Write the best choice found even when its drift is over --max-drift (the exit code is still 1).",
)
@click.option(
    "--compensate",
    is_flag=True,
    help="Fold α·E[min(z,0)] per unit into the next Conv/Linear/Gemm/MatMul+Add bias so that mean outputs are "
    "preserved (exact without zero padding; approximate at padded borders).",
)
@output_format_option(
    "For eager inputs (state_dict + --arch, pickled modules): write TorchScript or torch.export. Default: from the -o extension."
)
@defaulted(
    "--max-passes",
    Finite(3),
    20,
    help="Budget of passes over the calibration data, verification included.",
)
@writer_outputs()
def rewrite(**kw: Any) -> None:
    """Revive dead ReLU units in MODEL: recycle them, or give them slopes (LeakyReLU / PReLU).

    By default (--mode train) dead units are recycled where the site allows it (new incoming
    weights, outgoing weights zeroed: output unchanged); at the other sites, as with --mode
    deploy, dead units (only) get a slope each, cheapest first, as large as fits, with the
    exact mean shift subtracted after the activation; ReLU6 keeps its cap.
    The rewritten model is written to a temporary file, reloaded, checked and re-run,
    and only then renamed to OUT. Exit 0 when at least one dead unit is revived within
    --max-drift; 1 when none fits (nothing is written unless --write-over-budget).

    \b
    Examples:
      actaudit rewrite model.onnx -o model_leaky.onnx --calib batch.npy
      actaudit rewrite model.pt2 -o leaky.pt2 --calib images.npy --max-drift 0.02 --compensate
      actaudit rewrite weights.pt --arch net.py:build -o net.ts --calib x.npy --to prelu
      actaudit rewrite model.ts -o fixed.ts --calib x.npy --alpha 0.01 --format json
      actaudit rewrite weights.pt --arch net.py:build -o train.ts --calib x.npy --mode recycle
    """
    from ..progress import progress_for
    from ..rewrite.core import rewrite as run_rewrite

    opts = _options(kw)
    _check_outputs(kw)
    config = config_file(kw["quiet"])
    opts.audit.progress = progress_for(None, quiet=kw["quiet"])
    with opts.audit.progress:
        report = run_rewrite(kw["model"], options=opts)
    if config:
        report.run["config_file"] = config
    publish(report, kw)
    if not report.passed:
        _explain_failure(report, opts.max_drift)
        sys.exit(EXIT_GATE)
    s = report.summary()
    recycled = sum(len(r.recycled_units) for r in report.sites)
    if not kw["quiet"] and (opts.mode.startswith("recycle") or recycled):
        sloped = sum(r.revived for r in report.sites if not r.recycled)
        say(
            f"actaudit: recycled {recycled} of {s['dead_units']} dead unit(s) "
            "(new incoming weights, outgoing weights zeroed)"
            + (f"; slopes on {sloped} more where recycling was refused" if sloped else ""),
        )
    elif not kw["quiet"]:
        say(
            f"actaudit: revived {s['revived_units']} of {s['dead_units']} dead unit(s), "
            f"slopes {s['alpha_min']:g}–{s['alpha_max']:g}",
        )


_REWRITE_KEYS = (
    "mode",
    "alpha",
    "alpha_range",
    "max_drift",
    "to",
    "sites",
    "compensate",
    "slope_units",
    "min_slope",
    "shift",
    "drift_outputs",
    "write_over_budget",
    "output",
    "output_format",
    "force",
    "max_passes",
)


def _options(kw: dict[str, Any]) -> Any:
    from ..rewrite.core import RewriteOptions

    return RewriteOptions(**{k: kw[k] for k in _REWRITE_KEYS}, audit=audit_options(kw))


def _check_outputs(kw: dict[str, Any]) -> None:
    """-o and --report: what every model-writing command refuses, and a format rewrite writes."""
    import os

    from ..edit.folder import names_folder, refuse_folder_output

    if kw["output"] is not None and os.path.isdir(kw["model"]) and names_folder(kw["output"]):
        refuse_folder_output(kw["model"], kw["output"], kw["mode"])
    check_files(kw, writes_model=True)
    check_output_extension(kw["model"], kw["output"], kw["output_format"])


def _explain_failure(report: RewriteReport, max_drift: float) -> None:
    d = report.final_drift
    if d is not None and not report.drift_ok:
        say(
            f"actaudit: gate failed: relative drift {d.rel_l2:.4g} > --max-drift {max_drift:g}; "
            "nothing revived within the budget",
        )
    else:
        say(f"actaudit: nothing revived: {_why_nothing(report)}")
    for n in report.notes:
        if n.startswith("no dead unit fits"):
            say(f"actaudit: {n}")


def _why_nothing(report: RewriteReport) -> str:
    if not report.rewritten and not any(s.dead for s in report.sites):
        from ..report.rewrite import NO_DEAD_MODEL

        return f"{NO_DEAD_MODEL} (nothing written)"
    reason = str(report.output.get("reason") or "no dead unit got a slope of at least --min-slope")
    return reason.removeprefix("nothing revived: ")
