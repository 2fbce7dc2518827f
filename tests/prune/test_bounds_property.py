"""Property tests: no sampled input ever leaves a bound, for random networks over every supported op.

The evaluator is onnxruntime (float32, its own kernels and fusions), sharing no code with
the propagation; the inputs are uniform points, random vertices and the two corners of a
random box. Every value of the network is checked, not only its outputs, and every value
must get a finite bound (a vacuous infinite bound would pass any check).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import random_nets as rn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actaudit.backends.onnx.prune import to_ir
from actaudit.prune import linear
from actaudit.prune.interval import propagate
from actaudit.prune.linear import propagate_linear

NETS = st.fixed_dictionaries(
    {
        "spatial": st.lists(st.sampled_from(rn.SPATIAL), min_size=1, max_size=5),
        "head": st.sampled_from(rn.HEADS),
        "dense": st.lists(st.sampled_from(rn.DENSE), min_size=1, max_size=4),
        "seed": st.integers(0, 2**31 - 1),
        "channels": st.integers(1, 3),
        "size": st.integers(3, 6),
    }
)
BOXES = st.tuples(st.floats(-4, 2), st.floats(0, 5)).map(lambda t: (t[0], t[0] + t[1]))


def _run(model: object, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"x": x}), strict=True))


def check_sound(net: dict, box: tuple[float, float], bounds_of: object) -> int:
    """Every sampled value inside its bound; the number of values checked."""
    model = rn.build(**net)
    shape = (net["channels"], net["size"], net["size"])
    graph = to_ir(model, {"x": shape})
    kinds = {op.kind for op in graph.ops}
    assert "other" not in kinds, [op.label for op in graph.ops if op.kind == "other"]
    env = bounds_of(graph, {"x": box}, {"x": (1, *shape)})  # type: ignore[operator]
    x = rn.samples(box[0], box[1], shape, 48, net["seed"])
    got = _run(model, x)
    checked = 0
    for name, y in got.items():
        b = env[name]
        assert np.all(np.isfinite(b.lo)) and np.all(np.isfinite(b.hi)), name
        lo, hi = b.lo.reshape(1, *y.shape[1:]), b.hi.reshape(1, *y.shape[1:])
        below, above = y < lo, y > hi
        assert not below.any() and not above.any(), (
            f"{name}: {int(below.sum() + above.sum())} values outside; worst "
            f"{float(np.max(np.maximum(lo - y, y - hi)))}"
        )
        checked += 1
    return checked


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=NETS, box=BOXES)
def test_interval_bounds_hold(net: dict, box: tuple[float, float]) -> None:
    assert check_sound(net, box, propagate) >= 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=NETS, box=BOXES)
def test_linear_bounds_hold(net: dict, box: tuple[float, float]) -> None:
    assert check_sound(net, box, propagate_linear) >= 3


def test_linear_bounds_are_tighter_on_a_relu_mlp() -> None:
    """On a random ReLU MLP the linear relaxation beats intervals (and never loses: it intersects)."""
    net = {"spatial": ["identity"], "head": "flatten", "dense": ["gemm", "act", "gemm", "act", "gemm"]}
    wins = 0
    for seed in range(8):
        model = rn.build(**net, seed=seed, channels=2, size=3)
        graph = to_ir(model, {"x": (2, 3, 3)})
        a = propagate(graph, {"x": (-1.0, 1.0)}, {"x": (1, 2, 3, 3)})
        b = propagate_linear(graph, {"x": (-1.0, 1.0)}, {"x": (1, 2, 3, 3)})
        out = graph.outputs[-1]
        assert np.all(b[out].lo >= a[out].lo) and np.all(b[out].hi <= a[out].hi)
        wins += int(np.sum(b[out].hi - b[out].lo) < 0.99 * np.sum(a[out].hi - a[out].lo))
    assert wins >= 4


PASSES = {
    "residual add": (["residual_add"], "flatten", ["gemm"], "Relu"),
    "gate mul": (["gate_mul"], "flatten", ["gemm"], "Sigmoid"),
    "hardswish by hand": (["conv", "self_gate"], "flatten", ["gemm"], "Relu"),
    "max pool": (["conv", "act", "maxpool"], "flatten", ["gemm"], "Relu"),
    "average pool": (["conv", "act", "avgpool"], "flatten", ["gemm"], "Relu"),
    "global max": (["conv", "act"], "globalmax", ["gemm"], "Relu"),
    "concat": (["conv", "concat"], "flatten", ["gemm"], "Relu"),
    "sigmoid": (["identity"], "flatten", ["gemm", "act", "gemm"], "Sigmoid"),
    "tanh": (["identity"], "flatten", ["gemm", "act", "gemm"], "Tanh"),
    "elu": (["identity"], "flatten", ["gemm", "act", "gemm"], "Elu"),
    "hardswish": (["identity"], "flatten", ["gemm", "act", "gemm"], "HardSwish"),
}


@pytest.mark.parametrize("case", list(PASSES))
def test_linear_bounds_pass_the_op(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The substitution goes through the op: the last layer's linear bound is tighter than its
    interval bound on most seeds (it stopped there before, where both were equal), never looser.
    A small box keeps the activations near their linear parts, where relaxations gain most."""
    spatial, head, dense, act = PASSES[case]
    monkeypatch.setattr(rn, "ACTS", (act,))
    wins = 0
    for seed in range(6):
        model = rn.build(spatial, head, dense, seed=seed, channels=2, size=4)
        graph = to_ir(model, {"x": (2, 4, 4)})
        a = propagate(graph, {"x": (-0.25, 0.25)}, {"x": (1, 2, 4, 4)})
        b = propagate_linear(graph, {"x": (-0.25, 0.25)}, {"x": (1, 2, 4, 4)})
        out = graph.outputs[-1]
        assert np.all(b[out].lo >= a[out].lo) and np.all(b[out].hi <= a[out].hi)
        wins += int(np.sum(b[out].hi - b[out].lo) < 0.99 * np.sum(a[out].hi - a[out].lo))
    assert wins >= 3, wins


def test_optimised_relu_slopes_tighten_upper_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """α-CROWN's optimised lower slopes lower some upper bounds of a ReLU MLP below the fixed lines'
    (and never raise one: the best bound met is kept)."""
    net = {"spatial": ["identity"], "head": "flatten", "dense": ["gemm", "act", "gemm", "act", "gemm"]}
    monkeypatch.setattr(rn, "ACTS", ("Relu",))
    wins = 0
    for seed in range(6):
        model = rn.build(**net, seed=seed, channels=2, size=3)
        graph = to_ir(model, {"x": (2, 3, 3)})
        args = (graph, {"x": (-1.0, 1.0)}, {"x": (1, 2, 3, 3)})
        opt = propagate_linear(*args)
        with monkeypatch.context() as m:
            m.setattr(linear, "ALPHA_UNITS", 0)
            fixed = propagate_linear(*args)
        out = graph.outputs[-1]
        assert np.all(opt[out].hi <= fixed[out].hi)
        wins += int(np.sum(opt[out].hi) < np.sum(fixed[out].hi) - 1e-6)
    assert wins >= 3, wins
