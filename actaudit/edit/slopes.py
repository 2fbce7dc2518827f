"""Torch-free pieces shared by the PyTorch and ONNX surgeries: what to do per site, what happened, the fold."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..naming import named_sites, site_names

T = TypeVar("T")

# A rectifier's negative slope as written in a file: one for all units, one per unit, or unreadable.
Slope = float | list[float] | None

_SITE_RE = re.compile(r"^(?P<base>.*?)(?:#(?P<k>\d+))?$")


@dataclass
class SlopePlan:
    """What rewrite does at one audit site: the slope and what the fold needs."""

    name: str
    alpha: float
    units: int = 1
    unit_axis: int = 1
    sample_shape: tuple[int, ...] = ()
    neg_mean: np.ndarray | None = None  # E[min(z, 0)] per unit, for compensation
    only_units: list[int] | None = None  # PReLU: the slope goes to these units only, the others start at 0
    unit_slopes: np.ndarray | None = None  # one slope per unit (overrides alpha / only_units)
    exact_shift: bool = False  # subtract shift() right after the activation
    kind: str = "relu"  # relu | relu6: relu6 keeps its cap at 6
    bound: float | None = None  # learnable slopes clamped to [0, bound] in the forward (eager PReLU)
    former: str | None = None  # the site's former name (actaudit.naming): eager surgery locates by it

    def slopes(self, alpha: float | None = None) -> np.ndarray:
        """The initial slope per unit: ``unit_slopes``, α everywhere, or α on ``only_units`` and 0 elsewhere."""
        if self.unit_slopes is not None and alpha is None:
            return np.asarray(self.unit_slopes, dtype=np.float64)
        a = self.alpha if alpha is None else alpha
        if self.only_units is None:
            return np.full(self.units, a, dtype=np.float64)
        v = np.zeros(self.units, dtype=np.float64)
        v[list(self.only_units)] = a
        return v

    @property
    def cap(self) -> float | None:
        return 6.0 if self.kind == "relu6" else None

    shift_override: np.ndarray | None = None  # the shift per unit, given (apply_slopes) instead of computed

    def shift_for(self, written: np.ndarray) -> np.ndarray:
        """The exact shift for the slopes as written (float32): ``slope·E[min(z, 0)]`` per unit.

        The one place every format takes the constant it subtracts after the activation;
        zeros without ``exact_shift``. ``written`` may hold one α (LeakyReLU) or one slope per unit.
        """
        if not self.exact_shift:
            return np.zeros(max(self.units, 1), dtype=np.float64)
        if self.shift_override is not None:
            return np.asarray(self.shift_override, dtype=np.float64).reshape(-1)
        if self.neg_mean is None:
            return np.zeros(max(self.units, 1), dtype=np.float64)
        w = np.asarray(written, dtype=np.float64).reshape(-1)
        return np.resize(w, self.units) * np.asarray(self.neg_mean, dtype=np.float64).reshape(-1)

    def shift_values(self) -> np.ndarray:
        """The constant per unit subtracted right after the activation (zeros without a shift)."""
        if not self.exact_shift or self.neg_mean is None:
            return np.zeros(self.units, dtype=np.float64)
        return self.shift()

    def per_unit(self) -> bool:
        return self.unit_slopes is not None or self.only_units is not None

    def shift(self, alpha: float | None = None) -> np.ndarray:
        """What the rewrite adds to the site's mean output per unit: slope · E[min(z, 0)]."""
        assert self.neg_mean is not None
        return self.slopes(alpha) * np.asarray(self.neg_mean, dtype=np.float64)

    @property
    def locator(self) -> str:
        """The name that places the call in a module's forward: the former name, where the site has one."""
        return self.former or self.name

    @property
    def base(self) -> str:
        return split_name(self.locator)[0]

    @property
    def index(self) -> int | None:
        return split_name(self.locator)[1]


@dataclass
class SurgeryResult:
    """The rewritten model and what happened at each site."""

    model: Any
    rewritten: dict[str, str] = field(default_factory=dict)  # site → how ("module swap", "graph node", …)
    skipped: dict[str, str] = field(default_factory=dict)  # site → reason it was left as ReLU
    compensated: dict[str, str] = field(default_factory=dict)  # site → folded into which op
    not_compensated: dict[str, str] = field(default_factory=dict)  # site → why not
    notes: list[str] = field(default_factory=list)


def float32_up(x: np.ndarray | float) -> np.ndarray:
    """``x`` rounded up to float32: a slope written as 0.01 must read back as >= 0.01."""
    v = np.asarray(x, dtype=np.float64)
    f = v.astype(np.float32)
    low = f.astype(np.float64) < v
    f[low] = np.nextafter(f[low], np.float32(np.inf))
    return f


def unit_shape(units: int, unit_axis: int, rank: int) -> list[int]:
    """A shape that broadcasts one value per unit along ``unit_axis`` of a rank-``rank`` tensor
    (leading batch axis excluded from the result)."""
    axis = unit_axis if unit_axis >= 0 else rank + unit_axis
    return [units] + [1] * max(rank - 1 - axis, 0)


def split_name(name: str) -> tuple[str, int | None]:
    m = _SITE_RE.match(name)
    assert m is not None
    k = m.group("k")
    return m.group("base"), (int(k) if k is not None else None)


def assign_names(
    sites: list[tuple[str, T]], derived: list[str | None] | None = None, *, formers: bool = False
) -> list[tuple[str, T]]:
    """Audit names for graph candidates in execution order (:func:`actaudit.naming.named_sites`).

    ``derived``: each candidate's base after the module that produced its input, if any.
    ``formers`` appends (former name, item) for the renamed ones, so a plan made from an
    older report still finds its site.
    """
    if derived is None:
        names = site_names(base for base, _ in sites)
        return [(name, item) for name, (_, item) in zip(names, sites, strict=True)]
    pairs = named_sites([(base, d) for (base, _), d in zip(sites, derived, strict=True)])
    out = [(name, item) for (name, _), (_, item) in zip(pairs, sites, strict=True)]
    if formers:
        out += [(old, item) for (_, old), (_, item) in zip(pairs, sites, strict=True) if old]
    return out


# -- the fold --------------------------------------------------------------------------
def bias_shift(
    kind: str, weight: np.ndarray, shift: np.ndarray, *, groups: int = 1, repeat: int = 1
) -> np.ndarray:
    """``W · shift`` for a constant input ``shift`` per unit: what the consumer's output moves by.

    ``kind`` is ``conv`` (weight ``[O, C/g, *k]``, torch and ONNX alike), ``linear``
    (``[out, in]``) or ``matmul`` (``[in, out]``). ``repeat`` spreads each unit over
    that many consecutive input features (a ``[N, C, H, W]`` → ``[N, C·H·W]`` flatten).
    """
    w = np.asarray(weight, dtype=np.float64)
    s = np.repeat(np.asarray(shift, dtype=np.float64), repeat)
    if kind == "conv":
        wsum = w.reshape(w.shape[0], w.shape[1], -1).sum(-1)  # [O, C/g]
        out_per_group = w.shape[0] // groups
        sg = s.reshape(groups, -1)  # [g, C/g]
        return np.einsum("gok,gk->go", wsum.reshape(groups, out_per_group, -1), sg).reshape(-1)
    if kind == "linear":
        return w @ s
    if kind == "matmul":
        return s @ w
    raise ValueError(kind)
