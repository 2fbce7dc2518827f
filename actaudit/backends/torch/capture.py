"""Watch every activation call of a PyTorch model and reduce its pre-activation per unit.

Two interception levels share one :class:`Recorder`:

* eager modules run under a ``TorchFunctionMode``: it sees ``nn`` modules, functional
  calls, ``Tensor`` methods and in-place variants *before* they run (so in-place ReLU
  is measured on its input), and module pre/post hooks keep a stack of module paths
  so that each call is attributed to a call site (a module reused twice gives
  ``block.relu#0`` and ``block.relu#1``);
* TorchScript and ``torch.export`` programs run under a ``TorchDispatchMode``: it sees
  the ATen ops inside the compiled graph; the graph's own node list supplies the
  module path of each call, matched in execution order.

Each call is reduced at once to a few per-unit vectors accumulated on the model's
device; no activation tensor outlives its batch.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ... import unitaxis as ua
from ...errors import CalibrationError, InputError, ModelRunError
from ...kinds import ACTIVATION_MODULES
from ...naming import derived_base
from ...stats import AxisOverride, Capture
from . import ingraph_fx
from .fused import hidden_reason, recurrent_family
from .graphsites import GraphSite
from .ingraph import InGraph
from .kernel import DispatchCapture
from .ops import CANDIDATES, activation_of, first_tensor, op_name
from .recurrent import RECURRENT_TYPES
from .sites import Recorder


class FunctionCapture(TorchFunctionMode):
    """Eager capture: activation calls attributed to the innermost running module."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: Iterable[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> object:
        kwargs = kwargs or {}
        if self.rec.suspended:
            return func(*args, **kwargs)
        name = op_name(func)
        observed = None
        pending = None
        if hidden_reason(name):
            self.rec.hidden_activation(name)
        if name in CANDIDATES:
            found = activation_of(name, args, kwargs)
            x = first_tensor(args, kwargs)
            if found is not None and x is not None:
                act, weight = found
                path, mtype = self.rec.module_stack[-1] if self.rec.module_stack else ("", "")
                derived = None
                if path and mtype in ACTIVATION_MODULES:
                    base, op = path, f"nn.{mtype}"
                else:
                    label = name.rstrip("_")
                    base, op = (f"{path}/{label}" if path else label), name
                    derived = derived_base(self.rec.producers.get(x, ""), path, label)
                pending = self.rec.observe(base, path, op, act, weight, x, derived=derived)
                observed = self.rec.last_key
        elif name == "glu":
            pending, observed, x = self.rec.glu_call(args, kwargs, graph=False)
        out = func(*args, **kwargs)
        self.rec.tag(name, args, out, kwargs)
        if pending is not None and isinstance(out, torch.Tensor):
            self.rec.mark_output(pending, x, out)
        self.rec.origins.after(name, args, out, observed)
        return out


