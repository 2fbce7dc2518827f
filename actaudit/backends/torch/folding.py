"""PyTorch's side of the bias fold (:mod:`actaudit.edit.fold`): reading weights, writing the new bias."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ...edit import fold


def array_of(t: torch.Tensor) -> np.ndarray:
    """A float64 copy on the host (any float dtype, bfloat16 included)."""
    return t.detach().to("cpu", torch.float64).numpy()


def tensor_writer(t: torch.Tensor) -> Callable[[np.ndarray], None]:
    """Overwrite ``t`` in place (a parameter of a compiled graph or a program's state_dict)."""

    def write(new: np.ndarray) -> None:
        with torch.no_grad():
            t.copy_(torch.as_tensor(new).reshape(t.shape))

    return write


def module_consumer(mod: nn.Module, kind: str, label: str) -> fold.Consumer:
    """An eager Conv/Linear as the fold's consumer; it gains a bias if it has none."""
    weight, b = getattr(mod, "weight", None), getattr(mod, "bias", None)
    assert isinstance(weight, torch.Tensor)
    bias = b if isinstance(b, torch.Tensor) else None

    def write(new: np.ndarray) -> None:
        value = torch.as_tensor(new, dtype=weight.dtype, device=weight.device)
        if bias is None:
            mod.bias = nn.Parameter(value)
        else:
            with torch.no_grad():
                bias.copy_(value)

    pad = getattr(mod, "padding", 0)
    padded = kind == "conv" and (
        pad == "same" or (not isinstance(pad, str) and any(int(x) for x in np.atleast_1d(pad)))
    )
    groups = int(getattr(mod, "groups", 1))
    return fold.Consumer(
        label,
        kind,
        array_of(weight),
        None if bias is None else array_of(bias),
        write,
        groups,
        padded,
        write_weight=tensor_writer(weight),
    )
