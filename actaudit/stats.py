"""Per-unit counters for one activation call site, mergeable across batches and runs.

Every field is a sum, a min or a max, so two partial runs combine exactly with
:meth:`SiteStats.merge`. Backends reduce each batch to these vectors (on the device
where the model runs) and only the vectors travel; memory does not grow with the
number of calibration samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import numpy as np

from .errors import InputError


class FfnLayer(TypedDict):
    """A transformer layer's FFN activation (``extras["ffn"]`` by module path), and its sequence counts."""

    layer: int
    kind: str
    gated: bool
    sequences: NotRequired[int]
    silent_sequence_neurons: NotRequired[int]


@dataclass(frozen=True)
class Field:
    """One per-unit counter: its name, how two partial runs combine, and its dtype."""

    name: str
    merge: str  # "sum", "min" or "max": exact across batches, shards and ranks
    integer: bool = False  # a count (int64); otherwise float64

    @property
    def dtype(self) -> type[np.signedinteger[Any]] | type[np.floating[Any]]:
        return np.int64 if self.integer else np.float64

    def empty(self, units: int) -> np.ndarray:
        """The value before any batch: 0, +inf for a minimum, -inf for a maximum."""
        start = {"sum": 0, "min": np.inf, "max": -np.inf}[self.merge]
        return np.full(units, start, dtype=self.dtype)

    def fold(self, acc: np.ndarray, v: np.ndarray) -> None:
        """Combine ``v`` into ``acc`` in place (``acc`` may be a view)."""
        if self.merge == "min":
            np.minimum(acc, v, out=acc)
        elif self.merge == "max":
            np.maximum(acc, v, out=acc)
        else:
            acc += np.asarray(v).astype(self.dtype)


# The per-unit counters of a site, in the order a backend hands them on: the one table that
# capture, packing, the distributed exchange, shard counters and merge read. Adding a statistic is
# a row here, its attribute on SiteStats, and the code in each backend that computes it.
FIELDS: tuple[Field, ...] = (
    Field("low", "sum", integer=True),  # values at or below the stuck-low threshold
    Field("high", "sum", integer=True),  # values at or above the stuck-high threshold
    Field("nonfinite", "sum", integer=True),  # NaN / Inf values
    Field("min", "min"),  # smallest finite value
    Field("max", "max"),  # largest finite value
    Field("neg_sum", "sum"),  # Σ min(x, 0) over finite values
    Field("neg_sq", "sum"),  # Σ min(x, 0)²
    Field("pos_sum", "sum"),  # Σ max(x, 0)
    Field("pos_sq", "sum"),  # Σ max(x, 0)²
)
VECTOR_FIELDS = tuple(f.name for f in FIELDS)
INT_FIELDS = tuple(f.name for f in FIELDS if f.integer)


def empty_vectors(units: int) -> dict[str, np.ndarray]:
    """Every counter of ``units`` units before any batch."""
    return {f.name: f.empty(units) for f in FIELDS}


def fold_vectors(acc: dict[str, np.ndarray], vectors: dict[str, np.ndarray], at: slice = slice(None)) -> None:
    """Combine one batch's per-unit ``vectors`` into ``acc[name][at]`` in place, field by field."""
    for f in FIELDS:
        f.fold(acc[f.name][at], np.asarray(vectors[f.name]))


@dataclass
class SiteInfo:
    """What a site is: name, op as called, activation kind and parameters, unit layout."""

    name: str
    op: str
    kind: str
    params: dict[str, float] = field(default_factory=dict)
    unit_axis: int = 1  # axis of the activation tensor that indexes units (>= 0)
    units: int = 0
    sample_shape: tuple[int, ...] = ()  # activation shape without the batch axis
    module: str = ""  # module path (PyTorch) or name scope (ONNX), "" for top level
    unit_slopes: list[float] | None = None  # PReLU: per-unit slope, for the verdict
    # Where unit_axis came from (actaudit.unitaxis): producer, consumer, override, whole, guessed.
    # "whole": no axis but the batch, one unit, and unit_axis equals the rank (an axis past the last).
    unit_axis_source: str = "producer"
    model_output: bool = False  # its values reach a model output unchanged (a head: saturation is expected)
    former_name: str | None = None  # its name before functional sites were named after their producer

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "op": self.op,
            "kind": self.kind,
            "params": dict(self.params),
            "unit_axis": self.unit_axis,
            "units": self.units,
            "sample_shape": list(self.sample_shape),
            "module": self.module,
            "unit_axis_source": self.unit_axis_source,
            **({"former_name": self.former_name} if self.former_name else {}),
        }


