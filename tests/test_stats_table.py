"""The counters table of stats.py: what it says each field does, checked against NumPy directly,
and the published JSON schema of shard counters kept in step with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from actaudit.stats import FIELDS, INT_FIELDS, VECTOR_FIELDS, SiteStats, empty_vectors, fold_vectors

SCHEMA = Path(__file__).resolve().parents[1] / "actaudit" / "report.schema.json"


def test_schema_counters_list_every_field_of_the_table() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    counters = schema["$defs"]["counters"]["properties"]["sites"]["items"]["required"]
    assert counters == ["info", "elements", "samples", *VECTOR_FIELDS]


def test_folding_batches_is_reducing_everything_at_once() -> None:
    """Three uneven batches folded field by field equal one NumPy reduction over all of them."""
    rng = np.random.default_rng(7)
    units = 5
    batches = [
        {f.name: rng.integers(0, 50, units) if f.integer else rng.normal(size=units) * 10 for f in FIELDS}
        for _ in range(3)
    ]
    acc = empty_vectors(units)
    for b in batches:
        fold_vectors(acc, b)
    stack = {n: np.stack([b[n] for b in batches]) for n in VECTOR_FIELDS}
    for f in FIELDS:
        want = {"sum": stack[f.name].sum(0), "min": stack[f.name].min(0), "max": stack[f.name].max(0)}[
            f.merge
        ]
        np.testing.assert_array_equal(acc[f.name], want)
        assert acc[f.name].dtype == (np.int64 if f.name in INT_FIELDS else np.float64)


def test_a_slice_folds_into_its_units_only() -> None:
    acc = empty_vectors(6)
    vec = {f.name: np.full(2, 3 if f.integer else -1.5) for f in FIELDS}
    fold_vectors(acc, vec, slice(2, 4))
    assert acc["low"].tolist() == [0, 0, 3, 3, 0, 0]
    assert acc["min"].tolist() == [np.inf, np.inf, -1.5, -1.5, np.inf, np.inf]
    assert acc["max"].tolist() == [-np.inf, -np.inf, -1.5, -1.5, -np.inf, -np.inf]


def test_merge_of_two_runs_is_the_run_over_both() -> None:
    a, b = SiteStats(2), SiteStats(2)
    a.add_batch(4, 1, {f.name: np.array([1, 2]) if f.integer else np.array([0.5, -2.0]) for f in FIELDS})
    b.add_batch(6, 2, {f.name: np.array([3, 0]) if f.integer else np.array([-1.0, 4.0]) for f in FIELDS})
    m = a.merge(b)
    assert (m.elements, m.samples) == (10, 3)
    assert m.low.tolist() == [4, 2] and m.min.tolist() == [-1.0, -2.0] and m.max.tolist() == [0.5, 4.0]
    assert m.neg_sq.tolist() == [-0.5, 2.0]
