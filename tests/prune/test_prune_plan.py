"""The backend-neutral planner on hand-built graphs: what blocks a cut, and the fold arithmetic."""

from __future__ import annotations

import numpy as np

from actaudit.edit.cuts import Candidate, plan
from actaudit.edit.graph import Graph, Op, Param
from actaudit.prune.interval import propagate, unit_upper


def _conv(
    name: str, x: str, y: str, o: int, i: int, *, groups: int = 1, pads: int = 0, bias: bool = True
) -> Op:
    rng = np.random.default_rng(len(name))
    params = {"weight": Param(f"{name}.w", rng.normal(0, 1, (o, i // groups, 1, 1)))}
    if bias:
        params["bias"] = Param(f"{name}.b", rng.normal(0, 1, (o,)))
    attrs = {
        "strides": [1, 1],
        "pads": [pads] * 4,
        "dilations": [1, 1],
        "groups": groups,
        "can_add_bias": True,
    }
    return Op(name, "conv", [x], [y], attrs, params)


def _relu(name: str, x: str, y: str) -> Op:
    return Op(name, "act", [x], [y], {"act": "relu"})


def _site(consts: dict[int, float]) -> Candidate:
    return Candidate("r", "a", "ra", 4, 1, 4, consts)


def _graph(*tail: Op, outputs: tuple[str, ...] = ("out",)) -> Graph:
    ops = [_conv("c1", "x", "a", 4, 3), _relu("r", "a", "ra"), *tail]
    return Graph(ops, ["x"], list(outputs), {"x": (1, 3, 2, 2), "a": (1, 4, 2, 2), "ra": (1, 4, 2, 2)})


def test_fold_is_weights_times_constant() -> None:
    g = _graph(_conv("c2", "ra", "out", 2, 4))
    plans, edits = plan(g, [_site({1: 0.0, 2: 6.0})])
    assert plans[0].removed == [1] and plans[0].folded == [2]
    w2 = g.ops[2].params["weight"].value
    b2 = g.ops[2].params["bias"].value
    np.testing.assert_allclose(edits.apply("c2.b"), b2 + 6.0 * w2[:, 2, 0, 0])
    assert edits.apply("c2.w").shape == (2, 2, 1, 1) and edits.apply("c1.w").shape == (2, 3, 1, 1)


def test_what_keeps_units() -> None:
    cases = {
        "grouped": (_conv("c2", "ra", "out", 4, 4, groups=2), "grouped convolution"),
        "output": (Op("id", "identity", ["ra"], ["out"]), "model output"),
        "mix": (Op("sm", "other", ["ra"], ["out"], {"op": "Softmax"}), "mixes or reshapes"),
        "concat": (Op("cat", "concat", ["ra", "ra"], ["out"], {"axis": 1}), "twice"),
    }
    for tail, why in cases.values():
        plans, edits = plan(_graph(tail), [_site({0: 0.0})])
        assert plans[0].removed == [] and why in plans[0].kept[0] and not edits.keys()
    # a zero-padding consumer takes a dead unit, but not a constant one
    plans, _ = plan(_graph(_conv("c2", "ra", "out", 2, 4, pads=1)), [_site({0: 0.0, 3: 6.0})])
    assert plans[0].removed == [0] and "zero-pads" in plans[0].kept[3]
    shared = _graph(_conv("c2", "ra", "out", 2, 4))
    shared.ops[0].params["weight"].shared = True
    plans, _ = plan(shared, [_site({0: 0.0})])
    assert "shared" in plans[0].kept[0]


def test_bounds_of_a_zero_weight_ignore_infinite_inputs() -> None:
    g = _graph(_conv("c2", "ra", "out", 2, 4))
    g.ops[0].params["weight"].value[1] = 0.0
    g.ops[0].params["bias"].value[1] = -0.5
    env = propagate(g, {"x": (-np.inf, np.inf)}, {"x": (1, 3, 2, 2)})
    ub = unit_upper(env["a"], 1)
    assert ub[1] <= -0.5 + 1e-6 and np.isinf(ub[[0, 2, 3]]).all()
