"""Activations that torch spells as several ops: SiLU as ``x * sigmoid(x)`` (or ``x * sigmoid(β·x)``),
softsign as ``x / (1 + |x|)``. Weak references only: nothing here keeps a tensor alive."""

from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

SiteKey = tuple[str, int]


class SpelledOut:
    """Recognises the multi-op spellings of SiLU and softsign as the ops run."""

    def __init__(self) -> None:
        self.sigmoid_out: WeakIdKeyDictionary = WeakIdKeyDictionary()  # held sigmoid output -> (key, input)
        self.scaled_of: WeakIdKeyDictionary = WeakIdKeyDictionary()  # β·x -> (x, β)
        # softsign has no ATen op: it runs as x / (1 + |x|); these map |x| and 1 + |x| back to x.
        self._abs_of: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._one_plus_abs_of: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def end_forward(self) -> None:
        self.sigmoid_out = WeakIdKeyDictionary()

    def sigmoid_output(self, key: SiteKey, x: object, out: torch.Tensor) -> None:
        """A held sigmoid site's output: a Mul of it by its own input makes the site a SiLU."""
        self.sigmoid_out[out] = (key, x)

    def mul(self, args: tuple[object, ...], out: torch.Tensor) -> tuple[SiteKey, float] | None:
        """``x * sigmoid(x)`` or ``x * sigmoid(β·x)`` (β a positive constant): (the sigmoid site, β)."""
        a, b = args[0], args[1]
        for t, c in ((a, b), (b, a)):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                beta = _scalar_value(c)
                if beta is not None:
                    self.scaled_of[out] = (t, beta)
        if not self.sigmoid_out:
            return None
        for g, other in ((a, b), (b, a)):
            if not isinstance(g, torch.Tensor) or g not in self.sigmoid_out:
                continue
            key, z = self.sigmoid_out[g]
            if other is z:
                return key, 1.0
            if isinstance(other, torch.Tensor) and z in self.scaled_of and self.scaled_of[z][0] is other:
                beta = float(self.scaled_of[z][1])
                if beta > 0:
                    return key, beta
        return None

    def track_softsign(self, name: str, args: tuple[object, ...], out: object) -> None:
        if not isinstance(out, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
            return
        if name == "abs" and args[0].is_floating_point():
            self._abs_of[out] = args[0]
        elif name == "add" and args[0] in self._abs_of and len(args) > 1 and _is_one(args[1]):
            self._one_plus_abs_of[out] = self._abs_of[args[0]]

    def is_softsign(self, args: tuple[object, ...]) -> bool:
        return (
            len(args) == 2
            and isinstance(args[1], torch.Tensor)
            and args[1] in self._one_plus_abs_of
            and self._one_plus_abs_of[args[1]] is args[0]
        )


def _scalar_value(c: object) -> float | None:
    """A Python number or a one-element tensor that is not a graph activation (a constant)."""
    if isinstance(c, bool):
        return None
    if isinstance(c, (int, float)):
        return float(c)
    if isinstance(c, torch.Tensor) and c.numel() == 1 and c.ndim == 0:
        return float(c.item())
    return None


def _is_one(x: object) -> bool:
    if isinstance(x, torch.Tensor):
        return x.numel() == 1 and float(x.item()) == 1.0
    return isinstance(x, (int, float)) and float(x) == 1.0
