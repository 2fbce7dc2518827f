"""The TorchScript in-graph statistics against the dispatch capture and against hand-computed oracles.

``ACTAUDIT_INGRAPH=0`` keeps every batch on the dispatch capture (the reference path). Each
case checks which path ran (``ingraph.last_choice`` / ``last_batches``), so a test that silently
fell back would fail instead of comparing the dispatch path with itself.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from actaudit.backends.torch import backend as tb
from actaudit.backends.torch import ingraph, ingraph_fx
from actaudit.data import from_arrays
from actaudit.stats import Capture

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
GRAPH_CASES = [(m, f) for m in EXPECTED["models"] for f in ("torchscript", "torchscript_traced", "export")]
COUNTS = ("low", "high", "nonfinite")


def _capture(
    monkeypatch: pytest.MonkeyPatch, tm: Any, arrays: list[np.ndarray], on: bool, batch: int, **kw: Any
) -> Capture:
    monkeypatch.setenv("ACTAUDIT_INGRAPH", "1" if on else "0")
    ingraph.last_batches = 0
    return tb.capture(
        tm, from_arrays(arrays, batch, "test"), samples=None, stuck_fraction=0.01, axis_overrides=[], **kw
    )


def _both(
    monkeypatch: pytest.MonkeyPatch, tm: Any, arrays: list[np.ndarray], batch: int = 8, **kw: Any
) -> tuple[Capture, Capture, int]:
    """(in-graph, dispatch) captures of the same data, and how many batches the first ran in the graph."""
    fast = _capture(monkeypatch, tm, arrays, True, batch, **kw)
    assert ingraph.last_choice == "graph"
    in_graph = ingraph.last_batches
    assert in_graph >= 1
    slow = _capture(monkeypatch, tm, arrays, False, batch, **kw)
    assert ingraph.last_choice.startswith("turned off")
    return fast, slow, in_graph


def _assert_same(a: Capture, b: Capture) -> None:
    assert (a.samples, a.batches) == (b.samples, b.batches)
    assert [u.to_dict() for u in a.uncovered] == [u.to_dict() for u in b.uncovered]
    assert [s.info.to_dict() for s in a.sites] == [s.info.to_dict() for s in b.sites]
    assert [s.info.model_output for s in a.sites] == [s.info.model_output for s in b.sites]
    for sa, sb in zip(a.sites, b.sites, strict=True):
        name = sa.info.name
        assert (sa.stats.elements, sa.stats.samples) == (sb.stats.elements, sb.stats.samples), name
        va, vb = sa.stats.vectors(), sb.stats.vectors()
        for k in va:
            if k in COUNTS:
                np.testing.assert_array_equal(va[k], vb[k], err_msg=f"{name}.{k}")
            else:
                np.testing.assert_allclose(va[k], vb[k], rtol=1e-5, atol=1e-6, err_msg=f"{name}.{k}")


def _fixture_arrays(model: str) -> list[np.ndarray]:
    calib = EXPECTED["models"][model]["calib"]
    if "npy" in calib:
        return [np.load(FIXTURES / calib["npy"])]
    with np.load(FIXTURES / calib["npz"]) as z:
        return [z[k] for k in EXPECTED["models"][model]["inputs"]]


@pytest.mark.parametrize(("model", "fmt"), GRAPH_CASES)
def test_every_compiled_fixture_gives_the_dispatch_capture_numbers(
    monkeypatch: pytest.MonkeyPatch, model: str, fmt: str
) -> None:
    tm = tb.load(FIXTURES / EXPECTED["models"][model]["files"][fmt])
    fast, slow, _ = _both(monkeypatch, tm, _fixture_arrays(model), batch=24)
    _assert_same(fast, slow)
    assert [s.info.name for s in fast.sites] == [s["name"] for s in EXPECTED["models"][model]["sites"]]


# -- models built here, with oracles that share no code with the capture ----------------------
class Deep(nn.Module):
    def __init__(self, depth: int = 60, width: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(layer(x))
        return x


def _scripted(m: nn.Module, tmp_path: Path) -> Any:
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(m.eval()), str(path))
    return tb.load(path)


def test_deep_mlp_matches_a_hand_computed_oracle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = Deep()
    with torch.no_grad():
        for i, layer in enumerate(m.layers):
            layer.bias[:4] = -50.0 if i % 7 == 3 else layer.bias[:4]  # dead units on some layers
    x = np.random.default_rng(1).standard_normal((100, 16)).astype(np.float32)
    tm = _scripted(m, tmp_path)
    fast, slow, _ = _both(monkeypatch, tm, [x], batch=16)
    _assert_same(fast, slow)
    assert len(ingraph.last_layout) < len(m.layers)  # small sites were stacked
    h = torch.from_numpy(x)
    for layer, site in zip(m.layers, fast.sites, strict=True):
        with torch.no_grad():
            z32 = layer(h)  # the same float32 layer; sums in float64 here
        z = z32.double()
        s = site.stats
        np.testing.assert_array_equal(s.low, (z <= 0).sum(0).numpy())
        np.testing.assert_allclose(s.min, z.min(0).values.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.pos_sum, z.clamp(min=0).sum(0).numpy(), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(s.neg_sq, (z.clamp(max=0) ** 2).sum(0).numpy(), rtol=1e-4, atol=1e-3)
        assert s.elements == 100 and s.samples == 100
        h = z32.clamp(min=0)
    assert all((fast.sites[i].stats.low == 100).sum() >= 4 for i in range(3, len(m.layers), 7))


class Cnn(nn.Module):
    """In-place ReLUs, a residual add, batch norm, a reused activation module and a tanh head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv1(x)))
        y = self.relu(self.conv2(y) + y)
        return torch.tanh(self.head(y.mean((2, 3))))


