"""The gates of recurrent modules and ops, written out and observed as sites.

Eager ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` and their cells are audited from their own weights after
each call (:func:`actaudit.backends.torch.recurrent.gates_of`); a compiled graph's ``aten::lstm`` runs
on CPU as one oneDNN op per layer and direction, written out the same way. What cannot be written
out is listed in ``uncovered`` with the reason.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ... import unitaxis as ua
from ...kinds import Activation
from ...stats import Uncovered
from .fused import HiddenOps
from .graphsites import FUSED, GraphSite
from .idmap import TensorMap
from .ops import LINEAR
from .recurrent import Unsupported, gates_of, mkldnn_layer_gates
from .tags import tensors_of


class Host(Protocol):
    """What the gates need of the recorder that owns them (:class:`actaudit.backends.torch.sites.Recorder`)."""

    tags: TensorMap[ua.Tag]
    suspended: bool
    extra_uncovered: dict[str, Uncovered]
    hidden: HiddenOps

    def observe(
        self,
        base: str,
        module: str,
        op: str,
        act: Activation,
        weight: object,
        x: torch.Tensor,
        merge: bool = False,
    ) -> tuple[str, int] | None: ...


class RecurrentSites:
    """Recurrent gates for one :class:`~actaudit.backends.torch.sites.Recorder`."""

    def __init__(self, rec: Host, graph_sites: list[GraphSite] | None) -> None:
        self.rec = rec
        self._graph_sites = graph_sites
        self._ptr = self._calls = 0  # position among the graph's fused aten::lstm nodes
        self.done: set[str] = set()  # fused LSTMs whose gates were written out
        self.failed: dict[str, str] = {}  # fused LSTMs that could not be: why

    def begin_forward(self) -> None:
        self._ptr = self._calls = 0

    def fused_lstm_layer(self, args: tuple[object, ...], output: object) -> None:
        """One layer and direction of a compiled graph's aten::lstm, which oneDNN runs as one op."""
        entries = [g for g in self._graph_sites or [] if g.gate == FUSED and g.op == "lstm"]
        if self._ptr >= len(entries):
            return  # an LSTM the graph does not list: nothing to name it after
        entry = entries[self._ptr]
        path = entry.module or "lstm"
        try:
            gates, reverse, layers, dirs = mkldnn_layer_gates(args, output)
        except Unsupported as e:
            self.failed[path] = str(e)
            return
        layer = self._calls // dirs
        self._calls += 1
        if self._calls >= layers * dirs:
            self._ptr, self._calls = self._ptr + 1, 0
        self.done.add(path)
        label = f"l{layer}" + ("_reverse" if reverse else "")
        for g in gates:
            self.rec.tags[g.x] = ua.Tag(g.x.ndim - 1, LINEAR)
            self.rec.observe(
                f"{path}.{label}.{g.suffix}", path, f"aten::lstm.{g.suffix}", Activation(g.kind), None, g.x
            )

    def module_call(self, path: str, module: object, args: tuple[object, ...], output: object) -> None:
        """Audit the gates of one call of an eager recurrent module, from its own weights."""
        mtype = type(module).__name__
        self.rec.suspended = True
        try:
            for t in tensors_of(output):
                tag = ua.produced(LINEAR, t.ndim)
                if tag is not None:
                    self.rec.tags[t] = tag
            if path in self.rec.extra_uncovered:
                return
            try:
                with torch.no_grad():
                    gates = gates_of(module, args, output)
            except Unsupported as e:
                self.rec.extra_uncovered[path] = Uncovered(
                    path or mtype, f"nn.{mtype}", f"its gates were not audited: {e}"
                )
                return
            self.rec.hidden.audited.add(path)
            for g in gates:
                if g.x.ndim >= 2:
                    self.rec.tags[g.x] = ua.Tag(g.x.ndim - 1, LINEAR)
                base = f"{path}.{g.suffix}" if path else g.suffix
                self.rec.observe(
                    base, path, f"nn.{mtype}.{g.suffix.rsplit('.', 1)[-1]}", Activation(g.kind), None, g.x
                )
        finally:
            self.rec.suspended = False

    def uncovered(self, stepped_done: set[str]) -> list[Uncovered]:
        """The fused recurrent ops of a compiled graph whose gates were not audited, with the reason.

        ``stepped_done``: recurrent modules whose per-step gate ops were named gate by gate.
        """
        out: dict[str, Uncovered] = {}
        for g in self._graph_sites or []:
            if g.gate == FUSED and g.op == "lstm" and (g.module or "lstm") in self.done:
                continue
            if g.gate == FUSED and g.op in ("gru", "rnn_tanh", "rnn_relu") and g.module in stepped_done:
                continue
            if g.gate == FUSED and (g.module or g.op) in self.failed:
                name = g.module or g.op
                reason = f"its gates were not audited: {self.failed[name]}"
                out.setdefault(name, Uncovered(name, f"aten::{g.op}", reason))
                continue
            if g.gate == FUSED:
                name = g.module or g.op
                reason = (
                    f"its gates run inside aten::{g.op}, which the compiled graph does not list one by one"
                    + (
                        " (on CPU one fused oneDNN op that no capture sees)"
                        if g.op == "lstm"
                        else "; they are reported by op (sigmoid#k, tanh#k), not by gate"
                    )
                    + "; audit the eager module (state_dict + --arch) for one site per gate"
                )
                out.setdefault(name, Uncovered(name, f"aten::{g.op}", reason))
        return list(out.values())
