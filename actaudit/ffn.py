"""The transformer view of an audit: per layer, how many feed-forward neurons are dead, silent or cold.

Elements are tokens (text batches carry no padding). For each FFN activation site:

- ``dead``: neurons that fired on no token at all;
- ``silent_per_token``: the mean number of neurons that do not fire on a token (activation
  sparsity as relufication papers report it), from the per-unit fire rates;
- ``silent_per_sequence``: the mean number of neurons that fire on no token of a sequence,
  counted by the backend per sequence in the same pass; dead ≤ per sequence ≤ per token;
- ``cold``: neurons outside the hot set, the fewest neurons that account for ``hot_share``
  of all firings of the layer (what hot/cold offloading such as PowerInfer keeps on the GPU),
  with fire-rate quantiles.

Gated MLPs (``down(act(gate(x)) * up(x))``) have one unit per intermediate neuron, with the
activation of its gate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .jsonform import json_float as _r
from .verdicts import SiteVerdict

DEFAULT_HOT_SHARE = 0.8
_QUANTILES = (0.1, 0.5, 0.9)


def ffn_profile(
    sites: list[SiteVerdict], layout: dict[str, dict[str, Any]], hot_share: float = DEFAULT_HOT_SHARE
) -> dict[str, Any] | None:
    """The ``ffn`` section of a report, or None when no site is a layer's FFN activation."""
    layers = []
    for v in sites:
        entry = layout.get(v.info.module)
        if entry is None or v.stats.elements == 0:
            continue
        layers.append(_layer(v, entry, hot_share))
    if not layers:
        return None
    layers.sort(key=lambda d: (d["layer"], d["site"]))
    neurons = sum(d["neurons"] for d in layers)
    dead = sum(d["dead"] for d in layers)
    return {
        "hot_share": hot_share,
        "neurons": neurons,
        "dead": dead,
        "dead_fraction": _r(dead / neurons) if neurons else 0.0,
        "layers": layers,
    }


def _layer(v: SiteVerdict, entry: dict[str, Any], hot_share: float) -> dict[str, Any]:
    n = v.info.units
    tokens = int(v.stats.elements)
    rate = np.nan_to_num(np.asarray(v.fire_rate, dtype=np.float64))
    sequences = int(entry.get("sequences", 0))
    per_token = float(n - rate.sum())
    per_sequence = entry["silent_sequence_neurons"] / sequences if sequences else None
    return {
        "layer": entry["layer"],
        "site": v.info.name,
        "kind": v.info.kind,
        "gated": bool(entry.get("gated")),
        "neurons": n,
        "tokens": tokens,
        "sequences": sequences,
        "dead": len(v.dead_units),
        "dead_fraction": _r(len(v.dead_units) / n) if n else 0.0,
        "silent_per_token": _r(per_token),
        "silent_per_token_fraction": _r(per_token / n) if n else 0.0,
        "silent_per_sequence": None if per_sequence is None else _r(per_sequence),
        "silent_per_sequence_fraction": None if per_sequence is None or not n else _r(per_sequence / n),
        "cold": n - hot_count(rate, hot_share),
        "fire_rate_quantiles": {f"p{int(q * 100)}": _r(float(np.quantile(rate, q))) for q in _QUANTILES},
    }


def hot_count(rate: np.ndarray, share: float) -> int:
    """The fewest neurons whose firings add up to ``share`` of all firings (0 when none fired)."""
    total = float(rate.sum())
    if total <= 0:
        return 0
    ordered = np.cumsum(np.sort(rate)[::-1])
    return int(np.searchsorted(ordered, share * total - 1e-12 * total) + 1)
