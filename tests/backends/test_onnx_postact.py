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
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from test_onnx_capture import cnn, images
from test_onnx_pack import mlp
from test_onnx_reference import COUNTERS, assert_matches, reference, run_tensors

from actaudit.backends.onnx import backend
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
        for k in COUNTERS:
            np.testing.assert_array_equal(getattr(st, k), ref[k], err_msg=f"{res.info.name} {k}")
        for k in UNMEASURED:
            assert np.isnan(getattr(st, k)).all(), (res.info.name, k)
        fired = ref["max"] > 0
        np.testing.assert_allclose(st.max[fired], ref["max"][fired], rtol=1e-6)
        assert np.isnan(st.max[~fired]).all(), res.info.name
        for k in ("pos_sum", "pos_sq"):
            np.testing.assert_allclose(
                getattr(st, k), ref[k], rtol=1e-5, atol=1e-6, err_msg=f"{res.info.name} {k}"
            )
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
    if "npy" not in calib:
        pytest.skip("multi-input calibration (npz)")  # the fixtures' ONNX models take one input
    x = np.load(FIXTURES / calib["npy"])
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
