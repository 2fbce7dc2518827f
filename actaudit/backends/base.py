"""One interface for every model format, and the registry that picks a format's backend.

The pipeline (audit, inspect, rewrite, prune) talks to a model only through these
protocols:

- a :class:`Backend` loads a file, or wraps an in-memory model, into a :class:`ModelHandle`;
- a :class:`ModelHandle` binds and re-cuts batches for its model, captures per-site
  statistics (keeping the model's outputs from the same pass when asked), states the
  model's facts, and hands out the two editors below;
- a :class:`Surgery` builds rewritten variants, runs them, writes and reloads them;
- a :class:`Pruner` does the same for pruned variants, over the graph IR of
  :mod:`actaudit.edit.graph`.

Nothing here imports torch or onnx: :func:`backend_for` imports a backend module the first
time its format is asked for.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypedDict, TypeVar

from ..data import Batch, DataSource, InputSpec
from ..detect import EXPORT, ONNX, SAFETENSORS, TORCH_SAVE, TORCHSCRIPT, TRANSFORMERS
from ..errors import InputError
from ..kinds import DEFAULT_STUCK_FRACTION
from ..stats import AxisOverride, Capture

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import Unpack

    from ..edit.cuts import Edits
    from ..edit.graph import Graph
    from ..edit.ranges import InputRange
    from ..edit.slopes import SlopePlan, SurgeryResult
    from ..verdicts import SiteVerdict

    Outputs = list[np.ndarray]  # the floating-point outputs of one batch, in a fixed order


# -- what a backend is given ---------------------------------------------------------------------
@dataclass(frozen=True)
class LoadOptions:
    """How to load a file; each backend refuses the options that are not its own."""

    arch: str | None = None
    state_key: str | None = None
    trust_pickle: bool = False
    trust_code: bool = False
    strip_prefixes: tuple[str, ...] = ()
    non_strict: bool = False
    device: str = "cpu"
    provider: str | None = None
    threads: int | None = None


class CaptureKwargs(TypedDict, total=False):
    """The knobs of one capture pass, as keyword arguments of a backend's ``capture`` function."""

    samples: int | None  # stop after this many samples (all when None)
    stuck_fraction: float
    axis_overrides: list[AxisOverride]
    progress: Callable[[int], None] | None  # called with the samples of every batch fed
    # Keep the model's own outputs of this pass in ``Capture.outputs`` (rewrite and prune
    # compare their variants against them): no second pass over the data for a reference.
    keep_outputs: bool
    # ReLU sites measured from their output only where a backend can (ONNX): fires and positive
    # moments exact, min and negative moments NaN (not measured). Never for rewrite or prune.
    relu_from_output: bool


@dataclass
class CaptureOptions:
    """One capture pass over the calibration data (:class:`CaptureKwargs` with their defaults)."""

    samples: int | None = None
    stuck_fraction: float = DEFAULT_STUCK_FRACTION
    axis_overrides: list[AxisOverride] = field(default_factory=list)
    progress: Callable[[int], None] | None = None
    keep_outputs: bool = False
    relu_from_output: bool = False

    def kwargs(self) -> CaptureKwargs:
        return CaptureKwargs(
            samples=self.samples,
            stuck_fraction=self.stuck_fraction,
            axis_overrides=self.axis_overrides,
            progress=self.progress,
            keep_outputs=self.keep_outputs,
            relu_from_output=self.relu_from_output,
        )


