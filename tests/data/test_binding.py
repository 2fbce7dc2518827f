"""One input-binding path and one fixed-batch re-cut for both backends."""

from __future__ import annotations

import numpy as np
import pytest

from actaudit.data import InputSpec, declared_fixed_batch, rechunk
from actaudit.data.binding import feeds_by_name, match_inputs
from actaudit.errors import CalibrationError

X, Y = InputSpec("x", (None, 3)), InputSpec("y", (None, 2))


def test_arr_n_keys_are_positions_in_their_numeric_order() -> None:
    a, b, c = np.zeros(1), np.ones(1), np.full(1, 2.0)
    args, kwargs = match_inputs(([], {"arr_10": c, "arr_2": b, "arr_0": a}), [X, Y], all_required=False)
    assert kwargs == {} and [v[0] for v in args] == [0.0, 1.0, 2.0]


def test_a_lone_unknown_key_is_the_first_input() -> None:
    a = np.zeros((4, 3))
    assert match_inputs(([], {"image": a}), [X], all_required=True)[0][0] is a
    # a forward() with an optional second argument: still the first input
    assert match_inputs(([], {"image": a}), [X, Y], all_required=False)[0][0] is a
    # a graph needs both inputs: the unknown name is an error
    with pytest.raises(CalibrationError, match=r"\['image'\] are not inputs of the model"):
        match_inputs(([], {"image": a}), [X, Y], all_required=True)


def test_unknown_names_say_what_was_given_and_what_the_model_takes() -> None:
    with pytest.raises(CalibrationError) as e:
        match_inputs(([], {"image": 1, "extra": 2}), [X], all_required=False)
    assert "calibration inputs ['extra', 'image'] do not match the model's inputs ['x']" in e.value.message


def test_feeds_by_name_orders_inputs_and_finds_the_missing_or_doubled() -> None:
    a, b = np.zeros((4, 3)), np.zeros((4, 2))
    assert list(feeds_by_name(([], {"y": b, "x": a}), [X, Y])) == ["x", "y"]
    assert feeds_by_name(([a], {"y": b}), [X, Y])["y"] is b
    with pytest.raises(CalibrationError, match="needs inputs y"):
        feeds_by_name(([a], {}), [X, Y])
    with pytest.raises(CalibrationError, match="both by position and by name"):
        feeds_by_name(([a, b], {"x": a}), [X, Y])
    with pytest.raises(CalibrationError, match="3 positional inputs but the model takes 2"):
        feeds_by_name(([a, b, b], {}), [X, Y])


def test_declared_fixed_batch() -> None:
    # a free batch axis anywhere: nothing is fixed (a [1, 16] state is not a batch)
    assert declared_fixed_batch([X, InputSpec("state", (1, 16))]) == (None, frozenset())
    # no free axis: the largest leading dimension is the batch; the others go whole
    got = declared_fixed_batch([InputSpec("x", (4, 3)), InputSpec("state", (1, 16)), InputSpec("sr", ())])
    assert got == (4, frozenset({"state", "sr"}))
    assert declared_fixed_batch([InputSpec("x", None)]) == (None, frozenset())


def test_rechunk_carries_samples_over_batches_and_keeps_whole_inputs() -> None:
    state = np.array([9.0])
    batches = [([], {"x": np.arange(3), "s": state}), ([], {"x": np.arange(3, 8), "s": state})]
    warnings: list[str] = []
    chunks = list(rechunk(iter(batches), 3, whole={"s"}, warnings=warnings))
    assert [c[1]["x"].tolist() for c in chunks] == [[0, 1, 2], [3, 4, 5]]
    assert all(c[1]["s"] is state for c in chunks)
    assert warnings == ["the model's batch dimension is fixed at 3: 2 sample(s) were not used"]


def test_rechunk_with_fewer_samples_than_one_batch_is_an_error() -> None:
    with pytest.raises(CalibrationError, match="fixed at 4 but the calibration data has 3 sample"):
        list(rechunk(iter([([np.arange(3)], {})]), 4))
