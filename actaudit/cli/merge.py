"""``actaudit merge A.json B.json ...``: shard reports combined into the report of one run."""

from __future__ import annotations

from typing import Any

import click

from .common import check_files, config_file, echo_remarks, emit, exit_on_failed_gates, use_color, write_file
from .config import config_option
from .options import (
    debug_option,
    fail_on_option,
    force_option,
    format_option,
    html_option,
    output_option,
    per_unit_option,
    quiet_option,
)


@click.command("merge")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False, readable=False))
@fail_on_option("Gates to evaluate on the merged report (default: the gates the shards were run with).")
@click.option(
    "--allow-uncovered",
    is_flag=True,
    default=None,
    help="Let the gates pass although activations were not audited (default: as the shards were run).",
)
@format_option
@output_option()
@force_option()
@per_unit_option(default=None)
@html_option("Also write a self-contained HTML report to FILE.")
@quiet_option()
@debug_option
@config_option
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
    from ..merge import merge_reports

    check_files(kw)
    config = config_file(kw["quiet"])
    report = merge_reports(
        kw["reports"],
        fail_on=kw["fail_on"] or None,
        per_unit=kw["per_unit"],
        allow_uncovered=kw["allow_uncovered"] or None,
    )
    if config:
        report.run["config_file"] = config
    echo_remarks(kw, warnings=report.warnings)
    emit(report.render(kw["fmt"], color=use_color(kw["output"])), kw["output"], kw["force"])
    if kw["html"]:
        from ..report.html import render_html

        write_file("html", render_html(report, None), kw)
    exit_on_failed_gates(report)
