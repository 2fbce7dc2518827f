"""Activation sites that are one ONNX op (``Relu``, ``Clip``, ``HardSigmoid``, com.microsoft ``Gelu``, ...)."""

from __future__ import annotations

import math
import re

import numpy as np

from ...kinds import ONNX_OPS, Activation, classify_clamp
from . import proto as onnx
from .graph import DEFAULT_DOMAINS, Scope, attr
from .site import OnnxSite, _site

_RECURRENT = {"LSTM": "Sigmoid, Tanh, Tanh", "GRU": "Sigmoid, Tanh", "RNN": "Tanh"}

# Ops that are one activation kind without parameters, and those with one ``alpha`` (its attribute
# and ONNX's default): their kinds come from the one table, kinds.ONNX_OPS.
_PLAIN = {
    op: ONNX_OPS[op]
    for op in ("Relu", "Gelu", "Mish", "Softplus", "HardSwish", "Sigmoid", "Tanh", "Softsign")
}
_ALPHA = {
    op: (ONNX_OPS[op], key, default)
    for op, key, default in (
        ("LeakyRelu", "negative_slope", 0.01),
        ("Elu", "alpha", 1.0),
        ("Celu", "alpha", 1.0),
    )
}

_TORCH_HARDSIGMOID = (1.0 / 6.0, 0.5)
_ONNX_SELU = (1.67326319217681884765625, 1.05070102214813232421875)


def _f32(v: float) -> float:
    """A float32 attribute as the decimal a user wrote (0.30000001192092896 → 0.3)."""
    return float(str(np.float32(v)))


def _single(scope: Scope, node: onnx.NodeProto, i: int) -> OnnxSite | None:
    if not node.input or not node.input[0]:
        return None
    site = _known(scope, node, i)
    if site is None:
        reason = hidden_reason(node)
        if reason is not None:
            site = _hidden_site(scope, node, i, reason)
    return site


def _known(scope: Scope, node: onnx.NodeProto, i: int) -> OnnxSite | None:
    """The site of an op this backend audits (or knows it cannot), else None."""
    op = node.op_type
    if node.domain == "com.microsoft":
        return _ms_single(scope, node, i)
    if node.domain not in DEFAULT_DOMAINS:
        return None
    if op in _RECURRENT:
        gates = attr(node, "activations", None)
        names = (
            ", ".join(g.decode() if isinstance(g, bytes) else str(g) for g in gates)
            if gates
            else _RECURRENT[op]
        )
        return OnnxSite(
            base=node.name or node.output[0],
            op=op,
            act=Activation("sigmoid"),
            x=node.input[0],
            scope=scope,
            order=(*scope.order, i),
            uncovered=f"its gate activations ({names}) run inside the {op} op; their pre-activations are never tensors",
        )
    act: Activation | None = None
    slopes = None
    if op in _PLAIN:
        act = Activation(_PLAIN[op])
        if op == "Gelu" and attr(node, "approximate", b"none") in (b"tanh", "tanh"):
            act = Activation("gelu", {"tanh": 1.0})
    elif op in _ALPHA:
        kind, key, default = _ALPHA[op]
        act = Activation(kind, {key: _f32(attr(node, "alpha", default))})
    elif op == "PRelu":
        act = Activation("prelu")
        w = scope.const(node.input[1]) if len(node.input) > 1 else None
        if w is not None:
            slopes = [float(v) for v in np.asarray(w, dtype=np.float64).ravel()]
    elif op == "Selu":
        alpha, gamma = float(attr(node, "alpha", _ONNX_SELU[0])), float(attr(node, "gamma", _ONNX_SELU[1]))
        if math.isclose(alpha, _ONNX_SELU[0], rel_tol=1e-6) and math.isclose(
            gamma, _ONNX_SELU[1], rel_tol=1e-6
        ):
            act = Activation("selu")
        else:
            act = Activation("selu", {"alpha": _f32(alpha), "scale": _f32(gamma)})
    elif op == "HardSigmoid":
        act = hardsigmoid(float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5)))
    elif op == "Clip":
        act = _clip(scope, node)
    if act is None:
        return None
    site = _site(scope, node, i, op, act, node.input[0])
    site.unit_slopes = slopes
    if op == "Relu":
        site.relu_out = node.output[0]
    return site


def hardsigmoid(alpha: float, beta: float) -> Activation:
    if math.isclose(alpha, _TORCH_HARDSIGMOID[0], rel_tol=1e-6) and math.isclose(beta, 0.5, rel_tol=1e-6):
        return Activation("hardsigmoid")
    return Activation("hardsigmoid", {"alpha": _f32(alpha), "beta": _f32(beta)})


