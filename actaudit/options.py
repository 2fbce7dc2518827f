"""Every knob of an audit in one object (:class:`AuditOptions`), and the ``--unit-axis`` parser."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .data import DEFAULT_BATCH_SIZE, DEFAULT_SEED
from .errors import InputError
from .stats import AxisOverride
from .verdicts import Settings

if TYPE_CHECKING:
    from .distributed import DistEnv


@dataclass
class AuditOptions:
    """Every knob of an audit; ``None`` means "use the default"."""

    calib: str | os.PathLike[str] | None = None
    data_loader: str | None = None
    samples: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    input_shapes: Sequence[str] = ()
    seed: int = DEFAULT_SEED
    arch: str | None = None
    state_key: str | None = None
    trust_pickle: bool = False
    trust_code: bool = False
    strip_prefix: Sequence[str] = ()
    non_strict: bool = False
    unit_axis: Sequence[str] = ()
    settings: Settings = field(default_factory=Settings)
    fail_on: Sequence[str] = ()
    allow_uncovered: bool = False  # gates may pass although activations were not audited
    device: str = "cpu"
    provider: str | None = None
    threads: int | None = None
    per_unit: bool = False
    # ONNX: ReLU sites measured from their output only (fused kernels kept); their pre-activation
    # min, negative moments and non-positive maxima are not measured (null). Audit only.
    relu_from_output: bool = False
    input_range: Sequence[str] = ()  # [NAME=]LOW,HIGH: prove units dead by interval bounds
    progress: Callable[[int], None] | None = None
    # Maps each item a loader yields to the model's inputs, e.g. ``lambda b: b[0]`` for (inputs, labels).
    input_fn: Callable[[Any], object] | None = None
    val_range: tuple[float, float] | None = None  # synthetic values drawn from [LOW, HIGH]
    # Calibration from files (actaudit.data.files): tokens per prompt or samples per clip,
    # image size (SIZE or HxW), pixel scaling (unit, signed, imagenet) and NHWC layout.
    max_length: int | None = None
    resize: str | None = None
    normalize: str | None = None
    channels_last: bool = False
    tokenizer: str | None = None  # a local folder holding tokenizer.json, for a model folder without one
    no_resample: bool = False  # refuse WAV files at another sample rate instead of resampling them
    # An actaudit.shard.Shard: run only that part of the data, report exact counters. Typed here as
    # object so that the options do not import the shard module (it reaches the report assembly).
    shard: object | None = None
    dist: DistEnv | None = None  # this process is one rank of a torchrun job


def parse_axis_overrides(specs: Iterable[str]) -> list[AxisOverride]:
    out = []
    for spec in specs:
        glob, sep, axis = spec.rpartition("=")
        try:
            value = int(axis)
        except ValueError:
            value = None
        if not sep or not glob or value is None:
            raise InputError(f"--unit-axis {spec!r} is not SITE_GLOB=AXIS (e.g. 'encoder.*=-1')")
        out.append(AxisOverride(glob, value))
    return out