@dataclass
class SiteStats:
    """Counters per unit of one site.

    ``elements`` is how many pre-activation values each unit has seen (the same for
    every unit of a site); ``low``/``high`` count values at or beyond the stuck
    thresholds; ``neg_*``/``pos_*`` are sums of min(x, 0), min(x, 0)², max(x, 0),
    max(x, 0)² over finite values; ``nonfinite`` counts NaN/Inf values.
    """

    units: int
    elements: int = 0
    samples: int = 0
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)
    nonfinite: np.ndarray = field(init=False)
    min: np.ndarray = field(init=False)
    max: np.ndarray = field(init=False)
    neg_sum: np.ndarray = field(init=False)
    neg_sq: np.ndarray = field(init=False)
    pos_sum: np.ndarray = field(init=False)
    pos_sq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.__dict__.update(empty_vectors(self.units))

    def vectors(self) -> dict[str, np.ndarray]:
        """The counters by name (the arrays themselves, not copies)."""
        return {name: self.__dict__[name] for name in VECTOR_FIELDS}

    def add_batch(self, elements: int, samples: int, vectors: dict[str, np.ndarray]) -> None:
        """Fold one batch's per-unit vectors in. ``elements`` is per unit."""
        self.elements += int(elements)
        self.samples += int(samples)
        fold_vectors(self.vectors(), vectors)

    def merge(self, other: SiteStats) -> SiteStats:
        """Combine two partial runs over disjoint data."""
        if other.units != self.units:
            raise ValueError(f"cannot merge statistics of {self.units} and {other.units} units")
        out = SiteStats(self.units, self.elements, self.samples)
        out.add_batch(0, 0, self.vectors())
        out.add_batch(other.elements, other.samples, other.vectors())
        return out

    @property
    def finite_elements(self) -> np.ndarray:
        return np.int64(self.elements) - self.nonfinite

    def neg_mean(self) -> np.ndarray:
        """E[min(x, 0)] per unit over finite elements."""
        n = np.maximum(self.finite_elements, 1)
        return self.neg_sum / n

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"units": self.units, "elements": self.elements, "samples": self.samples}
        for name in VECTOR_FIELDS:
            d[name] = getattr(self, name).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SiteStats:
        s = cls(int(d["units"]), int(d["elements"]), int(d["samples"]))
        for f in FIELDS:
            setattr(s, f.name, np.asarray(d[f.name], dtype=f.dtype))
        return s


@dataclass(frozen=True)
class AxisOverride:
    """``--unit-axis SITE_GLOB=AXIS``: matched against a site's name with and without its ``#k`` suffix."""

    glob: str
    axis: int

    def out_of_range(
        self, site: str, shape: tuple[int, ...] | list[int] | None, rank: int | None = None
    ) -> InputError:
        """The option's mistake, not the model's: name the option, the site's rank and the axes it has."""
        n = len(shape) if shape is not None else (rank or 0)
        found = f"a {n}-d activation {list(shape)}" if shape is not None else f"a {n}-d activation"
        return InputError(
            f"--unit-axis {self.glob}={self.axis}: axis {self.axis} does not exist at site {site}, which has {found}",
            hint=f"give an axis from {-n} to {n - 1}, e.g. '{self.glob}={1 if n > 1 else -1}'; axis 0 is the batch",
        )


@dataclass
class SiteResult:
    info: SiteInfo
    stats: SiteStats


@dataclass
class Uncovered:
    """An activation the backend saw but could not audit, and why. Never dropped silently."""

    name: str
    op: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "reason": self.reason}


@dataclass
class Capture:
    """Everything a backend hands on: sites in first-execution order plus run facts."""

    sites: list[SiteResult]
    samples: int
    batches: int
    uncovered: list[Uncovered] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    inputs: list[dict[str, object]] = field(default_factory=list)
    # With ``CaptureOptions.keep_outputs``: the model's floating-point outputs of the same pass,
    # one list per batch fed (rewrite and prune measure drift against them), and their names.
    outputs: list[list[np.ndarray]] | None = None
    output_names: list[str] | None = None
    # What a backend measured beyond per-site statistics (``ffn``: per-sequence counts of a transformer).
    extras: dict[str, Any] = field(default_factory=dict)
