"""Small sites of one shape measured together (``actaudit.backends.onnx.pack``) count what NumPy counts.

The reference is NumPy on the promoted pre-activation tensors (``check_against_numpy``),
and the same model measured site by site; a fast batch, a careful batch (NaN in the
data) and a stale static shape (the pack's Concat fails, the backend falls back) are
all covered.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_onnx_capture import check_against_numpy

from actaudit.backends.onnx import backend
from actaudit.backends.onnx import capture as onnx_capture
from actaudit.backends.onnx import pack as onnx_pack
from actaudit.data import from_arrays
from actaudit.stats import Capture

ACTS = ["Relu", "Sigmoid", "Tanh", "Clip", "Relu", "HardSigmoid", "Relu", "Softsign"]


def mlp(width: int = 8, batch: int | str = "N", dead: int = 2) -> onnx.ModelProto:
    """MatMul + Add + activation per layer; layer 0's first ``dead`` units have a bias of -100."""
    rng = np.random.default_rng(3)
    nodes, inits = [], [numpy_helper.from_array(np.array(0, np.float32), "lo")]
    inits.append(numpy_helper.from_array(np.array(6, np.float32), "hi"))
    cur = "x"
    for i, act in enumerate(ACTS):
        w = (rng.standard_normal((width, width)) * 0.7).astype(np.float32)
        b = (rng.standard_normal(width) * 0.3).astype(np.float32)
        if i == 0:
            b[:dead] = -100
        if act == "Sigmoid":
            b[-1] = 40  # saturated high
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"], name=f"add{i}"))
        ins = [f"z{i}", "lo", "hi"] if act == "Clip" else [f"z{i}"]
        nodes.append(helper.make_node(act, ins, [f"a{i}"], name=f"act{i}"))
        cur = f"a{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [batch, width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def capture(model: onnx.ModelProto, x: np.ndarray, *, pack: bool, batch: int = 8) -> Capture:
    handle = backend.load(model)
    runner = onnx_capture._Runner(handle, 0.01, [], pack=pack)
    runner.session(False)
    for i in range(0, len(x), batch):
        runner.run({"x": x[i : i + batch]}, min(batch, len(x) - i))
    runner.flush()
    return Capture(
        sites=[onnx_capture.SiteResult(lv.info, lv.stats) for lv in runner.live],
        samples=len(x),
        batches=runner.calls,
    )


def _same(a: Capture, b: Capture) -> None:
    assert [s.info.name for s in a.sites] == [s.info.name for s in b.sites]
    for p, q in zip(a.sites, b.sites, strict=True):
        assert p.info == q.info
        assert (p.stats.elements, p.stats.samples) == (q.stats.elements, q.stats.samples)
        for k in ("low", "high", "nonfinite", "min", "max"):
            np.testing.assert_array_equal(
                getattr(p.stats, k), getattr(q.stats, k), err_msg=f"{p.info.name} {k}"
            )
        for k in ("neg_sum", "neg_sq", "pos_sum", "pos_sq"):
            np.testing.assert_allclose(getattr(p.stats, k), getattr(q.stats, k), rtol=1e-5, atol=1e-5)


def test_the_sites_go_into_one_pack() -> None:
    handle = backend.load(mlp())
    runner = onnx_capture._Runner(handle, 0.01, [])
    _, outs, lives = runner.session(False)
    packs = [acc.pack for acc in runner.accs]
    assert len(packs) == 1 and [m.units for m in packs[0].members] == [8] * len(ACTS)
    assert all(lv.packed is not None for lv in lives)
    assert all(k < 0 for k in outs)  # no per-site outputs left


def test_packed_counters_match_numpy_and_the_per_site_path() -> None:
    model = mlp()
    x = np.random.default_rng(4).standard_normal((20, 8)).astype(np.float32) * 2
    packed = capture(model, x, pack=True)
    check_against_numpy(model, packed, [{"x": x[i : i + 8]} for i in range(0, 20, 8)])
    _same(packed, capture(model, x, pack=False))
    relu0 = packed.sites[0]
    assert relu0.info.kind == "relu" and (relu0.stats.low[:2] == 20).all()  # dead by construction
    sig = packed.sites[1]
    assert sig.info.kind == "sigmoid" and sig.stats.high[-1] == 20  # saturated by construction


def test_a_careful_batch_folds_into_the_pack() -> None:
    """NaN in one batch: that batch is measured site by site, the others in the pack."""
    model = mlp()
    x = np.random.default_rng(5).standard_normal((24, 8)).astype(np.float32)
    x[9, 3] = np.nan
    packed = capture(model, x, pack=True)
    assert packed.sites[0].stats.nonfinite.sum() > 0
    _same(packed, capture(model, x, pack=False))


def test_the_audit_falls_back_when_a_pack_cannot_concatenate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leading dimensions that differ at run time (a Concat error): the first batch rebuilds without packs."""
    model = mlp()
    x = np.random.default_rng(6).standard_normal((16, 8)).astype(np.float32)
    want = capture(model, x, pack=False, batch=5)
    real = onnx_pack.emit_pack

    def broken(em, pack, plans):  # type: ignore[no-untyped-def]
        real(em, pack, plans)
        x0 = plans[pack.members[0].plan].site.x  # [N, 8] next to [8, N]: fails unless N == 8
        bad = em.node("Concat", [x0, em.node("Transpose", [x0], perm=[1, 0])], axis=0)
        pack.names["min"] = em.reduce("ReduceMin", bad, axes=(0,))

    monkeypatch.setattr(onnx_pack, "emit_pack", broken)
    handle = backend.load(model)
    cap = backend.capture(
        handle, from_arrays([x], 5, "test"), samples=None, stuck_fraction=0.01, axis_overrides=[]
    )
    _same(cap, want)
