"""Option groups that every subcommand subscribes to, written once.

Each group is a decorator adding a block of click options: how to load the model
(:func:`model_options`, trust flags included), where the calibration data comes from
(:func:`data_options`), the verdict thresholds (:func:`threshold_options`), the report's
format and destination (:func:`format_option`, :func:`output_option`, ...), the gates
(:func:`fail_on_option`) and the common switches (:func:`quiet_option`, :func:`debug_option`).
Nothing here imports torch, onnx or numpy: ``--help`` stays instant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from ..report.draw import FORMATS

F = TypeVar("F", bound=Callable[..., object])


class Finite(click.FloatRange):
    """A finite number in a range: ``nan`` and ``inf`` are refused, naming the option.

    ``click.FloatRange`` lets ``nan`` through (every comparison with it is false), and a
    ``nan`` threshold turns detection off: every unit passes, every gate passes. Config
    files reach the same check (TOML has ``nan`` and ``inf`` literals).
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def group(*options: Callable[[F], F]) -> Callable[[F], F]:
    """The decorators ``options`` as one, applied so that ``--help`` lists them in the order given."""

    def apply(f: F) -> F:
        for opt in reversed(options):
            f = opt(f)
        return f

    return apply


def defaulted(flag: str, type: Any, default: Any, help: str, **kw: Any) -> Callable[[F], F]:
    """An option whose ``--help`` shows its default."""
    return click.option(flag, type=type, default=default, show_default=True, help=help, **kw)


def format_option(f: F) -> F:
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)(f)


def output_option(help: str = "Write the report here (atomically).", **kw: Any) -> Callable[[F], F]:
    return click.option("-o", "--output", type=click.Path(dir_okay=False), help=help, **kw)


def force_option(help: str = "Overwrite an existing output file.") -> Callable[[F], F]:
    return click.option("--force", is_flag=True, help=help)


def quiet_option(help: str = "No warnings on stderr.") -> Callable[[F], F]:
    return click.option("-q", "--quiet", is_flag=True, help=help)


def debug_option(f: F) -> F:
    return click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")(f)


def per_unit_option(**kw: Any) -> Callable[[F], F]:
    return click.option("--per-unit", is_flag=True, help="Include per-unit rates and ranges in JSON.", **kw)


def html_option(help: str) -> Callable[[F], F]:
    return click.option("--html", type=click.Path(dir_okay=False), metavar="FILE", help=help)


def fail_on_option(help: str) -> Callable[[F], F]:
    return click.option("--fail-on", multiple=True, metavar="[SITE_GLOB:]METRIC>N", help=help)


def input_range_option(help: str) -> Callable[[F], F]:
    return click.option("--input-range", "input_range", multiple=True, metavar="[NAME=]LOW,HIGH", help=help)


def unit_axis_option(help: str) -> Callable[[F], F]:
    return click.option("--unit-axis", multiple=True, metavar="SITE_GLOB=AXIS", help=help)


def max_drift_option(default: float, help: str) -> Callable[[F], F]:
    return defaulted("--max-drift", Finite(0, min_open=True), default, help=help)


def output_format_option(help: str) -> Callable[[F], F]:
    return click.option("--output-format", type=click.Choice(["ts", "pt2"]), help=help)


def model_output_option(what: str) -> Callable[[F], F]:
    """``-o/--output`` of rewrite and prune: where the new model goes (required)."""
    return output_option(help=f"Where to write the {what} model (atomically, {_AFTER[what]}).", required=True)


_AFTER = {"rewritten": "after it is verified", "pruned": "after it is reloaded and re-measured"}


# How to load the checkpoint, with the consent flags (never read from a config file).
model_options = group(
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
    click.option("--device", default="cpu", show_default=True, help="PyTorch device (cpu, cuda, cuda:1)."),
    click.option("--provider", help="onnxruntime execution provider (default: CPUExecutionProvider)."),
    click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads."),
)


