"""Gate pre-activations of ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` and their cells, written out.

On CPU the recurrent modules run as one fused op (``aten::mkldnn_rnn_layer`` for LSTM,
``_VF.gru`` / ``_VF.lstm_cell``), so their sigmoid and tanh gates never reach an op-level
capture. Here each gate's pre-activation is recomputed from the module's own weights, step
by step, and the recomputed hidden output is checked against the module's: a mismatch
means the written-out cell is not what ran, and the gates are listed uncovered instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch

RECURRENT_TYPES = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")
LSTM_GATES = (
    ("input_gate", "sigmoid"),
    ("forget_gate", "sigmoid"),
    ("cell_gate", "tanh"),
    ("output_gate", "sigmoid"),
    ("cell_tanh", "tanh"),
)
GRU_GATES = (("reset_gate", "sigmoid"), ("update_gate", "sigmoid"), ("new_gate", "tanh"))
_TOL = 1e-4


class Unsupported(Exception):
    """The module is configured in a way the written-out cell does not reproduce."""


@dataclass
class Gate:
    suffix: str  # e.g. "l0.input_gate", "l1_reverse.new_gate", or "input_gate" for a cell
    kind: str  # sigmoid or tanh
    x: torch.Tensor  # pre-activation, features last; time steps stacked along axis 0


def gates_of(module: object, args: tuple[object, ...], output: object) -> list[Gate]:
    """Every gate of one call of ``module``; raises :class:`Unsupported` when not reproducible."""
    kind = type(module).__name__
    if kind in ("LSTMCell", "GRUCell", "RNNCell"):  # told by name: these torch classes or look-alikes
        return _cell(cast(torch.nn.RNNCellBase, module), kind, args, output)
    if kind in ("LSTM", "GRU", "RNN"):
        return _sequence(cast(torch.nn.RNNBase, module), kind, args, output)
    raise Unsupported(f"{kind} is not a recurrent module actaudit writes out")


def _lstm_step(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w: list[torch.Tensor | None]
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = x @ w[0].T + h @ w[1].T  # type: ignore[union-attr]
    if w[2] is not None and w[3] is not None:
        g = g + w[2] + w[3]
    i, f, cg, o = g.chunk(4, -1)
    c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cg)
    h2 = torch.sigmoid(o) * torch.tanh(c2)
    return [i, f, cg, o, c2], h2, c2


def _gru_step(
    x: torch.Tensor, h: torch.Tensor, w: list[torch.Tensor | None]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    gi = x @ w[0].T  # type: ignore[union-attr]
    gh = h @ w[1].T  # type: ignore[union-attr]
    if w[2] is not None and w[3] is not None:
        gi, gh = gi + w[2], gh + w[3]
    ir, iz, inn = gi.chunk(3, -1)
    hr, hz, hn = gh.chunk(3, -1)
    r, z = ir + hr, iz + hz
    n = inn + torch.sigmoid(r) * hn
    zs = torch.sigmoid(z)
    h2 = (1 - zs) * torch.tanh(n) + zs * h
    return [r, z, n], h2


def _rnn_step(
    x: torch.Tensor, h: torch.Tensor, w: list[torch.Tensor | None], relu: bool
) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = x @ w[0].T + h @ w[1].T  # type: ignore[union-attr]
    if w[2] is not None and w[3] is not None:
        g = g + w[2] + w[3]
    return [g], (torch.relu(g) if relu else torch.tanh(g))


def _rnn_gates(module: torch.nn.Module) -> tuple[tuple[str, str], ...]:
    return (("hidden", "relu" if getattr(module, "nonlinearity", "tanh") == "relu" else "tanh"),)


def _weights(module: torch.nn.Module, sfx: str) -> list[torch.Tensor | None]:
    get = getattr
    bias = bool(getattr(module, "bias", True))
    return [
        get(module, f"weight_ih{sfx}"),
        get(module, f"weight_hh{sfx}"),
        get(module, f"bias_ih{sfx}") if bias else None,
        get(module, f"bias_hh{sfx}") if bias else None,
    ]


def _check(got: torch.Tensor, want: object, what: str) -> None:
    if not isinstance(want, torch.Tensor) or want.shape != got.shape:
        raise Unsupported(f"the written-out {what} has shape {tuple(got.shape)}, the module returned another")
    diff = float((got - want).abs().max()) if got.numel() else 0.0
    scale = 1.0 + float(want.abs().max()) if want.numel() else 1.0
    if not diff <= _TOL * scale:
        raise Unsupported(f"the written-out {what} differs from the module's by {diff:.3g}")


def _cell(module: torch.nn.RNNCellBase, kind: str, args: tuple[object, ...], output: object) -> list[Gate]:
    x = args[0]
    if not isinstance(x, torch.Tensor):
        raise Unsupported("its input is not a tensor")
    unbatched = x.ndim == 1
    xb = x.unsqueeze(0) if unbatched else x
    hidden = int(module.hidden_size)
    state = args[1] if len(args) > 1 else None
    zeros = xb.new_zeros(xb.shape[0], hidden)
    w = _weights(module, "")
    if kind == "LSTMCell":
        if state is None:
            h, c = zeros, zeros
        else:
            h, c = state  # type: ignore[misc]
            h, c = (h.unsqueeze(0), c.unsqueeze(0)) if unbatched else (h, c)
        pre, h2, _ = _lstm_step(xb, h, c, w)
        want = output[0] if isinstance(output, tuple) else output
        _check(h2.squeeze(0) if unbatched else h2, want, "hidden state")
        return [Gate(name, k, p) for (name, k), p in zip(LSTM_GATES, pre, strict=True)]
    h = zeros if state is None else state  # type: ignore[assignment]
    if unbatched and isinstance(h, torch.Tensor) and h.ndim == 1:
        h = h.unsqueeze(0)
    if kind == "RNNCell":
        pre, h2 = _rnn_step(xb, h, w, _rnn_gates(module)[0][1] == "relu")
        names = _rnn_gates(module)
    else:
        pre, h2 = _gru_step(xb, h, w)
        names = GRU_GATES
    _check(h2.squeeze(0) if unbatched else h2, output, "hidden state")
    return [Gate(name, k, p) for (name, k), p in zip(names, pre, strict=True)]


def _sequence(module: torch.nn.RNNBase, kind: str, args: tuple[object, ...], output: object) -> list[Gate]:
    x = args[0]
    if not isinstance(x, torch.Tensor):
        raise Unsupported("its input is not a tensor (a PackedSequence is not written out)")
    if int(getattr(module, "proj_size", 0) or 0):
        raise Unsupported("an LSTM with proj_size is not written out")
    layers = int(module.num_layers)
    dirs = 2 if module.bidirectional else 1
    hidden = int(module.hidden_size)
    batch_first = bool(module.batch_first)
    unbatched = x.ndim == 2
    seq = x.unsqueeze(1) if unbatched else (x.transpose(0, 1) if batch_first else x)  # [T, N, F]
    n = seq.shape[1]
    state = args[1] if len(args) > 1 else None
    if kind == "LSTM":
        h0, c0 = state if state is not None else (None, None)  # type: ignore[misc]
    else:
        h0, c0 = state, None
    if isinstance(h0, torch.Tensor) and unbatched:
        h0 = h0.unsqueeze(1)
    if isinstance(c0, torch.Tensor) and unbatched:
        c0 = c0.unsqueeze(1)
    names = LSTM_GATES if kind == "LSTM" else GRU_GATES if kind == "GRU" else _rnn_gates(module)
    relu = kind == "RNN" and names[0][1] == "relu"
    gates: list[Gate] = []
    inp = seq
    for layer in range(layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w = _weights(module, sfx)
            k = layer * dirs + d
            h = h0[k] if isinstance(h0, torch.Tensor) else seq.new_zeros(n, hidden)
            c = c0[k] if isinstance(c0, torch.Tensor) else seq.new_zeros(n, hidden)
            steps = range(inp.shape[0] - 1, -1, -1) if d else range(inp.shape[0])
            pre_t: list[list[torch.Tensor]] = []
            hs: list[torch.Tensor] = [seq.new_zeros(0)] * inp.shape[0]
            for t in steps:
                if kind == "LSTM":
                    pre, h, c = _lstm_step(inp[t], h, c, w)
                elif kind == "GRU":
                    pre, h = _gru_step(inp[t], h, w)
                else:
                    pre, h = _rnn_step(inp[t], h, w, relu)
                pre_t.append(pre)
                hs[t] = h
            label = f"l{layer}" + ("_reverse" if d else "")
            for g, (name, k_) in enumerate(names):
                gates.append(Gate(f"{label}.{name}", k_, torch.stack([p[g] for p in pre_t])))
            outs.append(torch.stack(hs))
        inp = torch.cat(outs, -1) if dirs > 1 else outs[0]
    got = inp.squeeze(1) if unbatched else (inp.transpose(0, 1) if batch_first else inp)
    want = output[0] if isinstance(output, tuple) else output
    _check(got, want, "output sequence")
    return gates


def mkldnn_layer_gates(args: tuple[Any, ...], output: Any) -> tuple[list[Gate], bool, int, int]:
    """Gates of one ``aten::mkldnn_rnn_layer`` call (one LSTM layer and direction on CPU).

    Returns (gates named by gate only, reverse, num_layers, directions); raises
    :class:`Unsupported` when the written-out layer does not reproduce the op's output.
    """
    try:
        x, w_ih, w_hh, b_ih, b_hh, hx, cx, reverse = args[:8]
        num_layers, has_biases, bidirectional, batch_first = args[11], args[12], args[13], args[14]
    except (ValueError, IndexError):
        raise Unsupported("aten::mkldnn_rnn_layer was called with unexpected arguments") from None
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise Unsupported("aten::mkldnn_rnn_layer input is not [time, batch, features]")
    # The op gets time-major input whatever batch_first says (it is passed through): tell by hx.
    batch_major = (
        bool(batch_first)
        and isinstance(hx, torch.Tensor)
        and x.shape[1] != hx.shape[-2 if hx.ndim > 1 else 0]
    )
    seq = x.transpose(0, 1) if batch_major else x
    w: list[torch.Tensor | None] = [w_ih, w_hh, b_ih if has_biases else None, b_hh if has_biases else None]
    h, c = hx, cx
    steps = range(seq.shape[0] - 1, -1, -1) if reverse else range(seq.shape[0])
    pre_t: list[list[torch.Tensor]] = []
    hs: list[torch.Tensor] = [seq.new_zeros(0)] * seq.shape[0]
    for t in steps:
        pre, h, c = _lstm_step(seq[t], h, c, w)
        pre_t.append(pre)
        hs[t] = h
    got = torch.stack(hs)
    want = output[0] if isinstance(output, (tuple, list)) else output
    _check(got.transpose(0, 1) if batch_major else got, want, "LSTM layer output")
    gates = [Gate(name, k, torch.stack([p[g] for p in pre_t])) for g, (name, k) in enumerate(LSTM_GATES)]
    return gates, bool(reverse), int(num_layers), 2 if bidirectional else 1