# -- the protocols ------------------------------------------------------------------------------
class Surgery(Protocol):
    """Rewritten variants of one model: build, run, write, reload, and what the file holds."""

    @property
    def output_format(self) -> str:
        """What the written file is, as the report names it (``torchscript``, ``onnx``)."""
        ...

    @property
    def checks(self) -> tuple[str, ...]:
        """What verification does to the written file, for the report."""
        ...

    @property
    def written_data(self) -> Path | None:
        """The data file the last write put beside the model (ONNX over 2 GB), else None."""
        ...

    def build(self, plans: list[SlopePlan], to: str, compensate: bool) -> SurgeryResult: ...

    def outputs(
        self, model: object, source: DataSource, samples: int | None, batches: int | None
    ) -> Iterator[Outputs]:
        """The model's outputs on the calibration data, batch by batch as the capture fed them."""
        ...

    def stage(self, model: object, notes: list[str], out: Path, force: bool) -> AbstractContextManager[Path]:
        """A temporary path holding ``model`` written for ``out``, published when the block succeeds."""
        ...

    def reload(self, path: Path) -> object: ...

    def written_slopes(self, model: object) -> list[tuple[str, str, object]]: ...

    def original(self) -> object: ...

    def original_slopes(self) -> list[tuple[str, str, object]]: ...

    def trainable(self, model: object) -> bool: ...

    def frozen_parameters(self, model: object) -> list[str]: ...


class Pruner(Protocol):
    """Pruned variants of one model, analysed on the format-neutral graph IR."""

    notes: list[str]

    @property
    def output_format(self) -> str: ...

    @property
    def checks(self) -> tuple[str, ...]: ...

    @property
    def written_data(self) -> Path | None: ...

    def prepare(self, source: DataSource, samples: int | None) -> None:
        """Bind the first calibration batch (the example a graph is traced with)."""
        ...

    def original(self) -> object: ...

    def range_names(self, ranges: list[InputRange]) -> list[str]: ...

    def sample_shapes(self, ranges: list[InputRange]) -> dict[str, tuple[int, ...]]: ...

    def graph(self, model: object, shapes: dict[str, tuple[int, ...]]) -> Graph: ...

    def site_values(self, model: object, sites: list[SiteVerdict]) -> dict[str, tuple[str, str] | str]: ...

    def apply(self, model: object, graph: Graph, edits: Edits) -> object: ...

    def outputs(self, model: object, source: DataSource, samples: int | None) -> Iterator[Outputs]: ...

    def stage(
        self, model: object, notes: list[str], out: Path, force: bool
    ) -> AbstractContextManager[Path]: ...

    def reload(self, path: Path) -> object: ...

    def count_params(self, model: object) -> int: ...


class ModelHandle(Protocol):
    """A loaded model (a private copy, never the caller's object or file) and what can be done with it."""

    backend: str  # "torch" | "onnx": recorded in reports and shard counters

    @property
    def inputs(self) -> list[InputSpec]: ...

    @property
    def notes(self) -> list[str]: ...

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model only accepts, or None when its batch axis is free."""
        ...

    def batches(self, stream: Iterable[Batch], warnings: list[str]) -> Iterator[Batch]:
        """Batches bound to the model's inputs and re-cut to the batch size it takes.

        Idempotent: batches this returned come out unchanged when fed again, so a caller
        may re-cut a stream before splitting it (shards) and the capture then re-cuts nothing.
        """
        ...

    def capture(self, source: DataSource, opts: CaptureOptions) -> Capture:
        """Per-site statistics over ``source`` (and with ``keep_outputs`` the outputs, same pass)."""
        ...

    def model_facts(self) -> dict[str, object]:
        """Graph size, parameters, inputs and outputs as the format declares them."""
        ...

    def use_local_device(self, local_rank: int) -> None:
        """Under torchrun: run on this rank's device where the backend picks devices itself."""
        ...

    def writer(self, fmt: str, output: Path | None, output_format: str | None, notes: list[str]) -> str:
        """The file format a rewrite of a model loaded as ``fmt`` writes (or an InputError)."""
        ...

    def surgery(self, writer: str) -> Surgery: ...

    def pruner(self, output: Path | None, output_format: str | None) -> Pruner: ...


class Backend(Protocol):
    """One model-format family (PyTorch, ONNX): how its models are loaded."""

    def load(self, path: Path, fmt: str, opts: LoadOptions) -> tuple[ModelHandle, str]:
        """The model in ``path`` (of detected format ``fmt``), and its format as a report names it."""
        ...

    def wrap(self, model: object, opts: LoadOptions) -> tuple[ModelHandle, str] | None:
        """An in-memory model of this family's kind, and its format name; None for anything else."""
        ...

    def read_calibration(self, path: Path) -> DataSource:
        """A calibration file only this family can read (``.pt`` batches for torch)."""
        ...


