"""Names of the activation calls of a compiled graph (TorchScript, torch.export), after its modules.

The ops seen at dispatch are aligned, in execution order, with the graph's own list of
activation nodes (:mod:`actaudit.backends.torch.graphsites`); the module whose weights produced
a tensor (by storage) travels with it, to pick among the arms of a branch and to name the gates
of recurrent ops that run as visible ops per step.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import torch

from .graphsites import FUSED, GraphSite, canon
from .idmap import TensorMap
from .recurrent import GRU_GATES
from .tags import tensors_of

# Compiled recurrent ops that run as visible ops per step: their gates, in the order each step runs them.
_STEPPED = {"gru": GRU_GATES, "rnn_tanh": (("hidden", "tanh"),), "rnn_relu": (("hidden", "relu"),)}


class GraphNames:
    """Greedy alignment of executed activation ops with a compiled graph's site list."""

    def __init__(self, graph_sites: list[GraphSite] | None) -> None:
        self.graph_sites = graph_sites
        self.param_owner: dict[int, str] = {}  # parameter storage -> its full name
        self.owners: TensorMap[str] = TensorMap()  # tensor -> the parameter that produced it
        self.unmatched = 0  # executed candidate ops the graph does not list
        self._ptr = 0
        self._steps: dict[str, int] = defaultdict(int)  # gate ops seen per recurrent layer, this forward
        self.gru_done: set[str] = set()  # recurrent modules whose gates were named per step
        # The site the last graph_base call picked, named after its input's producer (or None).
        self.last_derived: str | None = None

    def begin_forward(self) -> None:
        self._ptr = 0
        self._steps.clear()

    def own(self, args: tuple[Any, ...], outs: list[torch.Tensor]) -> None:
        # An op's own weights name it; otherwise its input's owner carries through.
        tensors = tensors_of(list(args))
        owner = next(
            (self.param_owner[a.data_ptr()] for a in tensors if a.data_ptr() in self.param_owner), None
        )
        if owner is None:
            owner = next((self.owners[a] for a in tensors if a in self.owners), None)
        if owner is not None:
            for t in outs:
                self.owners[t] = owner

    def graph_base(self, name: str, x: Any = None) -> tuple[str, str, str]:
        """(base name, module path, op label) for the next executed candidate op of a graph.

        Greedy alignment in graph order; ops the graph does not list (inside composite ops)
        keep a generic name and do not move the pointer. Among the sites a branch makes
        possible, the one nearest to the module whose weights produced ``x`` wins: two arms
        of an ``If`` with the same ops (silero-vad's ``_model`` and ``_model_8k``) are told
        apart by what ran, not by which comes first in the graph.
        """
        gs = self.graph_sites or []
        c = canon(name)
        self.last_derived = None
        gru = self._stepped_gate(c, x)
        if gru is not None:
            return gru
        j = self._ptr
        found: list[int] = []
        while j < len(gs):
            if canon(gs[j].op) == c and gs[j].gate != FUSED:
                found.append(j)
                if not gs[j].optional:
                    break
            elif not gs[j].optional:
                break
            j += 1  # a branch that may not have run
        if found:
            owner = self.owners.get(x) if isinstance(x, torch.Tensor) else None
            pick = found[0]
            if owner is not None and len(found) > 1:
                pick = max(found, key=lambda i: (_shared_prefix(gs[i].module, owner), -i))
            self._ptr = pick + 1
            g = gs[pick]
            self.last_derived = g.derived_name
            return g.base_name, g.module, f"aten::{g.op}"
        self.unmatched += 1
        return c, "", f"aten::{name}"

    def _stepped_gate(self, c: str, x: Any) -> tuple[str, str, str] | None:
        """A gate of a compiled aten::gru, which runs as visible ops: named by the GRU weights that
        produced its input (``gru.weight_hh_l1_reverse`` → layer 1, reverse) and its place in the
        cycle reset, update, new of each step."""
        if c not in ("sigmoid", "tanh", "relu") or not isinstance(x, torch.Tensor) or x not in self.owners:
            return None
        owner = str(self.owners[x])
        module, _, param = owner.rpartition(".")
        m = re.match(r"(?:weight|bias)_(?:ih|hh)_(l\d+(?:_reverse)?)$", param)
        fused = {g.module: g.op for g in self.graph_sites or [] if g.gate == FUSED and g.op in _STEPPED}
        if m is None or module not in fused:
            return None
        label = f"{module}.{m.group(1)}"
        k = self._steps[label]
        cycle = _STEPPED[fused[module]]
        gate, kind = cycle[k % len(cycle)]
        if kind != c:
            return None
        self._steps[label] = k + 1
        self.gru_done.add(module)
        return f"{label}.{gate}", module, f"aten::{fused[module]}.{gate}"


def _shared_prefix(a: str, b: str) -> int:
    """How many leading dotted components two module paths share."""
    n = 0
    for p, q in zip(a.split("."), b.split("."), strict=False):
        if p != q:
            break
        n += 1
    return n
