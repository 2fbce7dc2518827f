"""The transformer FFN section of an audit report (:mod:`actaudit.ffn`) as a table, and its depth plot."""

from __future__ import annotations

from typing import Any

from ..sanitize import text
from .draw import Block, Table, pct


def ffn_blocks(ffn: dict[str, Any]) -> list[Block]:
    """A blank line, a heading and one row per layer: dead, silent per token and per sequence, cold."""
    share = pct(ffn["hot_share"])
    rows = [
        [
            d["layer"],
            text(d["site"]),
            d["neurons"],
            d["dead"],
            pct(d["dead_fraction"]),
            pct(d["silent_per_token_fraction"]),
            "-" if d["silent_per_sequence_fraction"] is None else pct(d["silent_per_sequence_fraction"]),
            d["cold"],
            "yes" if d["gated"] else "no",
        ]
        for d in ffn["layers"]
    ]
    headers = [
        "layer",
        "FFN site",
        "neurons",
        "dead",
        "dead %",
        "silent/token",
        "silent/seq",
        "cold",
        "gated",
    ]
    return [
        "",
        f"FFN neurons per layer (elements = tokens, no padding; cold = outside the hot set of {share} of firings): "
        f"{ffn['dead']} dead of {ffn['neurons']} ({pct(ffn['dead_fraction'])})",
        Table(headers, rows),
    ]
