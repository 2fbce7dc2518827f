"""What the subcommands do alike: check outputs before the run, print the result, report gates.

stdout carries only the report; notes, warnings and verdicts go to stderr.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..errors import EXIT_GATE

# The option bundles' parameter names, as AuditOptions spells them.
LOAD_KEYS = (
    "arch",
    "state_key",
    "trust_pickle",
    "trust_code",
    "strip_prefix",
    "non_strict",
    "device",
    "provider",
    "threads",
)
DATA_KEYS = ("calib", "data_loader", "samples", "batch_size", "input_shapes", "seed")
THRESHOLD_KEYS = ("stuck_fraction", "dead_rate", "saturation_rate", "rare_rate")


def load_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """The loading options (``--arch``, trust flags, device, ...) of a command's parameters."""
    return {k: kw[k] for k in LOAD_KEYS}


def audit_options(kw: dict[str, Any]) -> Any:
    """:class:`actaudit.api.AuditOptions` from the model, data and threshold option bundles."""
    from ..options import AuditOptions
    from ..verdicts import Settings

    return AuditOptions(
        **{k: kw[k] for k in DATA_KEYS},
        val_range=kw.get("val_range"),
        **load_kwargs(kw),
        unit_axis=kw["unit_axis"],
        settings=Settings(**{k: kw[k] for k in THRESHOLD_KEYS}),
    )


def emit(text: str, output: str | None, force: bool) -> None:
    if output:
        from ..fileio import write_text_atomic

        write_text_atomic(output, text, force=force)
    else:
        click.echo(text, nl=False)


def use_color(output: str | None) -> bool:
    return not output and "NO_COLOR" not in os.environ and sys.stdout.isatty()


def check_output(output: str | None, force: bool, *inputs: str) -> None:
    """Refuse before the (slow) run, not after it."""
    if not output:
        return
    from ..errors import InputError
    from ..fileio import check_target

    check_target(output, True)  # a FIFO or device is refused whatever --force says

    for i in inputs:
        if i and os.path.exists(i) and os.path.exists(output) and os.path.samefile(i, output):
            raise InputError(f"output {output} is the input file", hint="write to another path")
    if os.path.exists(output) and not force:
        raise InputError(f"output {output} already exists", hint="pass --force to overwrite it")


def echo_remarks(kw: dict[str, Any], notes: Any = (), warnings: Any = ()) -> None:
    """Notes and warnings on stderr, unless ``-q`` or the table (which lists them itself) goes to stdout."""
    if kw["quiet"] or kw["fmt"] == "table":
        return
    for n in notes:
        click.echo(f"actaudit: note: {n}", err=True)
    for w in warnings:
        click.echo(f"actaudit: warning: {w}", err=True)


def exit_on_failed_gates(report: Any) -> None:
    """Name the failed ``--fail-on`` gates on stderr and exit 1; nothing when every gate passed."""
    if not report.passed:
        failed = [g.gate.text for g in report.gates if g.failed]
        click.echo(f"actaudit: gate failed: {', '.join(failed)}", err=True)
        sys.exit(EXIT_GATE)


def publish(report: Any, kw: dict[str, Any]) -> None:
    """rewrite and prune: warnings, the report (stdout or ``--report``), and where the model went."""
    echo_remarks(kw, warnings=report.warnings)
    if getattr(report, "fits_terminal", False):  # the rewrite table fits the terminal like the audit's
        from ..report.terminal import table_width

        text = report.render(kw["fmt"], width=table_width(bool(kw.get("wide")), bool(kw["report"])))
    else:
        text = report.render(kw["fmt"])
    emit(text, kw["report"], True)
    out = report.output
    if out.get("written"):
        click.echo(f"actaudit: wrote {out['path']} [{out['format']}]", err=True)
    elif out.get("reason") and not kw["quiet"]:
        click.echo(f"actaudit: nothing written to {out['path']}: {out['reason']}", err=True)


def check_model_outputs(kw: dict[str, Any]) -> None:
    """rewrite and prune: refuse ``-o`` and ``--report`` before the run.

    Neither may be an input (the model, ``--calib``, the ``--data-loader`` or ``--arch`` file),
    the other output, a FIFO or device, or an existing file without ``--force``.
    """
    from ..fileio import check_target, refuse_collisions
    from ..rewrite.core import check_output as check_model_output

    check_model_output(kw["output"], kw["force"], kw["model"])
    if kw["report"]:
        check_model_output(kw["report"], True, kw["model"])
    for target in (kw["output"], kw["report"]):
        if target:
            check_target(target, True)  # a FIFO or device is refused whatever --force says
    refuse_collisions(
        [("-o/--output", kw["output"]), ("--report", kw["report"])],
        [("model", kw["model"]), ("--calib", kw["calib"])],
        [("--data-loader", kw["data_loader"]), ("--arch", kw["arch"])],
    )


def config_file(quiet: bool) -> str | None:
    """The config file this command read (``--config`` or found), said on stderr unless ``quiet``."""
    from .config import CONFIG_META

    found = click.get_current_context().meta.get(CONFIG_META)
    if found and not quiet:
        click.echo(f"actaudit: using config file {found}", err=True)
    return str(found) if found else None
