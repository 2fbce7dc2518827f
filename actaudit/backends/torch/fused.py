"""Which torch ops and modules hide an activation, by family rather than by a list of names.

An op hides an activation when it computes one inside a single kernel, so that no capture
sees its pre-activation as a tensor: fused transformer layers, ``addmm`` with an epilogue,
quantized ``linear_relu`` / ``conv2d_relu``, fused or quantized recurrent cells, cuDNN / MIOpen
RNNs. The rule reads the op's name: a component naming an activation (``relu``, ``gelu``,
``sigmoid``, …), a recurrent cell (``lstm``, ``gru``, ``rnn``), a transformer layer or an
``activation`` epilogue. Ops that the capture audits itself (the activation ops, oneDNN's
LSTM layer, GLU), backward ops, and attention kernels (their only nonlinearity is a softmax,
which no audit covers in the unfused form either) are not hidden. Where the op's weights allow
it, the hidden activation is written out instead (:func:`encoder_layer_ffn`, the
``TransformerEncoderLayer`` fast path), as the LSTM layers are in :mod:`.recurrent`.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from typing import Any

import torch

from ...stats import Uncovered
from .ops import CANDIDATES
from .recurrent import Unsupported, _check

# Handled elsewhere: written out (mkldnn_rnn_layer), or audited as a site of its own (glu).
_AUDITED = frozenset([*CANDIDATES, "mkldnn_rnn_layer", "glu", "softsign"])
_ACTIVATION_WORDS = frozenset(
    [
        "relu",
        "relu6",
        "gelu",
        "silu",
        "swish",
        "mish",
        "sigmoid",
        "tanh",
        "hardswish",
        "hardsigmoid",
        "hardtanh",
        "elu",
        "selu",
        "celu",
        "softplus",
        "activation",
    ]
)
_RECURRENT_WORDS = frozenset(["lstm", "gru", "rnn"])
_LAYER_WORDS = frozenset(["transformer"])
# Ops whose names carry an activation word but hide none (pure queries, loss terms, kinds not audited).
_NOT_ACTIVATIONS = frozenset(["_use_cudnn_rnn_flatten_weight", "_cudnn_rnn_flatten_weight"])
_NOT_AUDITED_KINDS = ("log_sigmoid", "logsigmoid", "rrelu")
_RECURRENT_MODULE = re.compile(r"(LSTM|GRU|RNN)", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def hidden_reason(name: str) -> str | None:
    """Why the op ``name`` (a bare ATen / torch function name) hides an activation, or None."""
    inplace_of = name[:-1] if name.endswith("_") and not name.startswith("_") else name
    if inplace_of in _AUDITED or name in _NOT_ACTIVATIONS or name.endswith("_backward"):
        return None
    words = set(name.strip("_").lower().split("_"))
    if any(name.lstrip("_").startswith(k) for k in _NOT_AUDITED_KINDS):
        return f"aten::{name} is an activation kind actaudit does not audit"
    if words & _LAYER_WORDS:
        return f"aten::{name} runs a whole layer (its feed-forward ReLU/GELU included) as one fused op"
    if words & _RECURRENT_WORDS:
        return f"aten::{name} runs recurrent gates (sigmoid/tanh) inside one fused op"
    if words & _ACTIVATION_WORDS:
        return f"aten::{name} fuses an activation into another op"
    return None


def recurrent_family(module: torch.nn.Module, written_out: bool) -> bool:
    """An eager module of a recurrent family (by class name) whose gates the capture does not write out.

    Dynamically quantized LSTMs and custom fused cells run as ops no capture sees; a module of
    the family that runs its gates as ordinary ops is audited through them. The capture
    watches each such call and lists the module uncovered when no activation op ran inside it.
    """
    return not written_out and bool(_RECURRENT_MODULE.search(type(module).__name__))


def silent_module_reason(module_type: str) -> str:
    return f"{module_type} ran no activation op that a capture sees: its gates run inside fused ops"


HIDDEN = "<hidden>"  # the gate of a graph site list entry for an op that hides an activation


class HiddenOps:
    """The fused ops and silent recurrent modules of a run, listed in ``uncovered`` by name.

    ``graph_paths``: for a compiled graph, the module path of each hiding node, per op, in
    graph order; the k-th call of an op in a forward is named after the k-th node.
    """

    def __init__(self, graph_paths: dict[str, list[str]] | None = None) -> None:
        self.graph_paths = graph_paths or {}
        self.events = 0  # activation calls observed plus hiding ops seen, for silent-module checks
        self._now: dict[tuple[str, str], int] = defaultdict(int)
        self.most: dict[tuple[str, str], int] = {}  # (op, module path) -> most calls in one forward
        self._open: dict[str, int] = {}
        self.silent: dict[str, str] = {}  # module path -> class name
        self.audited: set[str] = set()  # modules whose gates were written out: their fused ops are covered
        self.written: set[tuple[str, str, int]] = set()  # (op, path, k): calls written out and audited
        self.refused: set[tuple[str, str, int]] = set()  # calls that could not be written out, once or more

    def begin_forward(self) -> None:
        self._now.clear()

    def op(self, name: str, path: str = "") -> int:
        """Count one call; returns its index among this forward's calls of ``name`` at ``path``."""
        self.events += 1
        key = (name, path)
        self._now[key] += 1
        self.most[key] = max(self.most.get(key, 0), self._now[key])
        return self._now[key] - 1

    def name_of(self, op: str, path: str, k: int) -> str:
        """The name of the k-th call: its module path, else the graph's k-th node of that op."""
        n = self.most.get((op, path), k + 1)
        if path:
            return path + (f"#{k}" if n > 1 else "")
        listed = self.graph_paths.get(op, [])
        if k < len(listed) and listed[k] and len(listed) >= n:
            return listed[k]
        return op.lstrip("_") + (f"#{k}" if n > 1 else "")

    def module_started(self, path: str) -> None:
        self._open[path] = self.events

    def module_ended(self, path: str, module_type: str) -> None:
        start = self._open.pop(path, None)
        if start is not None and start == self.events:
            self.silent.setdefault(path or module_type, module_type)

    def uncovered(self) -> list[Uncovered]:
        out: dict[str, Uncovered] = {}
        for (op, path), n in self.most.items():
            if path in self.audited:
                continue
            reason = (hidden_reason(op) or f"aten::{op} hides an activation") + (
                ": its pre-activation is never a tensor"
            )
            for k in range(n):
                if (op, path, k) in self.written and (op, path, k) not in self.refused:
                    continue
                name = self.name_of(op, path, k)
                out.setdefault(name, Uncovered(name, f"aten::{op}", reason))
        for path, mtype in self.silent.items():
            out.setdefault(path, Uncovered(path, mtype, silent_module_reason(mtype)))
        return list(out.values())


