"""Dead and saturated units across a training run: one audit per checkpoint, folded in as it comes.

:class:`History` takes one audit report at a time (:meth:`History.add`) and keeps only what
the run needs: per site and checkpoint the dead and saturated fractions, and per unit its
current state plus the checkpoints where it changed (died, revived, saturated, recovered).
A report's per-unit arrays are dropped once folded in, so memory stays that of one audit
however many checkpoints there are. ``actaudit history`` and the training callback
(:mod:`actaudit.callbacks`) both fill one and write the same file (schema ``actaudit.history/1``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, cast

import numpy as np

from .errors import InputError
from .jsonform import envelope
from .jsonform import json_float as _r
from .verdicts import SiteVerdict

if TYPE_CHECKING:
    from .report.audit import Report

SCHEMA = "actaudit.history/1"
ORDERS = ("name", "mtime")
_DIGITS = re.compile(r"(\d+)")

__all__ = ["ORDERS", "SCHEMA", "History", "natural_key", "order_checkpoints"]


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key with digit runs compared as numbers: ``step-9`` before ``step-10``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _DIGITS.split(name) if p)


def order_checkpoints(paths: list[str], order: str = "name") -> list[str]:
    """``paths`` in training order: by file name in natural number order, or by modification time."""
    if order not in ORDERS:
        raise InputError(f"--order {order!r}: not one of {', '.join(ORDERS)}")
    if len(set(map(os.path.abspath, paths))) != len(paths):
        raise InputError("a checkpoint is given twice", hint="give each checkpoint once")
    if order == "mtime":
        stamps = {}
        for p in paths:
            try:
                stamps[p] = os.stat(p).st_mtime_ns
            except OSError as e:
                raise InputError(f"checkpoint {p}: {e.strerror}", hint="check the path") from None
        return sorted(paths, key=lambda p: (stamps[p], natural_key(Path(p).name)))
    return sorted(paths, key=lambda p: (natural_key(Path(p).name), natural_key(str(p))))


class Event(TypedDict):
    """One unit changing state between two checkpoints."""

    site: str
    unit: int
    event: str  # died / revived / saturated / recovered
    checkpoint: int
    label: str


@dataclass
class _Track:
    """One site's series and its units' current state (dead / saturated at the last checkpoint)."""

    kind: str
    units: int
    dead_fraction: list[float | None]
    saturated_fraction: list[float | None]
    dead: np.ndarray
    saturated: np.ndarray


@dataclass
class History:
    """Per site and checkpoint fractions, and per unit the checkpoints where its state changed."""

    checkpoints: list[dict[str, object]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, float] | None = None
    calibration: dict[str, object] | None = None
    _tracks: dict[str, _Track] = field(default_factory=dict)
    _formers: dict[str, str] = field(default_factory=dict)  # site name -> its former name (actaudit.naming)

    def add(self, label: str, report: Report, path: str | None = None) -> None:
        """Fold in one checkpoint's audit report (an :class:`actaudit.report.Report`)."""
        k = len(self.checkpoints)
        summary = report.summary()
        self.checkpoints.append(
            {
                "label": str(label),
                "path": path,
                "sha256": report.model.get("sha256"),
                "samples": report.calibration.get("samples"),
                "dead": summary["dead"],
                "dead_fraction": summary["dead_fraction"],
                "saturated": summary["saturated"],
                "saturated_fraction": summary["saturated_fraction"],
            }
        )
        if self.settings is None:
            self.settings = report.settings.to_dict()
            self.calibration = {k2: report.calibration.get(k2) for k2 in ("source", "samples")}
        for w in report.warnings:  # said once for the run, not once per checkpoint
            if w not in self.warnings:
                self.warnings.append(w)
        seen = set()
        for v in report.sites:
            name = v.info.name
            seen.add(name)
            if v.info.former_name:
                self._formers[name] = v.info.former_name
            self._fold(k, label, name, v)
        for name, t in self._tracks.items():
            if name not in seen:
                t.dead_fraction.append(None)
                t.saturated_fraction.append(None)

    def _fold(self, k: int, label: str, name: str, v: SiteVerdict) -> None:
        units = int(v.info.units)
        dead = np.zeros(units, dtype=bool)
        dead[v.dead_units] = True
        sat = np.zeros(units, dtype=bool)
        sat[v.saturated_units] = True
        t = self._tracks.get(name)
        if t is not None and t.units != units:
            self.warnings.append(
                f"site {name} has {units} units at {label} but {t.units} before: its units are tracked anew"
            )
            t = None
            self._tracks.pop(name)
        if t is None:
            t = _Track(
                v.info.kind, units, [None] * k, [None] * k, np.zeros(units, bool), np.zeros(units, bool)
            )
            self._tracks[name] = t
        t.dead_fraction.append(_r(v.dead_fraction) if v.can_die else None)
        t.saturated_fraction.append(_r(v.saturated_fraction) if v.can_saturate else None)
        for what, now, before, on, off in (
            ("dead", dead, t.dead, "died", "revived"),
            ("saturated", sat, t.saturated, "saturated", "recovered"),
        ):
            for u in np.flatnonzero(now != before):
                self.events.append(
                    {
                        "site": name,
                        "unit": int(u),
                        "event": on if now[u] else off,
                        "checkpoint": k,
                        "label": label,
                    }
                )
            setattr(t, what, now)

    def units(self) -> list[dict[str, object]]:
        """Every unit whose state ever changed: when it died / revived / saturated / recovered, and its state now."""
        out: dict[tuple[str, int], dict[str, object]] = {}
        for e in self.events:
            u = out.setdefault(
                (e["site"], e["unit"]),
                {
                    "site": e["site"],
                    "unit": e["unit"],
                    "died": [],
                    "revived": [],
                    "saturated": [],
                    "recovered": [],
                },
            )
            cast(list[str], u[e["event"]]).append(e["label"])
        for (name, unit), u in out.items():
            t = self._tracks.get(name)
            u["dead_now"] = bool(t is not None and unit < t.units and t.dead[unit])
            u["saturated_now"] = bool(t is not None and unit < t.units and t.saturated[unit])
        return list(out.values())

    def to_dict(self) -> dict[str, object]:
        return {
            **envelope(SCHEMA),
            "settings": self.settings,
            "calibration": self.calibration,
            "checkpoints": self.checkpoints,
            "sites": [
                {
                    "name": name,
                    **({"former_name": self._formers[name]} if name in self._formers else {}),
                    "kind": t.kind,
                    "units": t.units,
                    "dead_fraction": t.dead_fraction,
                    "saturated_fraction": t.saturated_fraction,
                    "dead_now": [int(u) for u in np.flatnonzero(t.dead)],
                }
                for name, t in self._tracks.items()
            ],
            "units": self.units(),
            "events": self.events,
            "warnings": list(self.warnings),
        }

    def render(self, fmt: str = "table") -> str:
        from .report.history import render

        return render(self.to_dict(), fmt)
