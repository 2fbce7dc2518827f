"""ReLU sites measured from their output (``relu_from_output``): the same verdicts, the exact fields equal.

The reference is NumPy on the pre-activation tensors promoted in a separate session
(``test_onnx_reference``), and the full statistics of the same model: fire counts,
positive moments and positive maxima agree; the minimum, the negative moments and a
maximum that is not positive are NaN (not measured), never a number; sites that are not
plain ReLUs keep their full statistics. Covered: a Conv+ReLU model, packs of rank-2 sites,
a careful batch (NaN in the data) and every ONNX fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from test_onnx_capture import cnn, images
from test_onnx_pack import mlp
from test_onnx_reference import COUNTERS, assert_matches, reference, run_tensors

from actaudit.backends.onnx import backend
from actaudit.backends.onnx import capture as onnx_capture
from actaudit.backends.onnx.sites import find_sites
from actaudit.data import from_arrays
from actaudit.stats import Capture
from actaudit.verdicts import Settings, classify

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
UNMEASURED = ("min", "neg_sum", "neg_sq")


def run(model: Any, data: Any, post: bool, batch: int = 8) -> Capture:
    handle = backend.load(model)
    source = data if hasattr(data, "batches") else from_arrays([data], batch, "test")
    return backend.capture(
        handle, source, samples=None, stuck_fraction=0.01, axis_overrides=[], relu_from_output=post
    )


def check_post_against_numpy(
    model: onnx.ModelProto, cap: Capture, batches: list[dict[str, np.ndarray]]
) -> int:
    """Post sites: exact fields equal NumPy's, the others NaN; other sites: everything equal. Returns post sites."""
    handle = backend.load(model)
    sites = {s.name: s for s in find_sites(handle.model.graph).sites}
    post = 0
    for res in cap.sites:
        site = sites[res.info.name]
        xs = [run_tensors(handle.model, [site.x], feeds)[site.x] for feeds in batches]
        ref = reference(xs, res.info.unit_axis, res.info.kind, res.info.params)
        st = res.stats
        if not np.isnan(st.min).all():
            assert_matches(st, ref, name=res.info.name)
            continue
        post += 1
        assert res.info.kind == "relu", res.info.name
        assert st.elements == ref["elements"]
        _assert_post(st, ref, res.info.name)
    return post


def test_conv_relu_from_its_output_matches_numpy() -> None:
    x = images(24)
    cap = run(cnn(), x, post=True)
    batches = [{"x": x[i : i + 8]} for i in range(0, 24, 8)]
    assert check_post_against_numpy(cnn(), cap, batches) == 1  # relu1; gate, relu6 (Clip), tanh in full
    relu1 = next(s for s in cap.sites if s.info.name == "relu1")
    dead = classify(relu1.info, relu1.stats, Settings()).dead_units
    assert dead == [1, 4]  # the channels given a bias of -100


@pytest.mark.parametrize("width", [8, 16])
def test_packed_relu_outputs_match_numpy(width: int) -> None:
    model = mlp(width)
    x = np.random.default_rng(5).standard_normal((40, width)).astype(np.float32)
    cap = run(model, x, post=True)
    batches = [{"x": x[i : i + 8]} for i in range(0, 40, 8)]
    assert check_post_against_numpy(model, cap, batches) == 3  # the three Relu layers


def test_a_careful_batch_keeps_unmeasured_fields_unknown() -> None:
    x = np.random.default_rng(6).standard_normal((24, 8)).astype(np.float32)
    x[9, 3] = np.nan  # batch 1 reruns with the careful (full) statistics
    full, post = run(mlp(), x, post=False), run(mlp(), x, post=True)
    for a, b in zip(full.sites, post.sites, strict=True):
        for k in COUNTERS:
            np.testing.assert_array_equal(
                getattr(a.stats, k), getattr(b.stats, k), err_msg=f"{a.info.name} {k}"
            )
        if a.info.kind == "relu":
            for k in UNMEASURED:
                assert np.isnan(getattr(b.stats, k)).all(), (a.info.name, k)


def _onnx_fixtures() -> list[tuple[str, str]]:
    out = []
    for name, m in EXPECTED["models"].items():
        for fmt, rel in m["files"].items():
            if rel.endswith(".onnx"):
                out.append((name, fmt))
    return out