def encoder_layer_ffn(args: tuple[Any, ...], output: Any) -> tuple[torch.Tensor, str]:
    """The feed-forward pre-activation of one ``aten::_transformer_encoder_layer_fwd`` call (the
    ``TransformerEncoderLayer`` fast path), written out from the op's own weights; (pre, kind).

    Raises :class:`Unsupported` for a masked call, a nested tensor, or when the written-out layer
    does not reproduce the op's output.
    """
    try:
        src, embed_dim, heads, qkv_w, qkv_b, proj_w, proj_b, use_gelu, norm_first, eps = args[:10]
        n1w, n1b, n2w, n2b, w1, b1, w2, b2 = args[10:18]
    except (ValueError, IndexError):
        raise Unsupported(
            "aten::_transformer_encoder_layer_fwd was called with unexpected arguments"
        ) from None
    mask = args[18] if len(args) > 18 else None
    if mask is not None:
        raise Unsupported("a masked fast-path call is not written out")
    if not isinstance(src, torch.Tensor) or src.is_nested or src.ndim != 3:
        raise Unsupported("its input is not a [batch, tokens, features] tensor")
    import torch.nn.functional as F

    def attend(x: torch.Tensor) -> torch.Tensor:
        out, _ = torch._native_multi_head_attention(
            x, x, x, int(embed_dim), int(heads), qkv_w, qkv_b, proj_w, proj_b, None, False
        )
        return out

    dims = (int(embed_dim),)
    if norm_first:
        x = src + attend(F.layer_norm(src, dims, n1w, n1b, float(eps)))
        ffn_in = F.layer_norm(x, dims, n2w, n2b, float(eps))
    else:
        x = F.layer_norm(src + attend(src), dims, n1w, n1b, float(eps))
        ffn_in = x
    pre = F.linear(ffn_in, w1, b1)
    kind = "gelu" if use_gelu else "relu"
    ffn = F.linear(F.gelu(pre) if use_gelu else F.relu(pre), w2, b2)
    got = x + ffn if norm_first else F.layer_norm(x + ffn, dims, n2w, n2b, float(eps))
    _check(got, output, "encoder layer output")
    return pre, kind
