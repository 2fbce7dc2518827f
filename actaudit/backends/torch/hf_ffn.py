"""The feed-forward neurons of a ``transformers`` model, and the counts only a sequence view gives.

:func:`ffn_layout` finds each transformer layer's FFN activation module (``activation_fn``,
``act_fn``, ``intermediate_act_fn``, …) and whether its MLP is gated (LLaMA-style
``down(act(gate(x)) * up(x))``: the activation of the gate is the neuron's, one unit per
intermediate neuron). :func:`capture_ffn` captures as every torch model does and, in the same
pass, counts per layer the neurons silent on a whole sequence (no token fired them): the
per-sequence view of sparsity that per-token rates cannot give. Batches of text hold
sequences of one length (no padding), so ``[batch, tokens]`` of the input ids say where each
sequence's tokens are.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from ...data import DataSource
from ...kinds import Activation
from ...stats import Capture, FfnLayer
from ..base import CaptureOptions
from .backend import TorchModel, capture

_LAYER = re.compile(r"(?:^|\.)(?:layers?|h|blocks?|block)\.(\d+)\.")
_KINDS = {
    "ReLU": "relu",
    "SiLU": "silu",
    "SiLUActivation": "silu",
    "GELU": "gelu",
    "GELUActivation": "gelu",
    "GELUTanh": "gelu",
    "PytorchGELUTanh": "gelu",
    "NewGELUActivation": "gelu",  # GPT-2's gelu_new: tanh form spelled out, one GELU site (.swish)
    "FastGELUActivation": "gelu",
    "AccurateGELUActivation": "gelu",
}
# GELU's tanh approximation: its flat tail starts at −3.009, not the erf form's −3.022 (kinds.py).
_TANH_GELU = frozenset(
    ["GELUTanh", "PytorchGELUTanh", "NewGELUActivation", "FastGELUActivation", "AccurateGELUActivation"]
)
_GATES = ("gate_proj", "w1", "gate_up_proj", "wi_0")
_NOT_FFN = ("attn", "attention")


def ffn_layout(model: torch.nn.Module) -> dict[str, FfnLayer]:
    """Module path of each layer's FFN activation → its layer index, kind and whether the MLP is gated."""
    out: dict[str, FfnLayer] = {}
    for name, mod in model.named_modules():
        kind = _KINDS.get(type(mod).__name__)
        found = _LAYER.search(name)
        if kind is None or found is None or any(w in name.lower() for w in _NOT_FFN):
            continue
        parent = model.get_submodule(name.rpartition(".")[0])
        gated = any(isinstance(getattr(parent, g, None), torch.nn.Module) for g in _GATES)
        out[name] = {"layer": int(found.group(1)), "kind": kind, "gated": gated}
    return out


class SequenceCounter:
    """Per FFN activation: sequences seen, and (sequence, neuron) pairs where no token fired."""

    def __init__(
        self, layout: dict[str, FfnLayer], stuck_fraction: float, tanh: frozenset[str] = frozenset()
    ) -> None:
        self.layout = layout
        self.low = {
            n: Activation(v["kind"], {"tanh": 1.0} if n in tanh else {}).thresholds(stuck_fraction).low
            for n, v in layout.items()
        }
        self.shape: tuple[int, int] | None = None
        self.sequences = dict.fromkeys(layout, 0)
        self.silent = dict.fromkeys(layout, 0)

    def model_hook(
        self, module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.shape = (
            (int(ids.shape[0]), int(ids.shape[1]))
            if isinstance(ids, torch.Tensor) and ids.ndim == 2
            else None
        )

    def act_hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[object, ...]) -> None:
            x = args[0] if args else None
            if self.shape is None or not isinstance(x, torch.Tensor) or x.ndim < 2:
                return
            b, t = self.shape
            f = int(x.shape[-1])
            if x.numel() != b * t * f:
                return
            with torch._C.DisableTorchFunction():  # the capture's mode must not see these ops
                fired = (x.reshape(b, t, f) > self.low[name]).any(1)
                self.silent[name] += int((~fired).sum())
            self.sequences[name] += b

        return hook

    def result(self) -> dict[str, FfnLayer]:
        return {
            n: {**v, "sequences": self.sequences[n], "silent_sequence_neurons": self.silent[n]}
            for n, v in self.layout.items()
        }


def capture_ffn(tm: TorchModel, source: DataSource, opts: CaptureOptions) -> Capture:
    """The torch capture of a ``transformers`` model, with the per-sequence FFN counts of the same pass."""
    model = tm.eager
    layout = ffn_layout(model) if model is not None else {}
    if not layout or model is None:
        return capture(tm, source, **opts.kwargs())
    tanh = frozenset(n for n in layout if type(model.get_submodule(n)).__name__ in _TANH_GELU)
    counter = SequenceCounter(layout, opts.stuck_fraction, tanh)
    hooks = [model.register_forward_pre_hook(counter.model_hook, with_kwargs=True)]
    hooks += [model.get_submodule(n).register_forward_pre_hook(counter.act_hook(n)) for n in layout]
    try:
        cap = capture(tm, source, **opts.kwargs())
    finally:
        for h in hooks:
            h.remove()
    cap.extras["ffn"] = counter.result()
    return cap
