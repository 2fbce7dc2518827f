"""Which torch calls are activation sites, and which ops fix a tensor's unit axis.

Names are the bare op names that both capture modes see: ``func.__name__`` for
``torch`` functions / ``Tensor`` methods / ``torch.nn.functional`` (eager models), and
the overload packet's name for ATen ops (TorchScript and ``torch.export`` programs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ...kinds import TORCH_OPS, Activation, classify_clamp, classify_hardtanh

# Activation names seen at either level (in-place variants included): the kinds table's torch column.
CANDIDATES = frozenset(TORCH_OPS)

CONV = "conv"
LINEAR = "linear"
PRODUCERS = {
    "conv1d": CONV,
    "conv2d": CONV,
    "conv3d": CONV,
    "conv_transpose1d": CONV,
    "conv_transpose2d": CONV,
    "conv_transpose3d": CONV,
    "convolution": CONV,
    "_convolution": CONV,
    "mkldnn_convolution": CONV,
    "cudnn_convolution": CONV,
    "linear": LINEAR,
    "matmul": LINEAR,
    "__matmul__": LINEAR,
    "mm": LINEAR,
    "bmm": LINEAR,
    "addmm": LINEAR,
    "baddbmm": LINEAR,
    "einsum": LINEAR,
    "_addmm_activation": LINEAR,
}
# Recurrent ops: every tensor they return has its features (hidden units) last.
RECURRENT_PRODUCERS = frozenset(
    [
        "lstm",
        "gru",
        "rnn_tanh",
        "rnn_relu",
        "lstm_cell",
        "gru_cell",
        "rnn_tanh_cell",
        "rnn_relu_cell",
        "mkldnn_rnn_layer",
        "_thnn_fused_lstm_cell",
        "_thnn_fused_gru_cell",
        "LSTM",
        "GRU",
        "RNN",
        "LSTMCell",
        "GRUCell",
        "RNNCell",
    ]
)
# Ops that keep every axis in place (the unit axis may change size, not position); ops with
# several outputs (split, chunk) keep it in each.
SAME_AXES = frozenset(
    [
        "cat",
        "concat",
        "concatenate",
        "split",
        "split_with_sizes",
        "tensor_split",
        "chunk",
        "unsafe_split",
        "unsafe_chunk",
        "narrow",
        "slice",
        "index_select",
        "gather",
        "roll",
        "flip",
        "expand",
        "expand_as",
        "repeat",
        "masked_fill",
        "where",
        "_softmax",
        "softmax",
        "log_softmax",
        "abs",
        "neg",
        "exp",
        "log",
        "sqrt",
        "rsqrt",
        "pow",
        "square",
        "maximum",
        "minimum",
    ]
)
# Ops whose output keeps the unit layout of their first tagged input.
CARRIERS = frozenset(
    [
        "batch_norm",
        "native_batch_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "instance_norm",
        "group_norm",
        "native_group_norm",
        "layer_norm",
        "native_layer_norm",
        "add",
        "add_",
        "__add__",
        "__radd__",
        "__iadd__",
        "sub",
        "sub_",
        "__sub__",
        "__isub__",
        "mul",
        "mul_",
        "__mul__",
        "__rmul__",
        "__imul__",
        "div",
        "div_",
        "__truediv__",
        "dropout",
        "dropout_",
        "feature_dropout",
        "alpha_dropout",
        "native_dropout",
        "clone",
        "contiguous",
        "to",
        "_to_copy",
        "detach",
        "float",
        "half",
        "type_as",
        *CANDIDATES,
    ]
)
RESHAPES = frozenset(
    [
        "view",
        "reshape",
        "_unsafe_view",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "squeeze_",
        "unsqueeze_",
    ]
)
# Ops over the trailing spatial axes: a conv's channel axis (1) survives them; a linear
# layer's feature axis (last) does not.
SPATIAL = frozenset(
    [
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "max_pool1d_with_indices",
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool3d",
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
        "interpolate",
        "upsample_nearest1d",
        "upsample_nearest2d",
        "upsample_nearest3d",
        "upsample_linear1d",
        "upsample_bilinear2d",
        "upsample_bicubic2d",
        "upsample_trilinear3d",
        "_upsample_nearest_exact1d",
        "_upsample_nearest_exact2d",
        "pad",
        "constant_pad_nd",
        "reflection_pad1d",
        "reflection_pad2d",
        "replication_pad1d",
        "replication_pad2d",
        "pixel_shuffle",
    ]
)


def op_name(func: Callable[..., object] | str) -> str:
    """The bare op name of a torch function, an ATen overload or an FX node target."""
    packet = getattr(func, "overloadpacket", None)
    if packet is not None:
        return str(packet.__name__)
    return str(getattr(func, "__name__", ""))


def _arg(args: tuple[object, ...], kwargs: dict[str, object], i: int, key: str, default: Any) -> Any:
    if key in kwargs:
        return kwargs[key]
    if len(args) > i:
        return args[i]
    return default


def _scalar(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            return math.nan  # a tensor bound: not a constant activation
        return float(x.item())
    return float(x)


def _hardtanh(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Activation | None:
    return classify_hardtanh(
        float(_arg(args, kwargs, 1, "min_val", -1.0)), float(_arg(args, kwargs, 2, "max_val", 1.0))
    )


def _clamp(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Activation | None:
    c_lo = _scalar(_arg(args, kwargs, 1, "min", None))
    c_hi = None if name.startswith("clamp_min") else _scalar(_arg(args, kwargs, 2, "max", None))
    if (c_lo is not None and math.isnan(c_lo)) or (c_hi is not None and math.isnan(c_hi)):
        return None
    return classify_clamp(c_lo, c_hi)


def _leaky(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Activation | None:
    return Activation("leaky_relu", {"negative_slope": float(_arg(args, kwargs, 1, "negative_slope", 0.01))})


def _elu(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Activation | None:
    alpha = float(_arg(args, kwargs, 1, "alpha", 1.0))
    scale = float(_arg(args, kwargs, 2, "scale", 1.0))
    input_scale = float(_arg(args, kwargs, 3, "input_scale", 1.0))
    if not math.isclose(scale, 1.0):
        return Activation("selu")
    if not math.isclose(input_scale, 1.0):
        return Activation("celu", {"alpha": alpha})
    return Activation("elu", {"alpha": alpha})


def _celu(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Activation | None:
    return Activation("celu", {"alpha": float(_arg(args, kwargs, 1, "alpha", 1.0))})


def _gelu(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Activation | None:
    tanh = _arg(args, kwargs, 1, "approximate", "none") == "tanh"
    return Activation("gelu", {"tanh": 1.0} if tanh else {})


def _softplus(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Activation | None:
    return Activation("softplus", {"beta": float(_arg(args, kwargs, 1, "beta", 1.0))})


# Kinds whose calls carry parameters, and the code that reads them from a call; every other
# kind of the table is its name alone (selu's torch calls always use the default constants).
_Reader = Callable[[str, tuple[object, ...], dict[str, object]], "Activation | None"]
_READERS: dict[str, _Reader] = {
    "hardtanh": _hardtanh,
    "clip": _clamp,
    "leaky_relu": _leaky,
    "elu": _elu,
    "celu": _celu,
    "softplus": _softplus,
    "gelu": _gelu,
}


def activation_of(
    name: str, args: tuple[object, ...], kwargs: dict[str, object]
) -> tuple[Activation, object] | None:
    """The activation a call performs (kind and parameters) and the PReLU weight, or None."""
    kind = TORCH_OPS.get(name)
    if kind is None:
        return None
    read = _READERS.get(kind)
    act = Activation(kind) if read is None else read(name, args, kwargs)
    if act is None:
        return None
    return act, (_arg(args, kwargs, 1, "weight", None) if kind == "prelu" else None)


def first_tensor(args: tuple[object, ...], kwargs: dict[str, object]) -> torch.Tensor | None:
    x = args[0] if args else kwargs.get("input", kwargs.get("self"))
    return x if isinstance(x, torch.Tensor) and x.is_floating_point() else None