def test_cnn_with_in_place_and_reused_relus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = Cnn()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.conv1.bias[:2] = -40.0
    x = np.random.default_rng(2).standard_normal((50, 3, 12, 12)).astype(np.float32)
    tm = _scripted(m, tmp_path)
    fast, slow, _ = _both(monkeypatch, tm, [x], batch=16)
    _assert_same(fast, slow)
    assert [s.info.name for s in fast.sites] == ["relu#0", "relu#1", "head.tanh"]
    with torch.no_grad():  # oracle: the first pre-activation from the eager modules
        z = m.bn(m.conv1(torch.from_numpy(x)))
    np.testing.assert_array_equal(fast.sites[0].stats.low, (z <= 0).sum((0, 2, 3)).numpy())
    assert fast.sites[0].stats.elements == 50 * 12 * 12
    assert list(fast.sites[0].stats.low[:2]) == [50 * 144, 50 * 144]


class WritesBack(nn.Module):
    """The pre-activation is written in place after the activation read it (a stacked site must copy it)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.a(x)
        y = torch.relu(z)
        z.mul_(-3.0)
        w = self.b(y + z)
        return torch.relu(w) + torch.relu_(w)


def test_values_written_after_the_activation_do_not_leak_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    torch.manual_seed(3)
    m = WritesBack()
    x = np.random.default_rng(3).standard_normal((40, 6)).astype(np.float32)
    tm = _scripted(m, tmp_path)
    fast, slow, _ = _both(monkeypatch, tm, [x], batch=8)
    _assert_same(fast, slow)
    assert ingraph.last_layout == [3]  # all three sites in one stack
    with torch.no_grad():
        z = m.a(torch.from_numpy(x))
    np.testing.assert_allclose(fast.sites[0].stats.max, z.max(0).values.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fast.sites[0].stats.low, (z <= 0).sum(0).numpy())


def test_nan_counts_and_a_final_batch_of_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch.manual_seed(4)
    m = Deep(depth=3, width=5)
    x = np.random.default_rng(4).standard_normal((33, 5)).astype(np.float32)
    x[20, 2] = np.nan  # a later batch (the first is 8 samples)
    x[30, 0] = np.inf
    tm = _scripted(m, tmp_path)
    fast, slow, in_graph = _both(monkeypatch, tm, [x], batch=8)  # 33 = 4 × 8 + 1: the last one is replayed
    _assert_same(fast, slow)
    assert in_graph == 3
    first = fast.sites[0].stats
    assert first.nonfinite.sum() > 0 and first.elements == 33


def test_recorded_outputs_are_the_model_outputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    m = Deep(depth=4, width=6)
    x = np.random.default_rng(5).standard_normal((30, 6)).astype(np.float32)
    tm = _scripted(m, tmp_path)
    fast, slow, _ = _both(monkeypatch, tm, [x], batch=8, keep_outputs=True)
    assert fast.outputs is not None and slow.outputs is not None
    assert len(fast.outputs) == len(slow.outputs) == 4
    for a, b in zip(fast.outputs, slow.outputs, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    with torch.no_grad():
        np.testing.assert_allclose(
            np.concatenate([o[0] for o in fast.outputs]), m(torch.from_numpy(x)).numpy()
        )


class Looped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            x = torch.tanh(self.lin(x))
        return x


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if bool(y.sum() > 1e9):
            return torch.sigmoid(y)
        return torch.relu(y)


@pytest.mark.parametrize("cls", [Looped, Branchy])
def test_control_flow_keeps_the_dispatch_capture(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cls: type[nn.Module]
) -> None:
    torch.manual_seed(6)
    m = cls()
    x = np.random.default_rng(6).standard_normal((24, 4)).astype(np.float32)
    tm = _scripted(m, tmp_path)
    cap = _capture(monkeypatch, tm, [x], True, 8)
    assert ingraph.last_choice not in ("", "graph")
    assert ingraph.last_batches == 0
    ref = _capture(monkeypatch, tm, [x], False, 8)
    _assert_same(cap, ref)
    assert cap.sites and all(s.stats.samples == 24 for s in cap.sites)


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_the_instrumented_graph_adds_only_statistics_nodes(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """Nothing new from the archive runs: the copy holds the module's own nodes plus ours."""
    built: list[ingraph.InGraph] = []
    real = ingraph_fx.plan

    def keep(module: Any, rec: Any) -> ingraph.InGraph | None:
        got = real(module, rec)
        if got is not None:
            built.append(got)
        return got

    monkeypatch.setattr(ingraph_fx, "plan", keep)
    tm = tb.load(FIXTURES / EXPECTED["models"]["functional_zoo"]["files"][fmt])
    _capture(monkeypatch, tm, _fixture_arrays("functional_zoo"), True, 32)
    assert len(built) == 1
    if fmt == "torchscript":
        original = tm.module.forward.graph.copy()
        torch._C._jit_pass_inline(original)
        before = Counter(n.kind() for n in original.nodes())
        after = Counter(n.kind() for n in built[0].fn.graph.nodes())
        ours = {"actaudit_ingraph::stats", "aten::stack", "aten::clone"}
        ours |= {"prim::ListConstruct", "prim::TupleConstruct", "prim::Constant"}
    else:
        before = Counter(str(n.target) for n in tm.module.graph.nodes)
        after = Counter(str(n.target) for n in built[0].fn.graph.nodes)
        ours = {"actaudit_ingraph.stats.default", "aten.stack.default", "aten.clone.default"}
        assert built[0].fn is not tm.module
    added = after - before
    assert set(added) <= ours
    stats = next(k for k in ours if "stats" in k)
    assert added[stats] == len(built[0].targets) > 1
    assert not before - after  # nothing of the module's own was dropped
