"""Recycling dead units (ReDo, Sokar et al. 2023), once for every format: only numpy here.

A dead unit gets new incoming weights (its row of the producing Linear / its filter of the
producing Conv) drawn at the scale of the layer's live rows, then scaled so that its activation
is half as large as a live unit's, and a bias chosen so that its new pre-activation is positive
on ``share`` (80 %) of the calibration elements; its outgoing weights (the
consumer's input columns it feeds) are set to zero. Every path from the unit to the output
goes through those zeroed weights, so the model computes exactly what it computed before
(up to float rounding), while the unit now fires, and its outgoing weights receive the gradient
``activation × upstream gradient`` of a live unit from the first step of fine-tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Chosen with bench/revival.py (tabular task, 4 seeds, Δ accuracy after fine-tuning, Adam / SGD):
# firing on half the elements at a live unit's activation scale gave +2.1 / +0.9 points; on 80 %
# at half that scale +2.6 / +2.4. A unit that fires on most inputs sends its outgoing weights a
# gradient on most batches; a smaller activation keeps those first steps from knocking the trained
# units about (twice the scale: +1.6 / -0.1).
DEFAULT_SHARE = 0.8  # a recycled unit fires on 80 % of the calibration elements
ACTIVATION_SCALE = 0.5  # ... with half the activation RMS of the layer's median live unit
SAMPLE_CAP = 8192  # values kept per site to place the bias: memory does not grow with calibration size


@dataclass
class RecyclePlan:
    """Recycle ``units`` of site ``name``; ``share``: target share of elements on which each fires."""

    name: str
    units: list[int]
    share: float = DEFAULT_SHARE
    former: str | None = None  # the site's former name (actaudit.naming): eager surgery locates by it

    @property
    def locator(self) -> str:
        """The name that places the call in a module's forward: the former name, where the site has one."""
        return self.former or self.name


@dataclass
class Recycled:
    """What recycling did at one site, for the report."""

    producer: str
    consumer: str
    scale: float  # the std of the new incoming weights
    units: list[int]
    fires: list[float] = field(default_factory=list)  # measured share of calibration elements, per unit
    bias: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "producer": self.producer,
            "consumer": self.consumer,
            "init_std": round(self.scale, 6),
            "units": list(self.units),
            "fires_min": round(min(self.fires), 4) if self.fires else None,
        }


def layer_scale(weight: np.ndarray, dead: list[int]) -> float:
    """The std of the layer's live rows; PyTorch's default init std ``1/sqrt(3·fan_in)`` when none is live."""
    w = np.asarray(weight, dtype=np.float64)
    fan_in = max(1, int(np.prod(w.shape[1:])))
    live = np.setdiff1d(np.arange(w.shape[0]), np.asarray(dead, dtype=np.int64))
    scale = float(np.std(w[live])) if live.size and w[live].size > 1 else 0.0
    if not (math.isfinite(scale) and scale > 0):
        scale = 1.0 / math.sqrt(3.0 * fan_in)
    return scale


def new_rows(weight: np.ndarray, dead: list[int], rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Fresh incoming weights for the ``dead`` rows of ``weight`` (shape ``[out, ...]``) and their std."""
    w = np.asarray(weight)
    scale = layer_scale(w, dead)
    rows = rng.standard_normal((len(dead), *w.shape[1:])) * scale
    return rows, scale


def with_rows(weight: np.ndarray, dead: list[int], rows: np.ndarray) -> np.ndarray:
    out = np.array(weight, dtype=np.float64, copy=True)
    out[list(dead)] = rows
    return out


def input_columns(units: list[int], repeat: int) -> list[int]:
    """The consumer's input features fed by ``units`` (each spans ``repeat`` consecutive features)."""
    return [u * repeat + r for u in units for r in range(repeat)]


def zero_inputs(
    kind: str, weight: np.ndarray, units: list[int], *, repeat: int = 1, groups: int = 1
) -> np.ndarray:
    """``weight`` of a consumer with the inputs fed by ``units`` set to zero.

    ``kind``: ``linear`` (``[out, in]``), ``matmul`` (``[in, out]``) or ``conv`` (``[O, C/g, *k]``).
    """
    w = np.array(weight, copy=True)
    if kind == "linear":
        w[:, input_columns(units, repeat)] = 0
    elif kind == "matmul":
        w[input_columns(units, repeat), :] = 0
    elif kind == "conv":
        per_group_in = w.shape[1]
        per_group_out = w.shape[0] // groups
        for c in units:
            g, k = divmod(int(c), per_group_in)
            w[g * per_group_out : (g + 1) * per_group_out, k] = 0
    else:
        raise ValueError(kind)
    return w


def bias_for_share(values: np.ndarray, share: float) -> np.ndarray:
    """Per column of ``values`` (``[samples, units]``: ``w·x`` without bias), the bias ``b`` with
    ``w·x + b > 0`` on ``share`` of the samples: minus the ``1 - share`` quantile."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape[0] == 0:
        return np.zeros(v.shape[1])
    return -np.quantile(v, 1.0 - share, axis=0)


def activation_match(values: np.ndarray, bias: np.ndarray, live_rms: float | None) -> np.ndarray:
    """Per recycled unit, the factor that gives its activation ``max(w·x + b, 0)`` ``ACTIVATION_SCALE``
    times the RMS of a live unit's.

    Rows drawn at the live rows' weight std can still fire far harder than the live units (a
    layer's inputs are not white): their outgoing weights would then take steps several times a
    live unit's and, under SGD, knock the trained units about. Scaling a row and its bias by the
    same positive factor keeps where it fires. 1 where there is nothing to match.
    """
    v = np.asarray(values, dtype=np.float64)
    if live_rms is None or not (math.isfinite(live_rms) and live_rms > 0) or v.shape[0] == 0:
        return np.ones(v.shape[1])
    rms = np.sqrt(np.mean(np.maximum(v + np.asarray(bias).reshape(1, -1), 0.0) ** 2, axis=0))
    out = np.ones_like(rms)
    ok = rms > 0
    out[ok] = ACTIVATION_SCALE * live_rms / rms[ok]
    return out


def live_activation_rms(values: np.ndarray) -> float | None:
    """The median over live units of their activation's RMS (``values``: live pre-activations, bias included)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    return float(np.median(np.sqrt(np.mean(np.maximum(v, 0.0) ** 2, axis=0))))


def fire_share(values: np.ndarray, bias: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape[0] == 0:
        return np.zeros(v.shape[1])
    return np.mean(v + np.asarray(bias).reshape(1, -1) > 0, axis=0)


class Reservoir:
    """A uniform sample of at most ``cap`` rows of a stream of ``[n, units]`` blocks (random keys, smallest kept)."""

    def __init__(self, units: int, rng: np.random.Generator, cap: int = SAMPLE_CAP) -> None:
        self.values = np.zeros((0, units))
        self.keys = np.zeros(0)
        self.rng = rng
        self.cap = cap

    def add(self, block: np.ndarray) -> None:
        b = np.asarray(block, dtype=np.float64).reshape(-1, self.values.shape[1])
        keys = self.rng.random(b.shape[0])
        self.values = np.concatenate([self.values, b])
        self.keys = np.concatenate([self.keys, keys])
        if self.keys.size > self.cap:
            keep = np.argpartition(self.keys, self.cap)[: self.cap]
            self.values, self.keys = self.values[keep], self.keys[keep]
