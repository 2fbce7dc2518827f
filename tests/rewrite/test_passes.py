"""An ONNX rewrite runs the calibration data once for the audit and its reference outputs.

The batches drawn from the caller's data are counted: the audit pass keeps the model's
outputs, so a rewrite at a fixed slope costs that pass plus one drift measurement.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from actaudit.prune import prune
from actaudit.rewrite import rewrite

BATCHES, BATCH = 5, 8


def _model(path: Path) -> Path:
    """x[N,4] → MatMul → Add → Relu (unit 0 dead: bias −100) → MatMul → y[N,2]."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3)).astype(np.float32)
    b1 = np.array([-100.0, 0.1, 0.2], np.float32)
    w2 = rng.standard_normal((3, 2)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["z"]),
        helper.make_node("Relu", ["z"], ["a"], name="relu"),
        helper.make_node("MatMul", ["a", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "passes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


class Counted:
    """Re-iterable calibration batches that count every batch handed out."""

    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self.batches = [rng.standard_normal((BATCH, 4)).astype(np.float32) for _ in range(BATCHES)]
        self.drawn = 0

    def __iter__(self) -> Iterator[Any]:
        for b in self.batches:
            self.drawn += 1
            yield b


def test_onnx_rewrite_runs_the_data_once_for_audit_and_reference(tmp_path: Path) -> None:
    data = Counted()
    rep = rewrite(_model(tmp_path / "m.onnx"), data, mode="deploy", to="leaky", alpha=0.05)
    assert rep.sites[0].status == "rewritten" and rep.sites[0].dead == 1
    # one pass for audit + reference outputs, one to measure the fixed slope: 2 × 5 batches
    assert data.drawn == 2 * BATCHES
    assert rep.search is not None
    assert rep.search["passes_by_purpose"] == {"audit + reference outputs": 1.0, "measure": 1.0}


def test_onnx_prune_takes_its_reference_from_the_audit_pass(tmp_path: Path) -> None:
    data = Counted()
    rep = prune(_model(tmp_path / "m.onnx"), data)
    assert rep.sites[0].removed == [0]
    # audit + reference outputs, the input ranges, the pruned variant: 3 × 5 batches
    assert data.drawn == 3 * BATCHES
