"""Which activation sites produce a model output: their values reach what ``forward`` returns unchanged.

A bounded activation there is a head (a probability, a score) and is expected to sit near
its bounds. Provenance travels with the tensors through ops that only move values
(views, reshapes, concatenation, splits); any arithmetic ends it. Weak references only:
nothing here keeps an activation alive.
"""

from __future__ import annotations

import torch

from .idmap import TensorMap
from .ops import RESHAPES

SiteKey = tuple[str, int]

_PASS_THROUGH = RESHAPES | frozenset(
    {
        "cat",
        "concat",
        "concatenate",
        "stack",
        "permute",
        "transpose",
        "t",
        "contiguous",
        "clone",
        "detach",
        "alias",
        "expand",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "select",
        "slice",
        "narrow",
    }
)


def _tensors(x: object) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


class OutputOrigins:
    """Tensor → the sites whose values it carries, for activation outputs and their pass-through copies."""

    def __init__(self) -> None:
        self._origin: TensorMap[set[SiteKey]] = TensorMap()

    def after(self, name: str, args: tuple[object, ...], out: object, site: SiteKey | None) -> None:
        """Record ``out`` of one op: an activation's own output, or a pass-through of tracked tensors."""
        if site is not None:
            keys = {site}
        elif name in _PASS_THROUGH:
            keys = set()
            for t in _tensors(args):
                keys |= self._origin.get(t, set())
            if not keys:
                return
        else:
            return
        for t in _tensors(out):
            self._origin[t] = keys

    def sites_of(self, outputs: object) -> set[SiteKey]:
        found: set[SiteKey] = set()
        for t in _tensors(outputs):
            found |= self._origin.get(t, set())
        return found