def val_range(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LOW,HIGH (e.g. 0,30521)") from None
    if not lo <= hi:
        raise click.BadParameter(f"{value!r}: LOW must not exceed HIGH")
    return (lo, hi)


# Where the calibration batches come from.
data_options = group(
    click.option(
        "--calib",
        type=click.Path(readable=False),
        help=".npy (one input, samples on axis 0; memory-mapped), .npz (one array per input name), "
        ".pt (a list of ready batches; loaded with weights_only=True), a .txt/.jsonl of prompts "
        "(tokenised by the model folder's tokenizer), or a folder or glob of PNG/JPEG images or WAV files.",
    ),
    click.option(
        "--data-loader",
        metavar="FILE.py:FUNCTION",
        help="A function that yields batches (tensor, tuple of positional inputs or dict); yield the "
        "inputs only, not (inputs, labels) pairs. Runs that code.",
    ),
    click.option("--samples", type=click.IntRange(min=1), help="Use at most N samples."),
    defaulted(
        "--batch-size",
        click.IntRange(min=1),
        32,
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
        callback=val_range,
        help="Draw synthetic values uniformly from [LOW, HIGH] (integers for integer inputs, e.g. token "
        "ids 0,30521). Default: standard normal floats, 0/1 integers.",
    ),
    defaulted("--seed", int, 0, help="Seed for synthetic inputs."),
    click.option(
        "--max-length",
        type=click.IntRange(min=1),
        help="Text: tokens per prompt (default: the model's positions, at most 512); WAV: samples per clip.",
    ),
    click.option("--resize", metavar="SIZE|HxW", help="Images: read every image at this size (bilinear)."),
    click.option(
        "--normalize",
        metavar="unit|signed|imagenet",
        help="Images: pixels to [0,1] (unit, the default), [-1,1] (signed) or ImageNet mean/std.",
    ),
    click.option("--channels-last", is_flag=True, help="Images: NHWC batches instead of NCHW."),
    click.option(
        "--tokenizer",
        metavar="DIR",
        help="Text: tokenise with the tokenizer.json of this local folder (for a model folder without one; "
        "never downloaded).",
    ),
    click.option(
        "--no-resample",
        is_flag=True,
        help="WAV: refuse files at another sample rate than the model's instead of resampling them.",
    ),
)


# When a unit counts as dead, saturated or rarely firing.
threshold_options = group(
    defaulted(
        "--stuck-fraction",
        Finite(0, 1, min_open=True, max_open=True),
        0.01,
        help="An element is stuck where the local derivative is below this fraction of its maximum.",
    ),
    defaulted(
        "--dead-rate",
        Finite(0, 1),
        0.0,
        help="A rectifier unit firing on at most this fraction of elements is dead.",
    ),
    defaulted(
        "--saturation-rate",
        Finite(0, 1),
        0.99,
        help="A bounded unit stuck on at least this fraction of elements is saturated.",
    ),
    defaulted(
        "--rare-rate",
        Finite(0, 1),
        0.01,
        help="A live rectifier unit firing on fewer than this fraction of elements is rarely firing.",
    ),
    unit_axis_option(
        "Override the unit axis of matching sites (default: 1 after convolutions, last after linear layers)."
    ),
)


def writer_options(what: str) -> Callable[[F], F]:
    """What ``rewrite`` and ``prune`` (commands that write a model) start with: ``-o`` and the audit's groups."""
    return group(model_output_option(what), model_options, data_options, threshold_options)


def writer_outputs(force: str = "Overwrite an existing output file.") -> Callable[[F], F]:
    """What they end with: ``--force``, the report's format and file, ``-q``, ``--debug``, ``--config``."""
    from .config import config_option

    return group(force_option(force), report_file_options, config_option)


def report_file_options(f: F) -> F:
    """``--format`` and ``--report FILE`` of rewrite and prune, then ``-q`` and ``--debug``."""
    return group(
        format_option,
        click.option(
            "--report",
            type=click.Path(dir_okay=False),
            help="Write the report here instead of stdout (atomically, overwriting).",
        ),
        quiet_option(),
        debug_option,
    )(f)


def report_options(quiet: str = "No warnings on stderr.") -> Callable[[F], F]:
    """``-q`` and ``--debug``: the switches every command ends with."""
    return group(quiet_option(quiet), debug_option)


__all__: Sequence[str] = [
    "FORMATS",
    "data_options",
    "debug_option",
    "fail_on_option",
    "force_option",
    "format_option",
    "group",
    "model_options",
    "output_option",
    "quiet_option",
    "threshold_options",
    "val_range",
]