# -- the run loop --------------------------------------------------------------------
def run_capture(
    call: Callable[..., Any],
    batches: Iterable[tuple[list[Any], dict[str, Any]]],
    *,
    eager_model: torch.nn.Module | None,
    graph_sites: list[GraphSite] | None,
    stuck_fraction: float,
    axis_overrides: list[AxisOverride],
    progress: Callable[[int], None] | None = None,
) -> Capture:
    rec = Recorder(stuck_fraction, axis_overrides, graph_sites)
    if graph_sites is not None:
        rec.names.param_owner = _param_owners(call)
    hooks = []
    if eager_model is not None:
        for path, mod in eager_model.named_modules():
            mtype = type(mod).__name__
            hooks.append(mod.register_forward_pre_hook(_push(rec, path, mtype)))
            producer = (
                "" if mtype in ACTIVATION_MODULES else path
            )  # an activation module's output is a site's
            hooks.append(mod.register_forward_hook(_pop(rec, producer), always_call=True))
            written_out = mtype in RECURRENT_TYPES and isinstance(
                mod, (torch.nn.RNNBase, torch.nn.RNNCellBase)
            )
            if written_out:
                hooks.append(mod.register_forward_hook(_recurrent(rec, path)))
            elif recurrent_family(mod, written_out):
                hooks += rec.watch_silent(mod, path, mtype)
    samples = n_batches = 0
    restore_sigint = _watch_sigint(rec)
    compiled: InGraph | None = None
    try:
        for i, (args, kwargs) in enumerate(batches):
            if i == 1 and eager_model is None and graph_sites is not None:
                # planned from what the first batch settled, once a second batch comes (a one-batch run skips it)
                compiled = ingraph_fx.plan(getattr(call, "fn", call), rec)
            n = _samples_of(args, kwargs)
            if compiled is None or not compiled.batch(call, args, kwargs, n, rec):
                _dispatch_batch(call, rec, args, kwargs, i, samples, n, eager_model is not None)
            samples += n
            n_batches += 1
            if progress is not None:
                progress(n)
    finally:
        for h in hooks:
            h.remove()
        restore_sigint()
        if compiled is not None:
            compiled.close()
    if n_batches == 0:
        raise CalibrationError("the calibration data yielded no batches")
    sites, uncovered = rec.results()
    cap = Capture(sites=sites, samples=samples, batches=n_batches, uncovered=uncovered)
    guessed = ua.guessed_warning([r.info.name for r in sites if r.info.unit_axis_source == ua.GUESSED])
    if guessed:
        cap.warnings.append(guessed)
    if graph_sites is not None and rec.names.unmatched:
        cap.warnings.append(
            f"{rec.names.unmatched} activation op call(s) ran inside composite ops or control flow that the "
            "graph does not list one by one; they are named by op (e.g. sigmoid#3) instead of by module"
        )
    return cap


def _dispatch_batch(
    call: Callable[..., Any],
    rec: Recorder,
    args: list[Any],
    kwargs: dict[str, Any],
    i: int,
    samples: int,
    n: int,
    eager: bool,
) -> None:
    """One batch under a capture mode: module hooks and functional calls, or a graph's ATen ops."""
    rec.begin_forward(n)
    mode: FunctionCapture | DispatchCapture = FunctionCapture(rec) if eager else DispatchCapture(rec)
    try:
        with torch.no_grad(), mode:
            result = call(*args, **kwargs)
        if i == 0:
            rec.output_sites = rec.origins.sites_of(result)
        del result
        rec.end_forward()
    except (InputError, KeyboardInterrupt):
        raise
    except Exception as e:
        if rec.option_error is not None:
            raise rec.option_error from None
        if rec.interrupted or "KeyboardInterrupt" in str(e):
            # Ctrl-C inside a TorchScript or dispatch-mode call arrives wrapped in a RuntimeError.
            raise KeyboardInterrupt from None
        if "Traceback of TorchScript" in str(e):
            e = _plain_error(call, args, kwargs) or e
        err = _run_error(e, i, samples, n, rec.last_site, _shapes(args, kwargs))
        if rec.last_site is None and err.hint is None:
            err.hint = _data_hint(err.message, args, kwargs, call)
        raise err from None


def _param_owners(module: Any) -> dict[int, str]:
    """Storage address of each parameter and buffer → its full name (``encoder.0.conv.weight``)."""
    owners: dict[int, str] = {}
    try:
        named = [*module.named_parameters(), *module.named_buffers()]
    except Exception:
        return owners
    for name, t in named:
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            owners.setdefault(t.data_ptr(), name)
    return owners