def _clip(scope: Scope, node: onnx.NodeProto) -> Activation | None:
    if len(node.input) > 1 or not any(a.name in ("min", "max") for a in node.attribute):
        lo = _bound(scope, node, 1)
        hi = _bound(scope, node, 2)
    else:  # opset < 11: bounds are attributes
        lo = float(attr(node, "min", -math.inf))
        hi = float(attr(node, "max", math.inf))
    if (lo is not None and math.isnan(lo)) or (hi is not None and math.isnan(hi)):
        return None  # a bound computed at run time: not a constant activation
    return classify_clamp(None if lo == -math.inf else lo, None if hi == math.inf else hi)


def _bound(scope: Scope, node: onnx.NodeProto, k: int) -> float | None:
    if len(node.input) <= k or not node.input[k]:
        return None
    v = scope.scalar(node.input[k])
    return math.nan if v is None else v


def _ms_single(scope: Scope, node: onnx.NodeProto, i: int) -> OnnxSite | None:
    """onnxruntime's contrib ops (com.microsoft) that are activations."""
    op = node.op_type
    if op in ("Gelu", "FastGelu", "BiasGelu", "QuickGelu"):
        if op == "QuickGelu":
            # x·sigmoid(alpha·x) inside one op: SiLU-family, but alpha·x is never a tensor.
            alpha = _f32(attr(node, "alpha", 1.702))
            site = _site(
                scope, node, i, f"com.microsoft.{op}", Activation("silu", {"beta": alpha}), node.input[0]
            )
            site.uncovered = f"{op} computes x·sigmoid({alpha}·x) inside the op; its pre-activation {alpha}·x is never a tensor"
            return site
        tanh = {"tanh": 1.0} if op == "FastGelu" else {}  # FastGelu is the tanh approximation
        site = _site(scope, node, i, f"com.microsoft.{op}", Activation("gelu", tanh), node.input[0])
        if op == "BiasGelu" or (op == "FastGelu" and len(node.input) > 1 and node.input[1]):
            site.uncovered = f"{op} adds its bias inside the op, so the pre-activation is never a tensor"
        return site
    if op in ("FusedConv", "FusedGemm", "FusedMatMul"):
        activation = attr(node, "activation", b"")
        activation = activation.decode() if isinstance(activation, bytes) else str(activation)
        if activation:
            return OnnxSite(
                base=node.name or node.output[0],
                op=f"com.microsoft.{op}",
                act=Activation("relu"),
                x=node.output[0],
                scope=scope,
                order=(*scope.order, i),
                uncovered=f"{activation} is fused into {op}; its pre-activation is never a tensor "
                "(export without onnxruntime's graph optimisations to audit it)",
            )
    return None


# Family words of op types (split at capitals) that hide an activation inside the op.
_RECURRENT_WORDS = frozenset(["lstm", "gru", "rnn"])
_ACTIVATION_WORDS = frozenset(
    [
        "relu",
        "gelu",
        "silu",
        "swish",
        "mish",
        "sigmoid",
        "tanh",
        "elu",
        "selu",
        "celu",
        "softplus",
        "softsign",
    ]
)
_NOT_AUDITED = frozenset(["ThresholdedRelu"])  # standard activations of kinds actaudit does not audit


def _words(op_type: str) -> set[str]:
    """``DynamicQuantizeLSTM`` → {dynamic, quantize, lstm}; ``QLinearLeakyRelu`` → {q, linear, leaky, relu}."""
    return {w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", op_type)}


def hidden_reason(node: onnx.NodeProto) -> str | None:
    """Why an op of any domain that this backend does not audit hides an activation, or None.

    By family, not by name: recurrent cells (``LSTM``, ``GRU``, ``RNN`` in the op type: standard,
    ``com.microsoft.DynamicQuantizeLSTM``, custom domains), and ops whose type names an activation
    (quantized ``QLinearSigmoid``, fused ``BiasGelu``-style ops, custom ``FusedConvRelu``). Gradient
    ops and attention kernels (whose only nonlinearity is a softmax) are not listed.
    """
    op = node.op_type
    if op.endswith("Grad"):
        return None
    where = f"{node.domain}.{op}" if node.domain not in DEFAULT_DOMAINS else op
    if op in _NOT_AUDITED and node.domain in DEFAULT_DOMAINS:
        return f"{where} is an activation kind actaudit does not audit"
    words = _words(op)
    if words & _RECURRENT_WORDS:
        return f"its gate activations run inside the {where} op; their pre-activations are never tensors"
    if words & _ACTIVATION_WORDS:
        return f"{where} computes an activation inside the op; its pre-activation is never a float tensor"
    return None


def _hidden_site(scope: Scope, node: onnx.NodeProto, i: int, reason: str) -> OnnxSite:
    op = node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"
    return OnnxSite(
        base=node.name or node.output[0],
        op=op,
        act=Activation("sigmoid"),
        x=node.input[0],
        scope=scope,
        order=(*scope.order, i),
        uncovered=reason,
    )