@pytest.mark.parametrize(("name", "fmt"), _onnx_fixtures())
def test_fixture_verdicts_equal_with_and_without(name: str, fmt: str) -> None:
    m = EXPECTED["models"][name]
    calib = m["calib"]
    if "npy" in calib:
        x: Any = np.load(FIXTURES / calib["npy"])
    else:  # several inputs, by name
        with np.load(FIXTURES / calib["npz"]) as z:
            x = from_arrays({k: z[k] for k in z.files}, 16, "test")
    model = onnx.load(str(FIXTURES / m["files"][fmt]))
    full, post = run(model, x, post=False, batch=16), run(model, x, post=True, batch=16)
    assert [s.info.name for s in full.sites] == [s.info.name for s in post.sites]
    measured_post = 0
    for a, b in zip(full.sites, post.sites, strict=True):
        va, vb = classify(a.info, a.stats, Settings()), classify(b.info, b.stats, Settings())
        assert (va.dead_units, va.saturated_units, va.rarely_firing_units, va.never_positive_units) == (
            vb.dead_units,
            vb.saturated_units,
            vb.rarely_firing_units,
            vb.never_positive_units,
        ), a.info.name
        for k in COUNTERS:
            np.testing.assert_array_equal(
                getattr(a.stats, k), getattr(b.stats, k), err_msg=f"{a.info.name} {k}"
            )
        for k in ("pos_sum", "pos_sq"):
            np.testing.assert_allclose(getattr(a.stats, k), getattr(b.stats, k), rtol=1e-5, atol=1e-6)
        if np.isnan(b.stats.min).all():
            measured_post += 1
            fired = a.stats.max > 0
            np.testing.assert_allclose(b.stats.max[fired], a.stats.max[fired], rtol=1e-6)
            assert np.isnan(b.stats.max[~fired]).all()
        else:
            for k in ("min", "max", "neg_sum", "neg_sq"):
                np.testing.assert_allclose(getattr(a.stats, k), getattr(b.stats, k), rtol=1e-5, atol=1e-6)
    relus = sum(1 for s in full.sites if s.info.kind == "relu" and s.info.op == "Relu")
    assert measured_post == relus


def test_nothing_added_reads_the_pre_activation_of_a_post_site() -> None:
    """onnxruntime fuses Conv+Relu only when the Conv output has no other consumer."""
    from actaudit.backends.onnx.instrument import ReductionPlan, instrument, post_eligible
    from actaudit.kinds import Activation

    handle = backend.load(cnn())
    model = onnx.ModelProto()
    model.CopyFrom(handle.model)
    before = len(model.graph.node)
    plans = []
    for site in find_sites(model.graph).sites:
        thr = site.act.thresholds(0.01)
        rule = onnx_capture._axis_rule(site, [])[0]
        plan = ReductionPlan(site, rule, thr.low, thr.high)
        plan.post = post_eligible(site, thr.low, thr.high)
        plans.append(plan)
    assert [p.post for p in plans] == [True, False, False, False]  # relu1; not the Sigmoid, Clip, Tanh
    assert not post_eligible(plans[0].site, -1.0, float("inf"))  # another threshold: not a plain ReLU
    assert Activation("relu").thresholds(0.01).low == 0.0
    instrument(model, plans, False)
    added = model.graph.node[before:]
    assert not [n.name for n in added if plans[0].site.x in n.input]
    assert any(plans[0].site.relu_out in n.input for n in added)


def test_cli_option_nulls_only_what_it_does_not_measure() -> None:
    m = EXPECTED["models"]["cnn_dead"]
    args = [sys.executable, "-m", "actaudit", "audit", str(FIXTURES / m["files"]["onnx"])]
    args += ["--calib", str(FIXTURES / m["calib"]["npy"]), "--format", "json", "--per-unit"]
    env = {**os.environ, "PYTHONPATH": str(FIXTURES.parent)}
    full, post = (
        json.loads(subprocess.run(args + extra, capture_output=True, env=env, check=False).stdout)
        for extra in ([], ["--relu-from-output"])
    )
    assert "notes" not in full or not any("from their output" in n for n in full["notes"])
    assert any("ReLU sites measured from their output" in n for n in post["notes"])
    assert full["summary"] == post["summary"]
    for a, b in zip(full["sites"], post["sites"], strict=True):
        assert a["dead_units"] == b["dead_units"] and a["fire_rate"] == b["fire_rate"], a["name"]
        if a["op"] == "Relu":
            assert b["pre_activation"]["min"] is None and b["per_unit"]["neg_mean"] == [None] * a["units"]
            assert b["pre_activation"]["max"] == a["pre_activation"]["max"]  # some unit fired
            fired = [x for x in a["per_unit"]["max"] if x > 0]
            assert [x for x in b["per_unit"]["max"] if x is not None] == fired
        else:
            assert a["pre_activation"] == b["pre_activation"] and a["per_unit"] == b["per_unit"]


