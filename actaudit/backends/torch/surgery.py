"""The rewrite command's view of a PyTorch model: capture with outputs, build variants, write and reload them.


The default form is a slope per unit (0 for units that keep plain ReLU), ReLU6's cap
kept, and the exact shift ``slope·E[min(z, 0)]`` subtracted right after (computed by
:meth:`SlopePlan.shift_for`): a :class:`UnitPReLU` module in eager models, ``aten::prelu``
and ``aten::sub`` with tensor constants in TorchScript, ``aten.prelu`` with a new
parameter and ``aten.sub`` of a new buffer in ``torch.export`` programs. The classic
one-α forms below remain for ``--to leaky`` / ``--shift fold|none``.

Sites are named exactly as the audit names them (``b.relu#1``, ``enc/relu``), so a
slope chosen from a report lands on the call it was measured at:

* eager modules: a ReLU module called once is swapped; a module reused at several
  sites with different slopes, and functional ``F.relu``/``torch.relu``/``x.relu()``
  calls, need the calling module's ``forward`` as a graph: that one module (not the
  whole model) is traced with ``torch.fx`` (its children stay leaves) and replaced by
  the traced ``GraphModule``. A module that cannot be traced keeps its functional
  calls, which are listed with the reason;
* TorchScript: the top-level ``forward`` graph is inlined and each ``aten::relu`` /
  ``aten::relu_`` node becomes ``aten::leaky_relu`` / ``aten::leaky_relu_`` with its
  own slope constant (no freezing: parameters stay parameters and stay trainable);
* ``torch.export``: ``aten.relu`` nodes of the program's graph get the
  ``aten.leaky_relu`` target and a slope argument; PReLU slopes become new
  parameters of the program.

Compensation folds ``α·E[min(z, 0)]`` per unit into the bias of the next Conv/Linear
op so that the mean of its output is preserved. It is exact for a linear consumer
without padding; at zero-padded borders a convolution sees padded zeros, not shifted
activations, so the fold over-corrects there.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ...data import Batch, DataSource
from ...edit.drift import Outputs
from ...edit.folder import FOLDER
from ...edit.recycle import Recycled, RecyclePlan
from ...edit.slopes import SlopePlan, SurgeryResult
from .activations import AxisPReLU, ShiftedLeakyReLU, UnitPReLU
from .eager_surgery import rewrite_eager
from .export_surgery import export_slopes, rewrite_export
from .files import clone_export, save_export, save_torchscript
from .load import Runnable, TorchModel
from .recycle import recycle_eager
from .recycle_export import recycle_export
from .recycle_script import recycle_script
from .script_surgery import rewrite_torchscript, torchscript_slopes

TS = "ts"
PT2 = "pt2"
PICKLE = "pickle"


class TorchSurgeon:
    """Capture with outputs, build rewritten variants, run them, write and reload them."""

    backend = "torch"

    def __init__(self, tm: TorchModel, writer: str) -> None:
        from .backend import float_dtype, model_device

        self.tm = tm
        self.writer = writer  # ts | pt2 | pickle
        self.device = model_device(tm)
        self.fdt = float_dtype(tm)
        self.example: Batch | None = None
        # A ScriptModule may keep state between calls (attributes it updates): every variant
        # starts from the state the file had, not from the state the audit pass left.
        self._script = save_torchscript(tm.module) if tm.fmt == "torchscript" else None

    # what the file on disk will be
    @property
    def output_format(self) -> str:
        return {TS: "torchscript", PT2: "torch.export", PICKLE: "pickled-module", FOLDER: "transformers"}[
            self.writer
        ]

    def build(self, plans: list[SlopePlan], to: str, compensate: bool) -> SurgeryResult:
        tm = self.tm
        if tm.fmt == "torchscript":
            assert self._script is not None
            fresh = torch.jit.load(io.BytesIO(self._script), map_location=self.device)
            return rewrite_torchscript(fresh, plans, to, compensate=compensate)
        if tm.fmt == "torch.export":
            assert tm.exported is not None  # a program keeps its ExportedProgram
            return rewrite_export(tm.exported, plans, to, compensate=compensate)
        assert tm.eager is not None  # every other format is an eager module
        res = rewrite_eager(tm.eager, plans, to, compensate=compensate)
        res.model.eval()
        untraceable = [n for n, why in res.skipped.items() if "torch.fx cannot trace" in why]
        if untraceable and self.writer == TS:
            via = self._via_torchscript(plans, to, compensate)
            if via is not None and len(via.skipped) < len(res.skipped):
                return via
        for n in untraceable:
            if self.writer != TS:
                res.skipped[n] += (
                    "; writing TorchScript (-o FILE.ts or --output-format ts) rewrites it in the compiled graph"
                )
        return res

    def _via_torchscript(self, plans: list[SlopePlan], to: str, compensate: bool) -> SurgeryResult | None:
        """Functional ReLUs in a module torch.fx cannot trace: script the eager model and edit its graph."""
        if self._scripted is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._scripted = save_torchscript(torch.jit.script(self.tm.eager))
            except Exception:
                self._scripted = b""
        if not self._scripted:
            return None
        fresh = torch.jit.load(io.BytesIO(self._scripted), map_location=self.device)
        res = rewrite_torchscript(fresh, plans, to, compensate=compensate)
        res.model.eval()
        res.notes.append(
            "torch.fx cannot trace a module with functional ReLUs: the model was scripted and the sites rewritten "
            "in its TorchScript graph"
        )
        return res

    _scripted: bytes | None = None

    def recycle(
        self,
        plans: list[tuple[RecyclePlan, int, int, tuple[int, ...]]],
        slope_plans: list[SlopePlan],
        seed: int,
        source: DataSource,
        samples: int | None,
    ) -> tuple[SurgeryResult, dict[str, Recycled], dict[str, str]]:
        """Recycle dead units in a copy of the eager model (:mod:`.recycle`), then give them ``slope_plans``."""
        tm = self.tm
        if tm.fmt in ("torch.export", "torchscript"):
            return self._recycle_graph(plans, slope_plans, seed, source, samples)
        if tm.eager is None:
            why = (
                f"recycling edits eager models, TorchScript, torch.export programs and ONNX graphs, not "
                f"{tm.fmt} models: load the eager model or use --mode deploy"
            )
            return SurgeryResult(None), {}, {p.name: why for p, *_ in plans}
        model = copy.deepcopy(tm.eager)
        model.eval()

        def run(m: nn.Module) -> None:
            for _ in self.outputs(m, source, samples, None):
                pass

        done, refused = recycle_eager(tm.eager, model, plans, seed, run)
        used = _slopes_for(slope_plans, plans, done)
        res = rewrite_eager(model, used, "prelu", copy_model=False) if used else SurgeryResult(model)
        res.model.eval()
        return res, done, refused

    def _callable(self, model: object) -> torch.nn.Module:
        if self.tm.fmt == "torch.export" or hasattr(model, "graph_signature"):
            return cast(torch.export.ExportedProgram, model).module()
        return cast(torch.nn.Module, model)

    def outputs(
        self, model: object, source: DataSource, samples: int | None, batches: int | None
    ) -> Iterator[Outputs]:
        from ...edit.drift import flatten_outputs
        from . import backend

        fn = self._callable(model)
        with torch.no_grad():
            # The audit's own batching: a program with a fixed batch gets exactly that many samples.
            for i, (args, kwargs) in enumerate(backend.batches_for(self.tm, source, samples)):
                if batches is not None and i >= batches:
                    return
                if self.example is None:
                    self.example = (args, kwargs)
                yield flatten_outputs(fn(*args, **kwargs))

    def serialize(self, model: object, notes: list[str]) -> bytes:
        """The file's bytes; an eager model is converted when the output format asks for it."""
        if self.tm.fmt == "torchscript":
            return save_torchscript(model)
        if self.tm.fmt == "torch.export":
            return save_export(cast(torch.export.ExportedProgram, model))
        model = cast(nn.Module, model)  # an eager model
        if self.writer == PICKLE:
            buf = io.BytesIO()
            torch.save(model, buf)
            return buf.getvalue()
        if self.writer == TS:
            return save_torchscript(self._to_script(model, notes))
        return save_export(self._to_export(model, notes))

    def _to_script(self, model: nn.Module, notes: list[str]) -> torch.jit.ScriptModule:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.jit.script(model)
        except Exception as e:
            first = " ".join(str(e).split())[:160]
            if self.example is None:
                raise
            args, kwargs = self.example
            if kwargs:
                raise
            notes.append(
                f"torch.jit.script failed ({first}); wrote a traced TorchScript (fixed control flow)"
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.jit.trace(model, tuple(args))

    def _to_export(self, model: nn.Module, notes: list[str]) -> torch.export.ExportedProgram:
        if self.example is None:
            raise RuntimeError("no example batch to export with")
        args, kwargs = self.example
        batch = torch.export.Dim.AUTO
        dyn_args = tuple({0: batch} if isinstance(a, torch.Tensor) and a.ndim else None for a in args)
        dyn_kwargs = {
            k: ({0: batch} if isinstance(v, torch.Tensor) and v.ndim else None) for k, v in kwargs.items()
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dyn: Any = dyn_args if not kwargs else {**dict(enumerate(dyn_args)), **dyn_kwargs}
                if kwargs:
                    raise ValueError("keyword inputs")
                return torch.export.export(model, tuple(args), dynamic_shapes=dyn)
            except Exception as e:
                notes.append(
                    f"export with a dynamic batch axis failed ({type(e).__name__}); exported with fixed shapes"
                )
                return torch.export.export(model, tuple(args), kwargs or None)

    def reload(self, path: Path) -> Runnable:
        """A fresh load from disk, the way a user would."""
        p = str(path)
        if self.tm.fmt == "torchscript" or (self.tm.eager is not None and self.writer == TS):
            m = torch.jit.load(p, map_location=self.device)
            m.eval()
            return m
        if self.tm.fmt == "torch.export" or self.writer == PT2:
            with open(p, "rb") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.export.load(io.BytesIO(f.read()))
        m = torch.load(p, map_location=self.device, weights_only=False)
        m.eval()
        return m

    def written_slopes(self, model: object) -> list[tuple[str, str, object]]:
        """(site, op, slope) in the reloaded file, for the report and tests."""
        if hasattr(model, "graph_signature"):
            return export_slopes(cast(torch.export.ExportedProgram, model))
        if isinstance(model, torch.jit.ScriptModule):
            return torchscript_slopes(model)
        out: list[tuple[str, str, object]] = []
        for name, mod in cast(nn.Module, model).named_modules():
            if isinstance(mod, (nn.LeakyReLU, ShiftedLeakyReLU)):
                out.append((name, type(mod).__name__, float(mod.negative_slope)))
            elif isinstance(mod, UnitPReLU):
                out.append((name, type(mod).__name__, [float(x) for x in mod.slope().detach().flatten()]))
            elif isinstance(mod, (nn.PReLU, AxisPReLU)):
                out.append((name, type(mod).__name__, [float(x) for x in mod.weight.detach().flatten()]))
        return out

    @property
    def bounds_slopes(self) -> bool:
        """Learnable slopes are written clamped to their bound (eager models, whatever the output format)."""
        return self.tm.eager is not None

    def _recycle_graph(
        self,
        plans: list[tuple[RecyclePlan, int, int, tuple[int, ...]]],
        slope_plans: list[SlopePlan],
        seed: int,
        source: DataSource,
        samples: int | None,
    ) -> tuple[SurgeryResult, dict[str, Recycled], dict[str, str]]:
        """Recycling in a copy of a torch.export program or a TorchScript module, then slopes on it."""
        from . import backend

        def batches() -> Iterator[Batch]:
            return backend.batches_for(self.tm, source, samples)

        if self.tm.fmt == "torch.export":
            assert self.tm.exported is not None  # a program keeps its ExportedProgram
            ep = clone_export(self.tm.exported)
            done, refused = recycle_export(ep, plans, seed, batches)
            used = _slopes_for(slope_plans, plans, done)
            return (rewrite_export(ep, used, "prelu") if used else SurgeryResult(ep)), done, refused
        assert self._script is not None
        ts = torch.jit.load(io.BytesIO(self._script), map_location=self.device)
        done, refused = recycle_script(ts, plans, seed, batches)
        used = _slopes_for(slope_plans, plans, done)
        res = rewrite_torchscript(ts, used, "prelu") if used else SurgeryResult(ts)
        res.model.eval()
        return res, done, refused

    def slope_parameters(self, model: object) -> list[str]:
        """The learnable slope tensors of an eager variant (``path.weight`` of each per-unit PReLU)."""
        if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
            return []
        return [
            f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (UnitPReLU, nn.PReLU, AxisPReLU))
        ]

    def frozen_parameters(self, model: object) -> list[str]:
        """Names of parameters with requires_grad=False in a reloaded model."""
        m = self._module(model)
        try:
            return [n for n, p in m.named_parameters() if not p.requires_grad]
        except Exception:
            return []

    def original(self) -> Runnable | None:
        tm = self.tm
        if tm.fmt == "torch.export":
            return tm.exported
        return tm.module if tm.eager is None else tm.eager

    def original_slopes(self) -> list[tuple[str, str, object]]:
        return self.written_slopes(self.original())

    @staticmethod
    def _module(model: object) -> nn.Module:
        """A reloaded model's module: a program's ``module()``, any other model itself."""
        if hasattr(model, "graph_signature"):
            return cast(torch.export.ExportedProgram, model).module()
        return cast(nn.Module, model)

    def trainable(self, model: object) -> bool:
        params = list(self._module(model).parameters())
        return bool(params) and all(p.requires_grad for p in params)


def _slopes_for(slope_plans: list[SlopePlan], plans: list[Any], done: dict[str, Recycled]) -> list[SlopePlan]:
    """The slope plans to apply on the recycled copy: those of recycled sites, and of sites not
    asked to be recycled at all (``--mode train``: deploy slopes where recycling was refused)."""
    asked = {p.name for p, *_ in plans}
    return [p for p in slope_plans if p.name in done or p.name not in asked]
