"""What the subcommands do alike: check outputs before the run, print the result, report gates.

stdout carries only the report; notes, warnings and verdicts go to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import click

from ..errors import EXIT_GATE
from .config import CONFIG_META

if TYPE_CHECKING:
    from ..inventory import Inventory
    from ..options import AuditOptions
    from ..report.audit import Report
    from ..report.prune import PruneReport
    from ..report.rewrite import RewriteReport

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
DATA_KEYS = (
    "calib",
    "data_loader",
    "samples",
    "batch_size",
    "input_shapes",
    "seed",
    "max_length",
    "resize",
    "normalize",
    "channels_last",
    "tokenizer",
    "no_resample",
)
THRESHOLD_KEYS = ("stuck_fraction", "dead_rate", "saturation_rate", "rare_rate")


def load_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """The loading options (``--arch``, trust flags, device, ...) of a command's parameters."""
    return {k: kw[k] for k in LOAD_KEYS}


def audit_options(kw: dict[str, Any]) -> AuditOptions:
    """:class:`actaudit.api.AuditOptions` from the model, data and threshold option bundles."""
    from ..errors import InputError
    from ..options import AuditOptions
    from ..verdicts import Settings

    given = "--calib" if kw.get("calib") else "--data-loader" if kw.get("data_loader") else None
    if kw.get("input_shapes") and given:
        raise InputError(
            f"--input-shape describes synthetic inputs, but {given} gives the data: the shape would be ignored",
            hint="drop --input-shape (the data's own shape is used)",
        )
    return AuditOptions(
        **{k: kw[k] for k in DATA_KEYS},
        val_range=kw.get("val_range"),
        **load_kwargs(kw),
        unit_axis=kw["unit_axis"],
        settings=Settings(**{k: kw[k] for k in THRESHOLD_KEYS}),
    )


def say(message: object, nl: bool = True) -> None:
    """One message on stderr, every line escaped (:func:`actaudit.sanitize.lines`).

    Every line the command line prints on stderr goes through here: messages quote names
    read from files (node, site and member names), and a terminal escape sequence, a
    carriage return or a bidi override in one must not reach the terminal.
    """
    from ..sanitize import lines

    click.echo(lines(message), err=True, nl=nl)


def emit(text: str, output: str | None, force: bool) -> None:
    if output:
        from ..fileio import write_text_atomic

        write_text_atomic(output, text, force=force)
    else:
        click.echo(text, nl=False)


def write_file(key: str, text: str, kw: dict[str, Any]) -> None:
    """``text`` written (atomically) to the path of option ``key`` (``html``, ``junit``).

    A path that came from a config file rather than the command line is named on stderr,
    ``-q`` or not: a file found in a parent folder must not write where nobody looked.
    """
    from click.core import ParameterSource

    from ..fileio import write_text_atomic

    path = kw[key]
    write_text_atomic(path, text, force=kw["force"])
    ctx = click.get_current_context()
    if ctx.get_parameter_source(key) == ParameterSource.DEFAULT_MAP:
        say(f"actaudit: wrote {path} (--{key} from config file {ctx.meta.get(CONFIG_META)})")


def use_color(output: str | None) -> bool:
    return not output and "NO_COLOR" not in os.environ and sys.stdout.isatty()


_OUTPUTS = (("output", "-o/--output"), ("report", "--report"), ("html", "--html"), ("junit", "--junit"))


def inventory(kw: dict[str, Any], *, writes_model: bool = False) -> Inventory:
    """The :class:`~actaudit.inventory.Inventory` of a command: every file it reads and writes."""
    from ..inventory import Inventory, onnx_companion

    inv = Inventory().add_model("model", kw.get("model"))
    for r in kw.get("reports") or ():
        inv.add_input("shard report", r)
    inv.add_input("--calib", kw.get("calib")).add_input("--against", kw.get("against"))
    inv.add_code("--data-loader", kw.get("data_loader")).add_code("--arch", kw.get("arch"))
    inv.add_input("config file", click.get_current_context().meta.get(CONFIG_META))
    for key, label in _OUTPUTS:
        inv.add_output(label, kw.get(key))
    if writes_model and kw.get("output") and inv.model_format == "onnx":
        inv.add_beside("-o/--output's external data", onnx_companion(kw["output"]))
    return inv


def check_files(kw: dict[str, Any], *, writes_model: bool = False) -> None:
    """Refuse, before the (slow) run, any output that is an input, another output, or not replaceable.

    One check for every command (see :mod:`actaudit.inventory`); every output needs
    ``--force`` to replace an existing file.
    """
    inventory(kw, writes_model=writes_model).check(bool(kw.get("force")))


def echo_remarks(kw: dict[str, Any], notes: Iterable[str] = (), warnings: Iterable[str] = ()) -> None:
    """Notes and warnings on stderr, unless ``-q`` or the table (which lists them itself) goes to stdout."""
    if kw["quiet"] or kw["fmt"] == "table":
        return
    for n in notes:
        say(f"actaudit: note: {n}")
    for w in warnings:
        say(f"actaudit: warning: {w}")


def exit_on_failed_gates(report: Report, named: bool = False) -> None:
    """Exit 1 when a ``--fail-on`` gate failed, naming the failed gates on stderr unless a line already did."""
    if not report.passed:
        if not named:
            failed = [g.gate.text for g in report.gates if g.failed]
            say(f"actaudit: gate failed: {', '.join(failed)}")
        sys.exit(EXIT_GATE)


def publish(report: RewriteReport | PruneReport, kw: dict[str, Any]) -> None:
    """rewrite and prune: warnings, the report (stdout or ``--report``), and where the model went."""
    echo_remarks(kw, warnings=report.warnings)
    if getattr(report, "fits_terminal", False):  # the rewrite table fits the terminal like the audit's
        from ..report.terminal import table_width

        rewrite = cast("RewriteReport", report)  # only a rewrite report fits the terminal
        text = rewrite.render(kw["fmt"], width=table_width(bool(kw.get("wide")), bool(kw["report"])))
    else:
        text = report.render(kw["fmt"])
    emit(text, kw["report"], kw["force"])
    out = report.output
    if out.get("written"):
        say(f"actaudit: wrote {out['path']} [{out['format']}]")
    elif out.get("reason") and not kw["quiet"]:
        say(f"actaudit: nothing written to {out['path']}: {out['reason']}")


def config_file(quiet: bool) -> str | None:
    """The config file this command read (``--config`` or found), said on stderr unless ``quiet``."""
    found = click.get_current_context().meta.get(CONFIG_META)
    if found and not quiet:
        say(f"actaudit: using config file {found}")
    return str(found) if found else None
