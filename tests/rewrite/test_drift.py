"""Drift against the reference outputs and the pass ledger, on hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from actaudit.edit.drift import Ledger, Reference
from actaudit.errors import InputError


def test_relative_l2_max_abs_and_top1() -> None:
    ref = Reference([[np.array([[3.0, 4.0]], np.float32)]])
    assert ref.norm() == 5.0 and ref.samples == 1 and ref.class_scores
    d = ref.compare([[np.array([[3.0, 5.0]], np.float32)]])
    # ‖(0, 1)‖ / ‖(3, 4)‖ = 1/5; the argmax (class 1) is unchanged
    assert d.rel_l2 == pytest.approx(0.2) and d.max_abs == 1.0 and d.top1 == 1.0 and d.samples == 1


def test_drift_over_selected_outputs_only() -> None:
    ref = Reference(
        [[np.array([[1.0], [1.0]], np.float32), np.array([[2.0], [0.0]], np.float32)]], ["logits", "aux"]
    )
    produced = [[np.array([[1.0], [2.0]], np.float32), np.array([[2.0], [0.0]], np.float32)]]
    d = ref.compare(produced)
    # all outputs: ‖(0, 1, 0, 0)‖ / ‖(1, 1, 2, 0)‖ = 1 / sqrt(6); logits alone 1 / sqrt(2); aux 0
    assert d.rel_l2 == pytest.approx(1 / np.sqrt(6))
    assert d.per_output == pytest.approx({"logits": 1 / np.sqrt(2), "aux": 0.0})
    assert d.energy_share == pytest.approx({"logits": 2 / 6, "aux": 4 / 6})
    ref.keep_only("aux")
    assert ref.select == [1] and ref.norm() == 2.0 and ref.compare(produced).rel_l2 == 0.0
    with pytest.raises(InputError, match="no floating-point output named nope"):
        ref.keep_only("nope")


def test_batches_for_covers_the_samples_asked() -> None:
    ref = Reference([[np.zeros((n, 1), np.float32)] for n in (2, 3, 4)])
    assert ref.samples == 9
    assert [ref.batches_for(s) for s in (None, 1, 2, 3, 5, 6, 100)] == [3, 1, 1, 2, 2, 3, 3]


def test_a_variant_with_fewer_batches_or_another_layout_is_refused() -> None:
    ref = Reference([[np.zeros((2, 1), np.float32)], [np.zeros((2, 1), np.float32)]])
    with pytest.raises(ValueError, match="produced 1 batches, expected 2"):
        ref.compare([[np.zeros((2, 1), np.float32)]])
    with pytest.raises(ValueError, match="differ in layout"):
        ref.compare([[np.zeros((2, 2), np.float32)]])


def test_ledger_counts_passes_in_samples() -> None:
    ledger = Ledger(10)
    ledger.add("audit + reference outputs", 10)
    ledger.add("probe a", 5)
    ledger.add("probe a", 2)
    assert ledger.passes == pytest.approx(1.7)
    assert ledger.by_purpose() == {"audit + reference outputs": 1.0, "probe a": 0.7}
