"""The inspection of a model: its activation sites and inputs, without calibration data.

``Inspection.to_dict()`` is the schema ``actaudit.inspect/1``; :func:`actaudit.inspection.inspect_model`
builds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from ..jsonform import JSON, envelope, picked
from ..sanitize import text
from .draw import Block, Document, Lines, Table
from .draw import render as draw_render

INSPECT_SCHEMA = "actaudit.inspect/1"
CSV_COLUMNS = ("index", "name", "op", "kind", "family", "unit_axis", "units", "sample_shape", "module")


@dataclass
class Inspection:
    """What :func:`actaudit.inspection.inspect_model` found; ``to_dict()`` is the JSON output."""

    model: JSON
    inputs: list[JSON]
    sites: list[JSON]
    uncovered: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    probe: str = ""
    facts: JSON = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            **envelope(INSPECT_SCHEMA),
            **picked(self, "model", "inputs", "sites", "uncovered", "notes", "probe", "facts"),
        }

    def document(self) -> Document:
        """The model's facts, its inputs and outputs, its sites, then what was not covered."""
        m = self.model
        body: list[Block] = [line] if (line := _facts_line(self.facts)) else []
        body.append("")
        declared = cast(list[JSON] | None, self.facts.get("inputs"))
        # Declared inputs keep their symbolic dims (batch, n); the probe's shapes fill in the rest.
        inputs = declared if declared and any(i.get("shape") for i in declared) else self.inputs
        for label, items in (
            ("input", inputs),
            ("output", cast(list[JSON], self.facts.get("outputs") or [])),
        ):
            if items:
                rows = [
                    [
                        text(i["name"]),
                        _shape(cast(list[int | str | None] | None, i.get("shape"))),
                        i.get("dtype"),
                    ]
                    for i in items
                ]
                body += [Table([label, "shape", "dtype"], rows), ""]
        body += [self._site_table(), "", Lines(self._remarks())]
        return Document(f"{m.get('path') or 'in-memory model'} [{m.get('format')}]", body, self._csv())

    def _site_table(self) -> Table:
        headers = ["#", "site", "op", "kind", "unit axis", "units", "activation shape", "module"]
        rows = [
            [
                s["index"],
                text(s["name"]),  # names come from the file: no terminal escapes
                text(s["op"]),
                s["kind"],
                s["unit_axis"],
                s["units"],
                _shape(cast(list[int | str | None], s["sample_shape"])),
                text(s["module"]),
            ]
            for s in self.sites
        ]
        return Table(headers, rows, empty="no activation call sites found")

    def _remarks(self) -> list[str]:
        total = sum(cast(int, s["units"]) for s in self.sites)
        lines = [f"{len(self.sites)} sites, {total} units; {self.probe}"]
        lines += [f"not covered: {u['name']} ({u['op']}): {u['reason']}" for u in self.uncovered]
        return lines + [f"note: {n}" for n in self.notes]

    def _csv(self) -> Table:
        rows = [
            [
                *(s[c] for c in CSV_COLUMNS[:-2]),
                "x".join(map(str, cast(list[int], s["sample_shape"]))),
                s["module"],
            ]
            for s in self.sites
        ]
        return Table(CSV_COLUMNS, rows)

    def render(self, fmt: str = "table") -> str:
        return draw_render(self, fmt)


def _shape(shape: Sequence[int | str | None] | None) -> str:
    return "?" if shape is None else "×".join("?" if d is None else str(d) for d in shape) or "scalar"


def _facts_line(f: JSON) -> str:
    """One line like Polygraphy's model summary: producer, IR/opsets, node and initializer counts."""
    parts = []
    if f.get("producer"):
        parts.append(f"producer {f['producer']}")
    if f.get("ir_version") is not None:
        parts.append(f"IR {f['ir_version']}")
    if f.get("opsets"):
        parts.append("opset " + ", ".join(f"{d} {v}" for d, v in cast(JSON, f["opsets"]).items()))
    if f.get("nodes") is not None:
        parts.append(f"{f['nodes']} nodes")
    if f.get("initializers") is not None:
        parts.append(f"{f['initializers']} initializers")
    if f.get("parameters") is not None:
        parts.append(f"{f['parameters']:,} parameters")
    return " · ".join(parts)