# -- what both backends' handles share ------------------------------------------------------
class LoadedRecord(Protocol):
    """What each backend's record of a loaded model carries (``TorchModel``, ``OnnxModel``)."""

    inputs: list[InputSpec]
    notes: list[str]
    fixed_batch: int | None


R = TypeVar("R", bound=LoadedRecord)
R_contra = TypeVar("R_contra", bound=LoadedRecord, contravariant=True)


class CaptureFn(Protocol[R_contra]):
    """A backend's capture function over its own record of the model."""

    def __call__(self, raw: R_contra, source: DataSource, /, **kw: Unpack[CaptureKwargs]) -> Capture: ...


class HandleBase(Generic[R]):
    """The parts of a :class:`ModelHandle` that read the backend's record or call its capture."""

    def __init__(self, raw: R, capture: CaptureFn[R]) -> None:
        self.raw = raw
        self._capture = capture

    @property
    def inputs(self) -> list[InputSpec]:
        return self.raw.inputs

    @property
    def notes(self) -> list[str]:
        return self.raw.notes

    @property
    def fixed_batch(self) -> int | None:
        return self.raw.fixed_batch

    def capture(self, source: DataSource, opts: CaptureOptions) -> Capture:
        return self._capture(self.raw, source, **opts.kwargs())


# -- the registry -------------------------------------------------------------------------------
# Detected format → the module holding that family's backend (its ``BACKEND`` object).
_TORCH, _ONNX = "actaudit.backends.torch.adapter", "actaudit.backends.onnx.adapter"
_MODULES = {
    TORCHSCRIPT: _TORCH,
    EXPORT: _TORCH,
    TORCH_SAVE: _TORCH,
    SAFETENSORS: _TORCH,
    TRANSFORMERS: _TORCH,
    ONNX: _ONNX,
}
# In-memory models: the framework that must already be imported → its backend.
_IN_MEMORY = (("torch", _TORCH), ("onnx", _ONNX))
# Calibration files the data layer cannot read itself: suffix → backend.
_CALIB_SUFFIXES = {".pt": _TORCH, ".pth": _TORCH}


_PACKAGES = {"torch": ("torch",), "onnx": ("onnx", "onnxruntime")}


def packages_of(family: str) -> tuple[str, ...]:
    """The distributions whose versions a report of a ``family`` model records."""
    return _PACKAGES.get(family, ())


def _import(module: str) -> Backend:
    found: Backend = importlib.import_module(module).BACKEND
    return found


def backend_for(fmt: str) -> Backend:
    """The backend for a format :func:`actaudit.detect.detect_format` returned."""
    module = _MODULES.get(fmt)
    if module is None:
        raise InputError(f"no backend reads the format {fmt!r}", hint=f"known: {', '.join(sorted(_MODULES))}")
    return _import(module)


def wrap_in_memory(model: object, opts: LoadOptions) -> tuple[ModelHandle, str] | None:
    """``model`` as a handle of the backend whose kind it is, or None.

    A family is asked only when its framework is imported already: an ``nn.Module`` cannot
    exist without torch in ``sys.modules``, and nothing heavy is imported for a wrong guess.
    """
    for top, module in _IN_MEMORY:
        if top in sys.modules:
            got = _import(module).wrap(model, opts)
            if got is not None:
                return got
    return None


def read_calibration(path: Path) -> DataSource:
    """A calibration file of a suffix a backend reads (``.pt``: the torch backend)."""
    return _import(_CALIB_SUFFIXES[path.suffix.lower()]).read_calibration(path)


# For :func:`actaudit.data.load_calib_file`, which imports no backend.
CALIB_READERS: dict[str, Callable[[Path], DataSource]] = dict.fromkeys(_CALIB_SUFFIXES, read_calibration)
