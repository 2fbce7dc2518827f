"""The ``actaudit`` command line: a thin layer over :mod:`actaudit.api`.

stdout carries only the report; logs, warnings and progress go to stderr. No torch
import happens on a ``--help`` path.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .._version import __version__
from ..errors import EXIT_GATE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, ActauditError
from ..fileio import Terminated
from .config import config_option

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "json", "csv", "markdown")


class _Group(click.Group):
    """Turns user errors into one line (exit 2) and bugs into exit 3."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv
        try:
            return super().invoke(ctx)
        except ActauditError as e:
            if not getattr(e, "silent", False):  # another torchrun rank's failure, shown by rank 0
                click.echo(f"actaudit: error: {e.one_line()}", err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("actaudit: interrupted; no output was written", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as e:
            if debug:
                traceback.print_exc()
            click.echo(
                f"actaudit: internal error: {type(e).__name__}: {e}"
                + ("" if debug else " (rerun with --debug for a traceback, and please report it)"),
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="actaudit")
def cli() -> None:
    """Audit trained checkpoints for dead and saturated units.

    \b
    Examples:
      actaudit audit model.pt2 --calib images.npy
      actaudit audit model.onnx --calib batch.npz --format json --fail-on 'dead-fraction>0.2'
      actaudit audit weights.pt --arch mynet.py:build --calib images.npy

    Exit codes: 0 ok, 1 a --fail-on gate failed, 2 usage or input error,
    3 internal error, 130 interrupted.
    """


def model_options(f: F) -> F:
    """How to load the checkpoint."""
    for opt in reversed(
        [
            click.option(
                "--arch",
                metavar="MODULE:CALLABLE",
                help="For a state_dict: a zero-argument callable that builds the model "
                "(MODULE:NAME or path/to/file.py:NAME). Runs that code.",
            ),
            click.option(
                "--state-key",
                metavar="KEY",
                help="Key of the weights inside a training checkpoint (dotted for nested dicts). "
                "Default: the first of state_dict, model_state_dict, model_state, model.",
            ),
            click.option(
                "--strip-prefix",
                "strip_prefix",
                multiple=True,
                metavar="PREFIX",
                help="For a state_dict: keep the keys that start with PREFIX, without it (repeatable, applied "
                "in order), e.g. 'model.' of a Lightning checkpoint or 'model_ema.' for its EMA weights.",
            ),
            click.option(
                "--non-strict",
                is_flag=True,
                help="For a state_dict: load the keys that fit the model and list the others "
                "(weights the model has and the checkpoint lacks stay an error).",
            ),
            click.option(
                "--trust-pickle",
                is_flag=True,
                help="Allow loading a pickled nn.Module. Unpickling runs code from the file: "
                "only for files whose origin you trust.",
            ),
            click.option(
                "--trust-code",
                is_flag=True,
                help="Load a TorchScript or torch.export file whose code fails the static check "
                "(file or OS access, unknown operators, pickled objects). Runs that code.",
            ),
            click.option(
                "--device", default="cpu", show_default=True, help="PyTorch device (cpu, cuda, cuda:1)."
            ),
            click.option(
                "--provider", help="onnxruntime execution provider (default: CPUExecutionProvider)."
            ),
            click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads."),
        ]
    ):
        f = opt(f)
    return f


def _val_range(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LOW,HIGH (e.g. 0,30521)") from None
    if not lo <= hi:
        raise click.BadParameter(f"{value!r}: LOW must not exceed HIGH")
    return (lo, hi)


def data_options(f: F) -> F:
    """Where the calibration batches come from."""
    for opt in reversed(
        [
            click.option(
                "--calib",
                type=click.Path(readable=False),
                help=".npy (one input, samples on axis 0; memory-mapped), .npz (one array per input name) "
                "or .pt (a list of ready batches; loaded with weights_only=True).",
            ),
            click.option(
                "--data-loader",
                metavar="FILE.py:FUNCTION",
                help="A function that yields batches (tensor, tuple of positional inputs or dict); yield the "
                "inputs only, not (inputs, labels) pairs. Runs that code.",
            ),
            click.option("--samples", type=click.IntRange(min=1), help="Use at most N samples."),
            click.option(
                "--batch-size",
                type=click.IntRange(min=1),
                default=32,
                show_default=True,
                help="Samples per forward pass for .npy/.npz/synthetic data (.pt files and loaders keep their own "
                "batches; a torch.export program with a fixed batch uses that).",
            ),
            click.option(
                "--input-shape",
                "input_shapes",
                multiple=True,
                metavar="[NAME=]DIMS[:DTYPE]",
                help="Shape (and dtype) of a synthetic input, e.g. 1x3x224x224 or input_ids=1x128:int64 "
                "(the leading dim is the batch axis). Used when no calibration data is given.",
            ),
            click.option(
                "--val-range",
                metavar="LOW,HIGH",
                callback=_val_range,
                help="Draw synthetic values uniformly from [LOW, HIGH] (integers for integer inputs, e.g. token "
                "ids 0,30521). Default: standard normal floats, 0/1 integers.",
            ),
            click.option("--seed", type=int, default=0, show_default=True, help="Seed for synthetic inputs."),
        ]
    ):
        f = opt(f)
    return f


def threshold_options(f: F) -> F:
    for opt in reversed(
        [
            click.option(
                "--stuck-fraction",
                type=click.FloatRange(0, 1, min_open=True, max_open=True),
                default=0.01,
                show_default=True,
                help="An element is stuck where the local derivative is below this fraction of its maximum.",
            ),
            click.option(
                "--dead-rate",
                type=click.FloatRange(0, 1),
                default=0.0,
                show_default=True,
                help="A rectifier unit firing on at most this fraction of elements is dead.",
            ),
            click.option(
                "--saturation-rate",
                type=click.FloatRange(0, 1),
                default=0.99,
                show_default=True,
                help="A bounded unit stuck on at least this fraction of elements is saturated.",
            ),
            click.option(
                "--rare-rate",
                type=click.FloatRange(0, 1),
                default=0.01,
                show_default=True,
                help="A live rectifier unit firing on fewer than this fraction of elements is rarely firing.",
            ),
            click.option(
                "--unit-axis",
                multiple=True,
                metavar="SITE_GLOB=AXIS",
                help="Override the unit axis of matching sites (default: 1 after convolutions, last after linear layers).",
            ),
        ]
    ):
        f = opt(f)
    return f


def output_options(f: F) -> F:
    for opt in reversed(
        [
            click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True),
            click.option(
                "-o", "--output", type=click.Path(dir_okay=False), help="Write the report here (atomically)."
            ),
            click.option("--force", is_flag=True, help="Overwrite an existing output file."),
            click.option("--per-unit", is_flag=True, help="Include per-unit rates and ranges in JSON."),
            click.option("-q", "--quiet", is_flag=True, help="No warnings on stderr."),
            click.option("--debug", is_flag=True, help="Show tracebacks of internal errors."),
        ]
    ):
        f = opt(f)
    return f


def _emit(text: str, output: str | None, force: bool) -> None:
    if output:
        from ..fileio import write_text_atomic

        write_text_atomic(output, text, force=force)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True, readable=False))
