"""The PyTorch backend: load → calibrate → capture, with the caller's model left as it was."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from ...data import Batch, DataSource, InputSpec, cap_samples, rechunk
from ...errors import CalibrationError
from ...stats import AxisOverride, Capture
from .capture import run_capture
from .data import bind
from .load import TorchModel, _eager, load_torch

__all__ = ["TorchModel", "capture", "from_module", "load"]


def load(path: str | Path, **kw: Any) -> TorchModel:
    return load_torch(path, **kw)


def from_module(module: torch.nn.Module) -> TorchModel:
    """Wrap an in-memory module without moving it; a ``ScriptModule`` goes the TorchScript way."""
    if isinstance(module, torch.jit.ScriptModule):
        from .load import from_script

        return from_script(module)
    dev = next((p.device for p in module.parameters()), torch.device("cpu"))
    return _eager("in-memory", module, dev, [])


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


def batches_for(tm: TorchModel, source: DataSource, samples: int | None) -> Iterator[Batch]:
    dev = model_device(tm)
    fdt = float_dtype(tm)
    stream: Iterable[Batch] = cap_samples(source.batches(), samples)
    if tm.fixed_batch is not None:
        stream = rechunk(stream, tm.fixed_batch)
    for b in stream:
        args, kwargs = bind(b, tm.inputs, dev, fdt)
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


def capture(
    tm: TorchModel,
    source: DataSource,
    *,
    samples: int | None,
    stuck_fraction: float,
    axis_overrides: list[AxisOverride],
    progress: Callable[[int], None] | None = None,
) -> Capture:
    modes = {}
    mod = tm.module
    if tm.eager is not None:
        modes = {m: m.training for m in tm.eager.modules()}
        tm.eager.eval()
    try:
        cap = run_capture(
            mod,
            batches_for(tm, source, samples),
            eager_model=tm.eager,
            graph_sites=tm.graph_sites,
            stuck_fraction=stuck_fraction,
            axis_overrides=axis_overrides,
            progress=progress,
        )
    finally:
        for m, training in modes.items():
            m.training = training
    cap.inputs = [s.to_dict() for s in tm.inputs]
    return cap


def input_specs(tm: TorchModel) -> list[InputSpec]:
    return tm.inputs


def from_exported_program(ep: Any) -> TorchModel:
    """Wrap an in-memory ``torch.export.ExportedProgram``."""
    from .load import from_exported

    dev = next((t.device for t in ep.state_dict.values()), torch.device("cpu"))
    return from_exported(ep, dev)


def model_facts(handle: TorchModel) -> dict[str, Any]:
    """Graph size, parameters, inputs and outputs as the format declares them (see :mod:`.facts`)."""
    from .facts import model_facts as facts

    return facts(handle)
