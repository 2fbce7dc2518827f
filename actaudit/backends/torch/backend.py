"""The PyTorch backend: load → calibrate → capture, with the caller's model left as it was.

These are the steps on a :class:`TorchModel`; :mod:`.adapter` presents them as the
:mod:`actaudit.backends.base` protocols.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...data import Batch, DataSource, cap_samples, rechunk
from ...errors import CalibrationError, InputError
from ...stats import Capture
from ..base import CaptureKwargs, CaptureOptions
from .capture import run_capture
from .data import bind
from .load import TorchModel, _eager, load_torch
from .trust import program_output

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import Unpack

    from .load import LoadKeys

__all__ = ["TorchModel", "bound_batches", "capture", "from_module", "load", "model_facts"]

_TS_SUFFIXES = (".ts", ".pt", ".pth", ".jit", ".torchscript")


def load(path: str | Path, **kw: Unpack[LoadKeys]) -> TorchModel:
    return load_torch(path, **kw)


def from_module(module: torch.nn.Module) -> TorchModel:
    """Wrap an in-memory module without moving it; a ``ScriptModule`` goes the TorchScript way."""
    if isinstance(module, torch.jit.ScriptModule):
        from .load import from_script

        return from_script(module)
    dev = next((p.device for p in module.parameters()), torch.device("cpu"))
    return _eager("in-memory", module, dev, [])


def from_exported_program(ep: Any) -> TorchModel:
    """Wrap an in-memory ``torch.export.ExportedProgram``."""
    from .load import from_exported

    dev = next((t.device for t in ep.state_dict.values()), torch.device("cpu"))
    return from_exported(ep, dev)


def model_device(tm: TorchModel) -> torch.device:
    mod = tm.module
    try:
        for t in [*mod.parameters(), *mod.buffers()]:
            return t.device
    except Exception:
        pass
    return torch.device("cpu")


def float_dtype(tm: TorchModel) -> torch.dtype | None:
    try:
        for t in [*tm.module.parameters(), *tm.module.buffers()]:
            if t.is_floating_point():
                return t.dtype
    except Exception:
        pass
    return None


def bound_batches(tm: TorchModel, stream: Iterable[Batch], warnings: list[str]) -> Iterator[Batch]:
    """Batches as tensors on the model's device, re-cut to a fixed batch size (the one path)."""
    dev, fdt = model_device(tm), float_dtype(tm)
    bound: Iterable[Batch] = (bind(b, tm.inputs, dev, fdt, tm.notes) for b in stream)
    if tm.fixed_batch is not None:
        bound = rechunk(bound, tm.fixed_batch, warnings=warnings)
    for args, kwargs in bound:
        if kwargs and tm.fmt == "torch.export":
            # ExportedProgram.module() takes positional inputs only, in the program's order.
            names = [s.name for s in tm.inputs]
            missing = [n for n in names[len(args) :] if n not in kwargs]
            if missing:
                raise CalibrationError(
                    f"calibration data has no input {missing[0]!r}", hint=f"inputs are {names}"
                )
            args = [*args, *(kwargs.pop(n) for n in names[len(args) :])]
        yield args, kwargs


def batches_for(
    tm: TorchModel, source: DataSource, samples: int | None, warnings: list[str] | None = None
) -> Iterator[Batch]:
    return bound_batches(tm, cap_samples(source.batches(), samples), [] if warnings is None else warnings)


class _Recording:
    """Calls the model and keeps its floating-point outputs; looks like the model to the capture."""

    def __init__(self, fn: torch.nn.Module) -> None:
        self.fn = fn
        self.sink: list[list[np.ndarray]] = []
        self.names: list[str] | None = None

    def __call__(self, *args: object, **kwargs: object) -> object:
        out = self.fn(*args, **kwargs)
        self.record(out)
        return out

    def record(self, out: object) -> None:
        """Keep one batch's outputs (the in-graph capture calls the model itself, then this)."""
        from ...edit.drift import flatten_outputs, output_names

        self.sink.append(flatten_outputs(out))
        if self.names is None:
            self.names = output_names(out)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.fn.parameters()

    def buffers(self) -> Iterator[torch.Tensor]:
        return self.fn.buffers()


def capture(tm: TorchModel, source: DataSource, **kw: Unpack[CaptureKwargs]) -> Capture:
    """Per-site statistics; with ``keep_outputs`` the model's outputs of the same pass too."""
    o = CaptureOptions(**kw)
    modes = {}
    rec = _Recording(tm.module) if o.keep_outputs else None
    if tm.eager is not None:
        modes = {m: m.training for m in tm.eager.modules()}
        tm.eager.eval()
    warnings: list[str] = []
    try:
        with program_output():  # a trusted program's print goes to stderr, escaped, never into the report
            cap = run_capture(
                tm.module if rec is None else rec,
                batches_for(tm, source, o.samples, warnings),
                eager_model=tm.eager,
                graph_sites=tm.graph_sites,
                stuck_fraction=o.stuck_fraction,
                axis_overrides=o.axis_overrides,
                progress=o.progress,
            )
    finally:
        for m, training in modes.items():
            m.training = training
    cap.warnings.extend(w for w in warnings if w not in cap.warnings)
    cap.inputs = [s.to_dict() for s in tm.inputs]
    if rec is not None:
        cap.outputs, cap.output_names = rec.sink, rec.names
    return cap


def model_facts(handle: TorchModel) -> dict[str, object]:
    """Graph size, parameters, inputs and outputs as the format declares them (see :mod:`.facts`)."""
    from .facts import model_facts as facts

    return facts(handle)


def rewrite_writer(fmt: str, output: Path | None, want: str | None, notes: list[str]) -> str:
    """``ts`` | ``pt2`` | ``pickle``: what a rewrite of a model loaded as ``fmt`` is written as."""
    suffix = output.suffix.lower() if output else ""
    if fmt == "torchscript":
        if want == "pt2":
            raise InputError(
                "a TorchScript model is rewritten as TorchScript; --output-format pt2 needs an eager model"
            )
        return "ts"
    if fmt == "torch.export":
        if want == "ts":
            raise InputError(
                "a torch.export program is rewritten as .pt2; --output-format ts needs an eager model"
            )
        return "pt2"
    if want is None and suffix == ".pt2":
        want = "pt2"
    if fmt == "state_dict":
        if want is None and suffix in _TS_SUFFIXES:
            want = "ts"
        if want is None:
            if output is None:
                return "ts"
            raise InputError(
                f"a state_dict cannot carry a new activation, and {output} does not say which format to write",
                hint="pass --output-format ts|pt2, or name the output .ts or .pt2",
            )
        notes.append(
            "a state_dict holds weights only and cannot carry a new activation: wrote "
            + ("TorchScript" if want == "ts" else "a torch.export program (.pt2)")
        )
        return want
    return want or "pickle"
