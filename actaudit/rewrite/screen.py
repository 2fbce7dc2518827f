"""Per-unit drift costs from group probes: which dead units are cheap to revive.

The statistics give each dead unit's shifted signal energy ``e_u`` (see :mod:`.units`), but
not what the rest of the model does with it: the consumer's weight column of one unit can
be 30× another's at the same site (silero-vad's decoder). A per-site probe measures one
gain for all units of a site, so one costly unit makes every unit of its site look costly,
and cheapest-first then takes the wrong units.

Screening refines the gains where the choice is decided: starting from the per-site probes
(each a *group*: its units at the probe slope, measured drift ``D``, base
``P = a·sqrt(Σ e_u)``), it finds the marginal cost ``τ`` (the cost of the last unit that
cheapest-first takes under the target at the probe slope), splits the group with the most
units whose estimated cost lies within a factor ``BAND`` of ``τ`` (ties: the larger ``D``)
into the half that the current estimate calls cheap and the other half, probes both, and
gives each unit the gain ``D/P`` of the smallest group it was measured in. Each split costs two probes (on the probe subset); it
stops when the passes it may use are spent or every remaining group is one unit. Costly
units are found in ``log2(n)`` splits, and the cheap half of every split is measured, not
assumed. The estimate only orders the units; the search then measures every choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..edit.drift import Drift

Probe = Callable[[dict[str, dict[int, float]], str], Drift]
BAND = 4.0  # a unit whose estimated cost is within this factor of the marginal cost may flip


@dataclass
class Group:
    site: str
    index: list[int]  # positions in the site's ``dead`` list
    drift: float  # measured at the probe slope
    base: float  # the probe slope × sqrt(Σ e_u) over the group

    @property
    def ratio(self) -> float:
        return self.drift / self.base if self.base > 0 else (0.0 if self.drift == 0 else math.inf)


def split(group: Group, cost: np.ndarray) -> tuple[list[int], list[int]]:
    """The group's units ordered by current estimated cost, cut into a cheap and a costly half."""
    order = sorted(group.index, key=lambda i: (float(cost[i]), i))
    h = len(order) // 2
    return order[:h], order[h:]


def margin(costs: np.ndarray, slope: float, target: float) -> float:
    """The cost of the unit at which cheapest-first at ``slope`` reaches ``target`` (quadrature)."""
    c = np.sort(np.asarray(costs, dtype=np.float64).reshape(-1))
    if c.size == 0:
        return 0.0
    reach = np.sqrt(np.cumsum(np.square(slope * c)))
    k = int(np.searchsorted(reach, target, side="right"))
    return float(c[min(k, c.size - 1)])


def uncertain(group: Group, cost: np.ndarray, tau: float) -> int:
    """How many of the group's units have an estimated cost within ``BAND`` of ``tau``."""
    c = cost[group.index]
    return int(np.count_nonzero((c >= tau / BAND) & (c <= tau * BAND)))


def screen(
    groups: list[Group],
    dead: dict[str, list[int]],
    energy: dict[str, np.ndarray],
    probe: Probe,
    slope: float,
    probes_left: int,
    target: float,
) -> dict[str, np.ndarray]:
    """Per-unit gains (same order as ``dead[site]``) after at most ``probes_left`` probes."""
    gain = {g.site: np.full(len(dead[g.site]), g.ratio, dtype=np.float64) for g in groups}
    live = [g for g in groups if len(g.index) > 1 and g.drift > 0]
    while probes_left >= 2 and live:
        cost = {n: gain[n] * np.sqrt(np.maximum(e, 0.0)) for n, e in energy.items() if n in gain}
        tau = margin(np.concatenate(list(cost.values())), slope, target)
        g = max(live, key=lambda x: (uncertain(x, cost[x.site], tau), x.drift))
        if uncertain(g, cost[g.site], tau) == 0:
            break
        live.remove(g)
        e = energy[g.site]
        cheap, costly = split(g, cost[g.site])
        for part, tag in ((cheap, "cheap"), (costly, "costly")):
            units = {dead[g.site][i]: slope for i in part}
            d = probe({g.site: units}, f"screen {g.site} {tag} {len(part)}").rel_l2
            probes_left -= 1
            sub = Group(g.site, part, d, slope * math.sqrt(float(np.sum(e[part]))))
            gain[g.site][part] = sub.ratio if math.isfinite(sub.ratio) else 1e6
            if len(part) > 1 and d > 0:
                live.append(sub)
    return gain