def _watch_sigint(rec: Recorder) -> Callable[[], None]:
    """Note Ctrl-C as it arrives: TorchScript rethrows it as a RuntimeError without a message."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        rec.interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore


def _push(rec: Recorder, path: str, mtype: str) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: tuple[object, ...]) -> None:
        rec.module_stack.append((path, mtype))

    return hook


def _recurrent(rec: Recorder, path: str) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: tuple[object, ...], out: object) -> None:
        rec.recurrent_call(path, module, tuple(args), out)

    return hook


def _pop(rec: Recorder, path: str) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: tuple[object, ...], out: object) -> None:
        if rec.module_stack:
            rec.module_stack.pop()
        rec.module_output(path, out)

    return hook


def _samples_of(args: list[Any], kwargs: dict[str, Any]) -> int:
    for x in [*args, *kwargs.values()]:
        if isinstance(x, torch.Tensor) and x.ndim > 0:
            return int(x.shape[0])
    return 1


def _plain_error(call: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Exception | None:
    """The same batch without the capture mode: TorchScript then keeps its error message."""
    try:
        with torch.no_grad():
            call(*args, **kwargs)
    except Exception as e:
        return e
    return None


def _shapes(args: list[Any], kwargs: dict[str, Any]) -> str:
    parts = [str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor)]
    parts += [f"{k}={tuple(v.shape)}" for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    return ", ".join(parts)


def _data_hint(message: str, args: list[Any], kwargs: dict[str, Any], call: object = None) -> str | None:
    """A layout, rank or dtype fix for an error raised before the first activation (the data did not fit)."""
    from ...hints import conv_input_hint, conv_rank, dtype_hint, move_axis_hint

    tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
    if not tensors:
        return None
    shape = tuple(int(d) for d in tensors[0].shape)
    conv = re.search(r"expected input\[[\d, ]+\] to have (\d+) channels", message)
    guard = re.search(r"size\(\)\[(\d+)\] == (\d+)", message)
    fix = None
    if conv:
        fix = move_axis_hint(shape, 1, int(conv.group(1)))
    elif guard:
        fix = move_axis_hint(shape, int(guard.group(1)), int(guard.group(2)))
        takes = _program_rank(call)
        if fix is None and takes is not None:
            # A torch.export guard names one dimension; the program's input says which rank it takes.
            fix = conv_input_hint(shape, takes, _first_weight(call, takes))
    elif (rank := conv_rank(message)) is not None:
        fix = conv_input_hint(shape, rank[0], rank[1] or _first_weight(call, rank[0]))
    return fix or dtype_hint(message, [str(t.dtype).removeprefix("torch.") for t in tensors])


def _program_rank(call: object) -> int | None:
    """The rank of a torch.export program's first input (its placeholder's example value)."""
    fn = getattr(call, "fn", call)  # the capture may call the program through a recorder
    graph = getattr(fn, "graph", None)
    try:
        for node in graph.nodes if graph is not None else ():
            val = node.meta.get("val") if node.op == "placeholder" else None
            if isinstance(val, torch.Tensor):
                return int(val.ndim)
    except Exception:
        return None
    return None


def _first_weight(call: object, rank: int) -> list[int] | None:
    """The shape of the model's first parameter of a conv weight's rank: the conv the data reached first."""
    named = getattr(call, "named_parameters", None)
    if named is None:
        return None
    try:
        return next((list(p.shape) for _, p in named() if p.dim() == rank), None)
    except Exception:
        return None


def _run_error(
    e: Exception, batch: int, start: int, n: int, site: str | None, shapes: str = ""
) -> ModelRunError:
    text = str(e)
    if "Traceback of TorchScript" in text:
        # Keep the interpreter's final "Error: message" line, not its serialized-code trace.
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
        if text.endswith(":"):
            text = "the TorchScript interpreter gave no message (often a shape or dtype mismatch)"
    msg = " ".join(text.split()) or type(e).__name__
    if len(msg) > 300:
        msg = msg[:300] + " …"
    where = f"batch {batch} (samples {start}–{start + n - 1}" + (f"; inputs {shapes})" if shapes else ")")
    after = f", after site {site}" if site else ", before any activation"
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg.lower():
        return ModelRunError(f"ran out of memory on {where}{after}", hint="lower --batch-size")
    return ModelRunError(f"the model raised {type(e).__name__} on {where}{after}: {msg}")
