"""``actaudit rewrite``: ReLU → LeakyReLU/PReLU with a slope verified against a drift budget.

A thin layer over :func:`actaudit.rewrite.core.rewrite`. stdout carries only the report
(unless ``--report FILE``); warnings go to stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .cli import _emit, data_options, model_options, threshold_options
from .errors import EXIT_GATE

FORMATS = ("table", "json", "csv", "markdown")  # as for audit


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

    from .detect import ONNX, detect_format
    from .errors import InputError

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


@click.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the rewritten model (atomically, after it is verified).",
)
@model_options
@data_options
@threshold_options
@click.option(
    "--alpha",
    type=_Alpha(),
    default="auto",
    show_default=True,
    help="'auto': per site, the largest slope in --alpha-range that keeps the end-to-end drift within --max-drift. "
    "A number: that slope everywhere (a drift over budget fails the gate).",
)
@click.option(
    "--alpha-range",
    type=_Range(),
    default="0.001,0.3",
    show_default=True,
    help="Search range of the automatic slope.",
)
@click.option(
    "--max-drift",
    type=click.FloatRange(0, min_open=True),
    default=0.01,
    show_default=True,
    help="Budget for ‖y′−y‖/‖y‖ over all outputs of the calibration set.",
)
@click.option(
    "--to",
    "to",
    type=click.Choice(["leaky", "prelu"]),
    default="leaky",
    show_default=True,
    help="LeakyReLU (fixed slope) or PReLU (learnable per-unit slope, initialised at α).",
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
    default="all",
    show_default=True,
    help="With --to prelu: 'dead' gives α to the dead units only and starts the others at 0 "
    "(plain ReLU), which changes the outputs far less for the same α.",
)
@click.option(
    "--compensate",
    is_flag=True,
    help="Fold α·E[min(z,0)] per unit into the next Conv/Linear/Gemm/MatMul+Add bias so that mean outputs are "
    "preserved (exact without zero padding; approximate at padded borders).",
)
@click.option(
    "--output-format",
    type=click.Choice(["ts", "pt2"]),
    help="For eager inputs (state_dict + --arch, pickled modules): write TorchScript or torch.export. Default: from the -o extension.",
)
@click.option(
    "--max-passes",
    type=click.FloatRange(3),
    default=10,
    show_default=True,
    help="Budget of passes over the calibration data, verification included.",
)
@click.option(
    "--force", is_flag=True, help="Overwrite an existing output; write even when the drift gate fails."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    help="Write the report here instead of stdout (atomically, overwriting).",
)
@click.option("-q", "--quiet", is_flag=True, help="No warnings on stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def rewrite(**kw: Any) -> None:
    """Rewrite ReLU in MODEL into LeakyReLU or PReLU so that dead units get a gradient again.

    The slope is chosen on the calibration data under an output-drift budget, the
    rewritten model is written to a temporary file, reloaded, checked and re-run, and
    only then renamed to OUT. Exit 1 when the drift exceeds --max-drift (nothing is
    written unless --force).

    \b
    Examples:
      actaudit rewrite model.onnx -o model_leaky.onnx --calib batch.npy
      actaudit rewrite model.pt2 -o leaky.pt2 --calib images.npy --max-drift 0.02 --compensate
      actaudit rewrite weights.pt --arch net.py:build -o net.ts --calib x.npy --to prelu
      actaudit rewrite model.ts -o fixed.ts --calib x.npy --alpha 0.01 --format json
    """
    from .cli import audit_options
    from .rewrite.core import RewriteOptions, check_output
    from .rewrite.core import rewrite as run_rewrite

    audit = audit_options(kw)
    opts = RewriteOptions(
        alpha=kw["alpha"],
        alpha_range=kw["alpha_range"],
        max_drift=kw["max_drift"],
        to=kw["to"],
        sites=kw["sites"],
        compensate=kw["compensate"],
        slope_units=kw["slope_units"],
        output=kw["output"],
        output_format=kw["output_format"],
        force=kw["force"],
        max_passes=kw["max_passes"],
        audit=audit,
    )
    check_output(kw["output"], kw["force"], kw["model"])
    check_output_extension(kw["model"], kw["output"], kw["output_format"])
    if kw["report"]:
        check_output(kw["report"], True, kw["model"])
    from .fileio import check_target, refuse_collisions

    check_target(kw["output"], True)  # a FIFO or device is refused whatever --force says
    if kw["report"]:
        check_target(kw["report"], True)

    refuse_collisions(
        [("-o/--output", kw["output"]), ("--report", kw["report"])],
        [("model", kw["model"]), ("--calib", kw["calib"])],
        [("--data-loader", kw["data_loader"]), ("--arch", kw["arch"])],
    )
    report = run_rewrite(kw["model"], options=opts)
    if not kw["quiet"] and kw["fmt"] != "table":
        for w in report.warnings:
            click.echo(f"actaudit: warning: {w}", err=True)
    _emit(report.render(kw["fmt"]), kw["report"], True)
    out = report.output
    if out.get("written"):
        click.echo(f"actaudit: wrote {out['path']} [{out['format']}]", err=True)
    elif out.get("reason") and not kw["quiet"]:
        click.echo(f"actaudit: nothing written to {out['path']}: {out['reason']}", err=True)
    if not report.passed:
        d = report.drift
        value = f"{d.rel_l2:.4g}" if d is not None else "?"
        click.echo(
            f"actaudit: gate failed: relative drift {value} > --max-drift {opts.max_drift:g}", err=True
        )
        sys.exit(EXIT_GATE)
