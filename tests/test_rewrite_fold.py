"""The format-neutral bias fold (actaudit.edit.fold), on chains described by hand; numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from actaudit.edit import fold
from actaudit.edit.slopes import SurgeryResult


def _chain(links: list[fold.Link]) -> fold.Folded | fold.Refused:
    return _run(links, unit_axis=1, sample_shape=(2,), shift=[1.0, 2.0])


def _run(
    links: list[fold.Link], *, unit_axis: int, sample_shape: tuple[int, ...], shift: list[float]
) -> fold.Folded | fold.Refused:
    def step(i: int) -> tuple[fold.Link, int]:
        return links[i], i + 1

    return fold.fold(np.array(shift), unit_axis, sample_shape, 0, step)


def _consumer(kind: str, weight: list, bias: list | None = None, **kw: object) -> fold.Consumer:
    seen: list[np.ndarray] = []
    return fold.Consumer(
        "next bias",
        kind,
        np.array(weight, dtype=np.float32),
        None if bias is None else np.array(bias, dtype=np.float32),
        seen.append,
        **kw,  # type: ignore[arg-type]
    )


def test_linear_consumer_gets_w_times_shift_subtracted() -> None:
    # W·[1, 2] = [1·1 + 0·2, 3·1 − 1·2, .5·1 + .5·2] = [1, 1, 1.5]
    got = _chain([_consumer("linear", [[1, 0], [3, -1], [0.5, 0.5]], [10, 20, 30])])
    assert isinstance(got, fold.Folded) and got.exact
    assert got.bias.dtype == np.float32 and got.bias.tolist() == [9.0, 19.0, 28.5]
    assert got.note == "next bias"


def test_matmul_weight_is_in_by_out_and_a_missing_bias_starts_at_zero() -> None:
    got = _chain([_consumer("matmul", [[1, 3, 0.5], [0, -1, 0.5]])])
    assert isinstance(got, fold.Folded)
    assert got.bias.tolist() == [-1.0, -1.0, -1.5]


def test_gemm_scale_and_a_scalar_bias() -> None:
    # Gemm alpha/beta = 2: the bias moves by 2·W·s = 2·[1, 1, 1.5]; a scalar C becomes one value per output
    got = _chain([_consumer("linear", [[1, 0], [3, -1], [0.5, 0.5]], [1], scale=2.0)])
    assert isinstance(got, fold.Folded)
    assert got.bias.tolist() == [-1.0, -1.0, -2.0]


def test_conv_without_padding_is_exact() -> None:
    # one output, 2×2 kernel: channel 0 all 1 (sum 4), channel 1 all 0.5 (sum 2): 4·1 + 2·2 = 8
    w = [[[[1, 1], [1, 1]], [[0.5, 0.5], [0.5, 0.5]]]]
    got = _run([_consumer("conv", w, [1])], unit_axis=1, sample_shape=(2, 5, 5), shift=[1, 2])
    assert isinstance(got, fold.Folded) and got.exact
    assert got.bias.tolist() == [-7.0]
    assert got.note == "next bias"


def test_conv_with_zero_padding_folds_but_is_approximate() -> None:
    w = [[[[1, 1], [1, 1]], [[0.5, 0.5], [0.5, 0.5]]]]
    got = _run([_consumer("conv", w, [1], padded=True)], unit_axis=1, sample_shape=(2, 5, 5), shift=[1, 2])
    assert isinstance(got, fold.Folded) and not got.exact
    assert got.bias.tolist() == [-7.0]
    assert got.note == "next bias (approximate at zero-padded borders)"


def test_grouped_conv_sums_within_each_group() -> None:
    # groups 2, weight [2, 2, 1] of ones: output 0 sees units 0, 1 (1 + 2), output 1 units 2, 3 (3 + 4)
    got = _run(
        [_consumer("conv", np.ones((2, 2, 1)).tolist(), [0, 0], groups=2)],
        unit_axis=1,
        sample_shape=(4, 6),
        shift=[1, 2, 3, 4],
    )
    assert isinstance(got, fold.Folded) and got.bias.tolist() == [-3.0, -7.0]


def test_residual_add_or_a_second_reader_stops_the_fold() -> None:
    got = _chain([fold.Other("add"), _consumer("linear", [[1, 1]])])
    assert isinstance(got, fold.Refused) and got.reason == "the next op is add, not a conv or linear"
    got = _chain([fold.Fanout(2)])
    assert isinstance(got, fold.Refused)
    assert got.reason == "its output feeds 2 ops; the fold needs exactly one linear consumer"


def test_flatten_spreads_each_channel_over_its_positions() -> None:
    # [N, 2, 2, 1] → [N, 4]: shift [1, 2] becomes [1, 1, 2, 2]; W·that = 1 + 2 + 6 + 8 = 17
    links: list[fold.Link] = [
        fold.Pass(),
        fold.Flatten("flatten", True),
        _consumer("linear", [[1, 2, 3, 4]], [0]),
    ]
    got = _run(links, unit_axis=1, sample_shape=(2, 2, 1), shift=[1, 2])
    assert isinstance(got, fold.Folded) and got.bias.tolist() == [-17.0]


@pytest.mark.parametrize(
    ("target", "ok"), [((None, -1), True), ((8, 4), True), ((None, 3), False), (None, False)]
)
def test_reshape_to_batch_by_features_is_a_flatten(target: tuple[int | None, ...] | None, ok: bool) -> None:
    links: list[fold.Link] = [fold.Reshape("view", target), _consumer("linear", [[1, 2, 3, 4]], [0])]
    got = _run(links, unit_axis=1, sample_shape=(2, 2, 1), shift=[1, 2])
    if ok:
        assert isinstance(got, fold.Folded) and got.bias.tolist() == [-17.0]
    else:
        assert (
            isinstance(got, fold.Refused)
            and got.reason == "a view other than [N, C·H·W] sits before the next op"
        )


def test_global_pool_then_flatten_keeps_one_feature_per_channel() -> None:
    # the mean of a per-channel constant is that constant: W·[1, 2] = 3·1 + 4·2 = 11
    links: list[fold.Link] = [
        fold.Pool("avgpool", True),
        fold.Flatten("flatten", True),
        _consumer("linear", [[3, 4]]),
    ]
    got = _run(links, unit_axis=1, sample_shape=(2, 7, 7), shift=[1, 2])
    assert isinstance(got, fold.Folded) and got.bias.tolist() == [-11.0]
    got = _run([fold.Pool("avgpool", False)], unit_axis=1, sample_shape=(2, 7, 7), shift=[1, 2])
    assert isinstance(got, fold.Refused) and "more than one position" in got.reason


def test_layout_rules() -> None:
    # a conv after a flatten, a linear on channels that are not its features, a flatten of a token-layout site
    conv = _consumer("conv", np.ones((1, 4, 1)).tolist())
    got = _run([fold.Flatten("flatten", True), conv], unit_axis=1, sample_shape=(2, 2), shift=[1, 2])
    assert isinstance(got, fold.Refused) and "input channels" in got.reason
    got = _run([_consumer("linear", [[1, 1]])], unit_axis=1, sample_shape=(2, 5), shift=[1, 2])
    assert isinstance(got, fold.Refused) and "input features" in got.reason
    got = _run([fold.Flatten("flatten", True)], unit_axis=2, sample_shape=(5, 2), shift=[1, 2])
    assert isinstance(got, fold.Refused) and got.reason == "the next op is flatten, not a conv or linear"
    got = _run([fold.Flatten("flatten", False)], unit_axis=1, sample_shape=(2, 5), shift=[1, 2])
    assert isinstance(got, fold.Refused) and "other than flatten(x, 1)" in got.reason
    # tokens × features into a Linear over the features: units on the last axis
    got = _run([_consumer("linear", [[1, 1]], [0])], unit_axis=2, sample_shape=(5, 2), shift=[1, 2])
    assert isinstance(got, fold.Folded) and got.bias.tolist() == [-3.0]


def test_a_weight_of_another_size_is_refused_not_crashed() -> None:
    got = _chain([_consumer("linear", [[1, 2, 3]])])
    assert (
        isinstance(got, fold.Refused) and got.reason == "the next op takes 3 inputs where this site gives 2"
    )


def test_the_same_look_ahead_for_every_walker() -> None:
    consumer = _consumer("linear", [[1, 1]])
    got = _chain([*[fold.Pass()] * (fold.LOOKAHEAD - 1), consumer])
    assert isinstance(got, fold.Folded) and got.bias.tolist() == [-3.0]
    got = _chain([*[fold.Pass()] * fold.LOOKAHEAD, consumer])
    assert isinstance(got, fold.Refused) and got.reason == "no conv or linear within a few ops"


def test_settle_writes_the_bias_and_records_the_outcome() -> None:
    written: list[np.ndarray] = []
    c = fold.Consumer("fc bias", "linear", np.array([[1.0, 1.0]]), np.array([0.5]), written.append)
    res = SurgeryResult(model=None)
    res.not_compensated["a"] = "an earlier reason"
    fold.settle(res, "a", _chain([c]))
    assert [w.tolist() for w in written] == [[-2.5]]
    assert res.compensated == {"a": "fc bias"} and "a" not in res.not_compensated
    fold.settle(res, "b", _chain([fold.Other("tanh")]))
    assert res.not_compensated["b"] == "the next op is tanh, not a conv or linear" and len(written) == 1


def test_the_rule_imports_neither_torch_nor_onnx() -> None:
    import subprocess
    import sys

    code = "import sys, actaudit.edit.fold; print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