@model_options
@data_options
@threshold_options
@click.option(
    "--fail-on",
    multiple=True,
    metavar="[SITE_GLOB:]METRIC>N",
    help="Exit 1 when a gate trips, e.g. 'dead>0', 'dead-fraction>0.2', 'encoder.*:saturated-fraction>0.1'. "
    "Metrics: dead, dead-fraction, saturated, saturated-fraction, rarely-firing, rarely-firing-fraction, nonfinite, uncovered.",
)
@click.option(
    "--against",
    type=click.Path(dir_okay=False),
    metavar="BASELINE.json",
    help="Compare with a previous --format json report; exit 1 on regressions (newly dead units, "
    "sites whose dead fraction rose by more than --max-dead-fraction-rise).",
)
@click.option(
    "--max-dead-fraction-rise",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="With --against: allowed rise of a site's dead fraction (0.05 = 5 points).",
)
@click.option(
    "--max-new-dead",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --against: allowed number of newly dead units.",
)
@click.option(
    "--allow-renamed-sites",
    is_flag=True,
    help="With --against: when no site name matches the baseline, pair sites by position (same kind and "
    "unit count) instead of refusing the comparison as not comparable.",
)
@click.option(
    "--html",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write a self-contained HTML report (charts, no network resources) to FILE.",
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write the gates and baseline comparisons as JUnit XML (one testcase each) for CI test reports.",
)
@click.option(
    "--wide",
    is_flag=True,
    help="Print the full table even when it is wider than the terminal (files and pipes always get it).",
)
@click.option(
    "--input-range",
    "input_range",
    multiple=True,
    metavar="[NAME=]LOW,HIGH",
    help="Box of valid inputs (repeatable; NAME= for one input): interval bounds mark the units proven dead "
    "for every input in it (proven_dead_units in JSON, a column in the table); '-inf,inf' gives weights-only facts.",
)
@click.option(
    "--shard",
    metavar="K/N",
    help="Audit only the K-th of N parts of the data (batch i goes to part i mod N) and write a JSON "
    "report with exact counters; combine the N reports with 'actaudit merge'.",
)
@click.option(
    "--dist-timeout",
    type=click.FloatRange(min=1),
    default=1800,
    show_default=True,
    metavar="SECONDS",
    help="Under torchrun: how long a rank waits for the others at each collective.",
)
@output_options
@config_option
def audit(**kw: Any) -> None:
    """Run calibration data through MODEL and report dead and saturated units per call site.

    \b
    Examples:
      actaudit audit model.ts --calib images.npy
      actaudit audit model.onnx --input-shape input=1x3x224x224 --format json
      actaudit audit ckpt.pt --arch models.py:resnet --calib val.npz --fail-on 'dead>0'
    """
    from ..api import audit as run_audit

    opts = audit_options(kw)
    opts.fail_on = kw["fail_on"]
    opts.input_range = kw["input_range"]
    opts.per_unit = kw["per_unit"]
    from ..distributed import from_env

    opts.dist = from_env(kw["dist_timeout"])
    main_rank = opts.dist is None or opts.dist.is_main
    if opts.dist is not None and opts.threads is None:
        # torchrun gives each rank OMP_NUM_THREADS (1 by default); onnxruntime does not read it.
        omp = os.environ.get("OMP_NUM_THREADS", "")
        opts.threads = int(omp) if omp.isdigit() and int(omp) > 0 else None
    if kw["shard"]:
        _shard_checks(kw, opts)
    if not main_rank:
        # Every rank runs its share; rank 0 alone writes and decides the exit code.
        kw.update(quiet=True, output=None, html=None, junit=None, against=None)
    _check_output(kw["output"], kw["force"], kw["model"])
    _check_output(kw["html"], kw["force"], kw["model"])
    from ..fileio import refuse_collisions

    refuse_collisions(
        [("-o/--output", kw["output"]), ("--html", kw["html"]), ("--junit", kw["junit"])],
        [("model", kw["model"]), ("--calib", kw["calib"]), ("--against", kw["against"])],
        [("--data-loader", kw["data_loader"]), ("--arch", kw["arch"])],
    )
    _check_output(kw["junit"], kw["force"], kw["model"])
    from .config import CONFIG_META

    config_file = click.get_current_context().meta.get(CONFIG_META)
    if config_file and not kw["quiet"]:
        click.echo(f"actaudit: using config file {config_file}", err=True)
    if kw["per_unit"] and kw["fmt"] != "json" and not kw["quiet"]:
        click.echo(
            f"actaudit: warning: --per-unit adds per-unit vectors to JSON only; --format {kw['fmt']} ignores it "
            "(use --format json, or --html for per-site unit indices)",
            err=True,
        )
    baseline = None
    if kw["against"]:
        from ..report.baseline import load_baseline

        baseline = load_baseline(kw["against"])  # fail before the slow run
    from ..progress import progress_for

    progress = progress_for(None, quiet=kw["quiet"])
    opts.progress = progress
    with progress:
        report = run_audit(kw["model"], options=opts)
    if config_file:
        report.run["config_file"] = str(config_file)
    if not main_rank:
        return
    if baseline is not None:
        from ..report.baseline import compare

        comparison = compare(
            report.to_dict(),
            baseline,
            max_dead_fraction_rise=kw["max_dead_fraction_rise"],
            max_new_dead=kw["max_new_dead"],
            baseline_path=kw["against"],
            allow_renamed=kw["allow_renamed_sites"],
        )
        report.gates += comparison.gate_results
        report.baseline = comparison.to_dict()
        if not kw["quiet"]:
            click.echo(comparison.render(), err=True, nl=False)
    else:
        comparison = None
    if not kw["quiet"] and kw["fmt"] != "table":
        for n in report.notes:
            click.echo(f"actaudit: note: {n}", err=True)
        for w in report.warnings:
            click.echo(f"actaudit: warning: {w}", err=True)
    from ..report.text import table_width

    width = table_width(kw["wide"], bool(kw["output"]))
    _emit(report.render(kw["fmt"], color=_use_color(kw["output"]), width=width), kw["output"], kw["force"])
    if kw["html"]:
        from ..fileio import write_text_atomic
        from ..report.html import render_html

        write_text_atomic(kw["html"], render_html(report, comparison), force=kw["force"])
    if kw["junit"]:
        from ..fileio import write_text_atomic
        from ..junit import render_junit

        write_text_atomic(kw["junit"], render_junit(report), force=kw["force"])
    if report.gates:
        from ..junit import ci_summary

        for line in ci_summary(report):
            click.echo(line, err=True)
    if not report.passed:
        failed = [g.gate.text for g in report.gates if g.failed]
        click.echo(f"actaudit: gate failed: {', '.join(failed)}", err=True)
        sys.exit(EXIT_GATE)


