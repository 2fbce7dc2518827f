"""``actaudit merge A.json B.json ...``: shard reports combined into the report of one run."""

from __future__ import annotations

import sys
from typing import Any

import click

FORMATS = (
    "table",
    "json",
    "csv",
    "markdown",
)  # the audit's (cli.FORMATS); not imported, to keep the cycle out


@click.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False, readable=False))
@click.option(
    "--fail-on",
    multiple=True,
    metavar="[SITE_GLOB:]METRIC>N",
    help="Gates to evaluate on the merged report (default: the gates the shards were run with).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the report here (atomically).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--per-unit", is_flag=True, default=None, help="Include per-unit rates and ranges in JSON.")
@click.option(
    "--html",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write a self-contained HTML report to FILE.",
)
@click.option("-q", "--quiet", is_flag=True, help="No warnings on stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def merge(**kw: Any) -> None:
    """Combine the JSON reports of 'audit --shard K/N' into the report a single run writes.

    The gates are evaluated again on the merged statistics; the exit code is the audit's
    (1 when a gate fails). Reports of different models, settings, data or options, and
    sets of shards with one given twice or missing, are refused (exit 2).

    \b
    Examples:
      actaudit audit model.onnx --calib val.npy --shard 1/2 --format json -o s1.json
      actaudit audit model.onnx --calib val.npy --shard 2/2 --format json -o s2.json
      actaudit merge s1.json s2.json --format json -o report.json
    """
    from ..errors import EXIT_GATE
    from ..merge import merge_reports
    from . import _check_output, _emit, _use_color

    _check_output(kw["output"], kw["force"], *kw["reports"])
    _check_output(kw["html"], kw["force"], *kw["reports"])
    report = merge_reports(kw["reports"], fail_on=kw["fail_on"] or None, per_unit=kw["per_unit"])
    if not kw["quiet"] and kw["fmt"] != "table":
        for w in report.warnings:
            click.echo(f"actaudit: warning: {w}", err=True)
    _emit(report.render(kw["fmt"], color=_use_color(kw["output"])), kw["output"], kw["force"])
    if kw["html"]:
        from ..fileio import write_text_atomic
        from ..report.html import render_html

        write_text_atomic(kw["html"], render_html(report, None), force=kw["force"])
    if not report.passed:
        failed = [g.gate.text for g in report.gates if g.failed]
        click.echo(f"actaudit: gate failed: {', '.join(failed)}", err=True)
        sys.exit(EXIT_GATE)