def test_capture_for_rewrite_and_prune_is_always_full() -> None:
    """``keep_outputs`` (the reference run of rewrite and prune) ignores ``relu_from_output``."""
    from actaudit.loading import load_model
    from actaudit.options import AuditOptions

    opts = AuditOptions(relu_from_output=True)
    loaded = load_model(cnn(), opts)
    source = from_arrays([images(16)], 8, "test")
    cap = loaded.capture(source, opts, keep_outputs=True)
    assert all(np.isfinite(s.stats.min).all() and np.isfinite(s.stats.neg_sum).all() for s in cap.sites)
    cap = loaded.capture(source, opts)
    assert np.isnan(next(s for s in cap.sites if s.info.name == "relu1").stats.min).all()


def test_shards_measured_from_the_output_merge_to_the_same_verdicts(tmp_path: Path) -> None:
    """Unmeasured fields travel through shard files as null and stay unmeasured after the merge."""
    m = EXPECTED["models"]["cnn_dead"]
    base = [sys.executable, "-m", "actaudit"]
    data = ["--calib", str(FIXTURES / m["calib"]["npy"]), "--format", "json", "-q"]
    model = str(FIXTURES / m["files"]["onnx"])
    env = {**os.environ, "PYTHONPATH": str(FIXTURES.parent)}
    for k in (1, 2):
        out = ["-o", str(tmp_path / f"s{k}.json"), "--shard", f"{k}/2", "--relu-from-output"]
        subprocess.run([*base, "audit", model, *data, *out], env=env, check=True)
    shards = [str(tmp_path / "s1.json"), str(tmp_path / "s2.json")]
    merged = json.loads(
        subprocess.run(
            [*base, "merge", *shards, "--format", "json", "-q"], env=env, capture_output=True
        ).stdout
    )
    full = json.loads(subprocess.run([*base, "audit", model, *data], env=env, capture_output=True).stdout)
    for a, b in zip(full["sites"], merged["sites"], strict=True):
        assert (a["name"], a["dead_units"], a["fire_rate"]) == (b["name"], b["dead_units"], b["fire_rate"])
        assert b["pre_activation"]["max"] == a["pre_activation"]["max"]
        if a["op"] == "Relu":
            assert b["pre_activation"]["min"] is None
        else:
            assert b["pre_activation"] == a["pre_activation"]


def _assert_post(st: Any, ref: dict[str, Any], name: str) -> None:
    """The exact fields equal NumPy's on the pre-activations; the others are NaN."""
    for k in COUNTERS:
        np.testing.assert_array_equal(getattr(st, k), ref[k], err_msg=f"{name} {k}")
    for k in UNMEASURED:
        assert np.isnan(getattr(st, k)).all(), (name, k)
    fired = ref["max"] > 0
    np.testing.assert_allclose(st.max[fired], ref["max"][fired], rtol=1e-6)
    assert np.isnan(st.max[~fired]).all(), name
    for k in ("pos_sum", "pos_sq"):
        np.testing.assert_allclose(getattr(st, k), ref[k], rtol=1e-5, atol=1e-6, err_msg=f"{name} {k}")


@pytest.mark.parametrize("opset", [13, 18])
def test_if_branches_and_loop_bodies_from_their_output(opset: int) -> None:
    """ReLU sites inside an If branch and a Loop body (accumulated over iterations) read their output."""
    from test_onnx_capture import _batches, _loop_reference, branchy

    x = np.random.default_rng(8).standard_normal((10, 3)).astype(np.float32)
    cap = run(branchy(opset), _batches([([x, np.array(True)], {}), ([x, np.array(False)], {})]), post=True)
    sites = {s.info.name: s for s in cap.sites}
    assert list(sites) == ["then_relu", "loop_relu", "else_tanh"] and not cap.uncovered
    branch_pre, loop_pre = _loop_reference(x, True)
    tanh_pre, loop_pre_2 = _loop_reference(x, False)
    _assert_post(sites["then_relu"].stats, reference(branch_pre, 1, "relu"), "then_relu")
    _assert_post(sites["loop_relu"].stats, reference(loop_pre + loop_pre_2, 1, "relu"), "loop_relu")
    assert_matches(sites["else_tanh"].stats, reference(tanh_pre, 1, "tanh"))  # not a ReLU: in full