def _shard_checks(kw: dict[str, Any], opts: Any) -> None:
    from ..errors import InputError
    from ..shard import parse_shard

    opts.shard = parse_shard(kw["shard"])
    if opts.dist is not None:
        raise InputError("--shard and torchrun split the data twice", hint="use one of them")
    if kw["fmt"] != "json":
        raise InputError("--shard writes its counters in JSON only", hint="add --format json")
    for flag in ("against", "html"):
        if kw[flag]:
            raise InputError(
                f"--{flag} applies to the whole audit, not to one shard",
                hint=f"give --{flag} to actaudit merge" if flag == "html" else "compare the merged report",
            )


def audit_options(kw: dict[str, Any]) -> Any:
    """:class:`actaudit.api.AuditOptions` from the model, data and threshold option bundles."""
    from ..api import AuditOptions
    from ..verdicts import Settings

    settings = Settings(
        stuck_fraction=kw["stuck_fraction"],
        dead_rate=kw["dead_rate"],
        saturation_rate=kw["saturation_rate"],
        rare_rate=kw["rare_rate"],
    )
    return AuditOptions(
        calib=kw["calib"],
        data_loader=kw["data_loader"],
        samples=kw["samples"],
        batch_size=kw["batch_size"],
        input_shapes=kw["input_shapes"],
        seed=kw["seed"],
        val_range=kw.get("val_range"),
        arch=kw["arch"],
        state_key=kw["state_key"],
        trust_pickle=kw["trust_pickle"],
        trust_code=kw["trust_code"],
        strip_prefix=kw["strip_prefix"],
        non_strict=kw["non_strict"],
        unit_axis=kw["unit_axis"],
        settings=settings,
        device=kw["device"],
        provider=kw["provider"],
        threads=kw["threads"],
    )


def _use_color(output: str | None) -> bool:
    import os

    return not output and "NO_COLOR" not in os.environ and sys.stdout.isatty()


def _check_output(output: str | None, force: bool, *inputs: str) -> None:
    """Refuse before the (slow) run, not after it."""
    import os

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


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="actaudit", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("actaudit: interrupted; no output was written", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Terminated as e:
        click.echo("actaudit: terminated (SIGTERM); no output was written", err=True)
        sys.exit(e.code)


__all__ = ["EXIT_USAGE", "cli", "main"]

# inspect command
from .inspect import inspect_command  # noqa: E402

cli.add_command(config_option(inspect_command(model_options)), "inspect")

# rewrite command
from .rewrite import rewrite as _rewrite  # noqa: E402

cli.add_command(_rewrite)

# prune command
from .prune import prune as _prune  # noqa: E402

cli.add_command(_prune)

# merge command
from .merge import merge as _merge  # noqa: E402

cli.add_command(_merge)
