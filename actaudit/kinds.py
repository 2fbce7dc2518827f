"""Activation kinds and where each one is "stuck".

An element is *stuck* when the activation's local derivative there is below
``stuck_fraction`` (default 1 %) of the activation's maximum derivative. For every
kind that reduces to two thresholds on the pre-activation ``x``:

* stuck low  when ``x <= low``  (the flat low side: ReLU's negative half, the far
  negative tail of GELU/SiLU/Softplus, the lower bound of tanh/sigmoid/Clip);
* stuck high when ``x >= high`` (an upper bound: ReLU6's cap, tanh's top).

Thresholds are computed here, in pure Python, so that both backends (PyTorch and
ONNX) count with exactly the same numbers. Nothing in this module imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

DEFAULT_STUCK_FRACTION = 0.01
INF = math.inf


class Family(str, Enum):
    """How a kind fails: rectifiers die, bounded activations saturate, ReLU6 does both."""

    RECTIFIER = "rectifier"
    BOUNDED = "bounded"
    CAPPED = "capped"  # a rectifier with an upper cap (ReLU6): can die and saturate


@dataclass(frozen=True)
class Kind:
    """One row of the activation table: a kind, how it fails, and how each front end spells it.

    Adding a kind is a row here plus its thresholds in :func:`thresholds`; a kind whose call
    carries parameters (``params``) also needs the code that reads them in each backend.
    """

    name: str
    family: Family
    module: str | None  # the torch.nn class (a call inside one is named after the module)
    torch: tuple[str, ...] = ()  # op names: torch functions / methods and ATen packets, in-place included
    onnx: tuple[str, ...] = ()  # ai.onnx op types that are this kind on their own
    params: tuple[str, ...] = ()  # parameters that move its thresholds, read from each call


_R, _B, _C = Family.RECTIFIER, Family.BOUNDED, Family.CAPPED
TABLE: tuple[Kind, ...] = (
    Kind("relu", _R, "ReLU", ("relu", "relu_"), ("Relu",)),
    Kind("leaky_relu", _R, "LeakyReLU", ("leaky_relu", "leaky_relu_"), ("LeakyRelu",), ("negative_slope",)),
    Kind("prelu", _R, "PReLU", ("prelu", "_prelu_kernel"), ("PRelu",), ("negative_slope",)),
    Kind("elu", _R, "ELU", ("elu", "elu_"), ("Elu",), ("alpha",)),
    Kind("selu", _R, "SELU", ("selu", "selu_"), ("Selu",), ("alpha", "scale")),
    Kind("celu", _R, "CELU", ("celu", "celu_"), ("Celu",), ("alpha",)),
    # params: {"tanh": 1.0} for the tanh approximation (GPT-2's gelu_new), whose flat tail starts at −3.009
    Kind("gelu", _R, "GELU", ("gelu", "gelu_"), ("Gelu",), ("tanh",)),
    Kind("silu", _R, "SiLU", ("silu", "silu_")),
    Kind("mish", _R, "Mish", ("mish", "mish_"), ("Mish",)),
    Kind("hardswish", _R, "Hardswish", ("hardswish", "hardswish_"), ("HardSwish",)),
    Kind("softplus", _R, "Softplus", ("softplus",), ("Softplus",), ("beta",)),
    Kind("relu6", _C, "ReLU6", ("relu6",)),
    Kind("sigmoid", _B, "Sigmoid", ("sigmoid", "sigmoid_"), ("Sigmoid",)),
    Kind("tanh", _B, "Tanh", ("tanh", "tanh_"), ("Tanh",)),
    Kind("hardtanh", _B, "Hardtanh", ("hardtanh", "hardtanh_"), (), ("min", "max")),
    Kind(
        "hardsigmoid", _B, "Hardsigmoid", ("hardsigmoid", "hardsigmoid_"), ("HardSigmoid",), ("alpha", "beta")
    ),
    Kind("softsign", _B, "Softsign", ("softsign",), ("Softsign",)),
    # a clamp with constant bounds: relu, relu6 or hardtanh when its bounds say so (classify_clamp)
    Kind(
        "clip",
        _B,
        None,
        ("clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_"),
        ("Clip",),
        ("min", "max"),
    ),
)
KINDS: dict[str, Kind] = {k.name: k for k in TABLE}

RECTIFIERS = tuple(k.name for k in TABLE if k.family is Family.RECTIFIER)
BOUNDED = tuple(k.name for k in TABLE if k.family is Family.BOUNDED)
CAPPED = tuple(k.name for k in TABLE if k.family is Family.CAPPED)
ALL_KINDS = RECTIFIERS + CAPPED + BOUNDED

# torch.nn activation classes: both backends name a call inside one of these after the
# module itself (``layer1.0.relu``), a functional call after its caller (``enc/relu``).
ACTIVATION_MODULES = frozenset(k.module for k in TABLE if k.module)
# Op name → kind, as each front end spells the op.
TORCH_OPS: dict[str, str] = {op: k.name for k in TABLE for op in k.torch}
ONNX_OPS: dict[str, str] = {op: k.name for k in TABLE for op in k.onnx}


def family(kind: str) -> Family:
    if kind not in KINDS:
        raise KeyError(f"unknown activation kind {kind!r}")
    return KINDS[kind].family


@dataclass(frozen=True)
class Thresholds:
    """Pre-activation bounds: stuck low at ``x <= low``, stuck high at ``x >= high``.

    ``leaky`` is set for LeakyReLU/PReLU whose slope keeps the unit alive: then ``low``
    (= 0) only counts "never positive" elements, not stuck ones.
    """

    low: float = -INF
    high: float = INF
    leaky: bool = False


@dataclass(frozen=True)
class Activation:
    """One activation call: its kind and the parameters that move its thresholds."""

    kind: str
    params: dict[str, float] = field(default_factory=dict)

    def thresholds(self, stuck_fraction: float = DEFAULT_STUCK_FRACTION) -> Thresholds:
        return thresholds(self.kind, tuple(sorted(self.params.items())), stuck_fraction)


def _elu_low(alpha: float, scale: float, input_scale: float, f: float) -> float:
    # d/dx on x<0: scale*alpha*input_scale*exp(input_scale*x); on x>0: scale.
    neg_peak = scale * alpha * input_scale
    if neg_peak <= 0:
        return 0.0
    max_d = max(scale, neg_peak)
    return math.log(f * max_d / neg_peak) / input_scale


def _gelu_d(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0))) + x * math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _gelu_tanh_d(x: float) -> float:
    """d/dx of 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³)."""
    c = math.sqrt(2.0 / math.pi)
    t = math.tanh(c * (x + 0.044715 * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _silu_d(x: float) -> float:
    s = _sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _mish_d(x: float) -> float:
    sp = _softplus(x)
    t = math.tanh(sp)
    return t + x * (1.0 - t * t) * _sigmoid(x)


def _tail_low(d: Callable[[float], float], f: float) -> float:
    """Largest t such that |d(x)| < f * max|d| for every x <= t (the flat negative tail)."""
    max_d = max(abs(d(i / 1000.0)) for i in range(-10000, 10001))
    limit = f * max_d
    x = -80.0
    step = 0.01
    while abs(d(x + step)) < limit:
        x += step
        if x > 10:  # never reached for the kinds that use this
            return x
    lo, hi = x, x + step
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if abs(d(mid)) < limit:
            lo = mid
        else:
            hi = mid
    return lo


@lru_cache(maxsize=256)
def thresholds(kind: str, params: tuple[tuple[str, float], ...], f: float) -> Thresholds:
    p = dict(params)
    if not 0 < f < 1:
        raise ValueError("stuck fraction must be in (0, 1)")
    if kind == "relu":
        return Thresholds(low=0.0)
    if kind == "relu6":
        return Thresholds(low=0.0, high=6.0)
    if kind in ("leaky_relu", "prelu"):
        slope = abs(p.get("negative_slope", 0.01 if kind == "leaky_relu" else 0.25))
        # Max derivative is max(1, slope); a slope below f of it is flat.
        return Thresholds(low=0.0, leaky=slope >= f * max(1.0, slope))
    if kind in ("elu", "selu", "celu"):
        defaults = {
            "elu": (1.0, 1.0, 1.0),
            "selu": (1.6732632423543772, 1.0507009873554805, 1.0),
            "celu": (1.0, 1.0, 1.0),
        }[kind]
        alpha = p.get("alpha", defaults[0])
        scale = p.get("scale", defaults[1])
        input_scale = p.get("input_scale", 1.0 / alpha if kind == "celu" and alpha else defaults[2])
        return Thresholds(low=_elu_low(alpha, scale, input_scale, f))
    if kind == "gelu":
        return Thresholds(low=_tail_low(_gelu_tanh_d if p.get("tanh") else _gelu_d, f))
    if kind == "silu":
        return Thresholds(low=_tail_low(_silu_d, f))
    if kind == "mish":
        return Thresholds(low=_tail_low(_mish_d, f))
    if kind == "hardswish":
        return Thresholds(low=-3.0)
    if kind == "softplus":
        beta = p.get("beta", 1.0)
        return Thresholds(low=math.log(f / (1.0 - f)) / beta)
    if kind == "sigmoid":
        # sigma'(x) = s(1-s) <= 1/4; stuck where s(1-s) < f/4.
        s = (1.0 + math.sqrt(1.0 - f)) / 2.0
        t = math.log(s / (1.0 - s))
        return Thresholds(low=-t, high=t)
    if kind == "tanh":
        t = math.atanh(math.sqrt(1.0 - f))
        return Thresholds(low=-t, high=t)
    if kind == "softsign":
        t = 1.0 / math.sqrt(f) - 1.0
        return Thresholds(low=-t, high=t)
    if kind == "hardsigmoid":
        # PyTorch: x/6 + 1/2; ONNX HardSigmoid defaults to alpha 0.2 (PP-OCR models use it).
        alpha = p.get("alpha", 1.0 / 6.0)
        beta = p.get("beta", 0.5)
        return Thresholds(low=-beta / alpha, high=(1.0 - beta) / alpha)
    if kind in ("hardtanh", "clip"):
        return Thresholds(
            low=p.get("min", -1.0 if kind == "hardtanh" else -INF),
            high=p.get("max", 1.0 if kind == "hardtanh" else INF),
        )
    raise KeyError(f"unknown activation kind {kind!r}")


# A one-sided clamp whose bound is this close to zero is a numeric guard (max(x, 1e-10)),
# not an activation.
GUARD_EPSILON = 1e-4


def classify_hardtanh(lo: float, hi: float) -> Activation:
    """What ``hardtanh(x, lo, hi)`` is: relu6 for (0, 6), else hardtanh with its bounds."""
    if lo == 0.0 and hi == 6.0:
        return Activation("relu6")
    return Activation("hardtanh", {"min": lo, "max": hi})


def classify_clamp(lo: float | None, hi: float | None) -> Activation | None:
    """What a clamp/Clip with constant bounds is: relu, relu6, hardtanh, clip, or nothing."""
    lo_f = -INF if lo is None else float(lo)
    hi_f = INF if hi is None else float(hi)
    if lo_f == 0.0 and hi_f == 6.0:
        return Activation("relu6")
    if math.isfinite(lo_f) and math.isfinite(hi_f):
        return Activation("hardtanh", {"min": lo_f, "max": hi_f})
    if lo_f == 0.0 and not math.isfinite(hi_f):
        return Activation("relu")
    bound = lo_f if math.isfinite(lo_f) else hi_f
    if not math.isfinite(bound) or abs(bound) <= GUARD_EPSILON:
        return None
    return Activation("clip", {k: v for k, v in (("min", lo_f), ("max", hi_f)) if math.isfinite(v)})
