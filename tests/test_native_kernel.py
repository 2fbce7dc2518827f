"""The compiled statistics kernel (``stats_kernel.c`` through ctypes) and the pure-torch path, side by side.

Both paths run on the same batches and are held to the NumPy reference of
``tests/test_stats_kernel.py`` and to each other: counts identical, values within float32
rounding. The loader's fallbacks (disabled, no compiler, failed self-check) leave the
pure path running; an audit of a TorchScript model does not import ``torch._dynamo``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from actaudit.backends.torch import kernel, native
from actaudit.kinds import Thresholds
from tests.test_stats_kernel import RELU, RELU6, TANH, _batches, _np, check, reference, run_kernel

ROOT = Path(__file__).resolve().parent.parent
NONE = Thresholds()
SIGMOID = Thresholds(low=-4.59, high=4.59)

HAVE_NATIVE = native.kernel() is not None
needs_native = pytest.mark.skipif(
    not HAVE_NATIVE, reason=f"the compiled kernel is not available here: {native.status()}"
)


@pytest.fixture(params=["native", "torch"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test once through each kernel path."""
    if request.param == "native":
        if not HAVE_NATIVE:
            pytest.skip(f"the compiled kernel is not available here: {native.status()}")
        fn = native.kernel()
        monkeypatch.setattr(kernel, "_native_kernel", lambda: fn)
    else:
        monkeypatch.setattr(kernel, "_native_kernel", lambda: None)
    yield request.param


def _both(batches: list[torch.Tensor], axis: int, thr: Thresholds, monkeypatch: pytest.MonkeyPatch) -> tuple:
    fn = native.kernel()
    monkeypatch.setattr(kernel, "_native_kernel", lambda: fn)
    a = run_kernel(batches, axis, thr).to_stats()
    monkeypatch.setattr(kernel, "_native_kernel", lambda: None)
    b = run_kernel(batches, axis, thr).to_stats()
    return a, b


SHAPES = [
    ((4, 8, 20, 20), 1),  # conv, rows of 400: the row kernel
    ((4, 8, 5, 5), 1),  # rows of 25
    ((2, 3, 4, 3), 1),  # rows of 12: strided units
    ((3, 40, 16), 2),  # units last
    ((3, 40, 16), 1),
    ((6, 33), 1),
    ((6, 33), 0),
    ((5,), 0),
    ((2, 3, 4, 5, 6), 2),
    ((64, 2048), 1),  # enough elements for several threads
    ((8, 16, 70, 70), 1),  # rows longer than one float segment (1,024)
    ((3000, 5), 1),  # more rows than one segment, units last
]


@pytest.mark.parametrize(("shape", "axis"), SHAPES)
@pytest.mark.parametrize(
    "thr", [RELU, TANH, RELU6, NONE, SIGMOID], ids=["relu", "tanh", "relu6", "none", "sig"]
)
def test_each_path_matches_the_reference(
    path: str, shape: tuple[int, ...], axis: int, thr: Thresholds
) -> None:
    bs = _batches(shape, 2, seed=len(shape) * 7 + axis)
    check(run_kernel(bs, axis, thr), reference(_np(bs), axis, thr), rtol=1e-5)


@needs_native
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_paths_agree(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], axis: int) -> None:
    bs = _batches(shape, 3, seed=99)
    bs[1].view(-1)[::31] = float("nan")
    bs[2].view(-1)[3::37] = -float("inf")
    a, b = _both(bs, axis, TANH, monkeypatch)
    for name in ("low", "high", "nonfinite"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.min, b.min)
    np.testing.assert_array_equal(a.max, b.max)
    assert a.elements == b.elements and a.samples == b.samples
    for name in ("neg_sum", "pos_sum", "neg_sq", "pos_sq"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=2e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(("shape", "axis"), [((4, 5, 7, 7), 1), ((4, 5, 30, 30), 1), ((3, 10, 6), 2)])
def test_nan_and_inf_on_each_path(path: str, shape: tuple[int, ...], axis: int) -> None:
    bs = _batches(shape, 3, seed=3)
    bs[1].view(-1)[::17] = float("nan")
    bs[1].view(-1)[5::23] = float("inf")
    bs[1].view(-1)[9::29] = -float("inf")
    ref = reference(_np(bs), axis, TANH)
    assert ref["nonfinite"].sum() > 0
    check(run_kernel(bs, axis, TANH), ref, rtol=1e-5)


@pytest.mark.parametrize(("shape", "axis"), [((2, 3, 40, 40), 1), ((5, 3), 1), ((2, 3, 4, 3), 1)])
def test_float32_overflowing_sums_on_each_path(path: str, shape: tuple[int, ...], axis: int) -> None:
    """Finite values whose float32 squares overflow are summed in float64 on both paths."""
    x = torch.randn(shape)
    x.view(-1)[1] = 3e20
    x.view(-1)[-1] = -2e19
    acc = run_kernel([x], axis, RELU)
    check(acc, reference(_np([x]), axis, RELU), rtol=1e-5)
    st = acc.to_stats()
    assert st.nonfinite.sum() == 0 and np.isfinite(st.pos_sq).all() and st.pos_sq.max() > 8e40


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes_on_each_path(path: str, dtype: torch.dtype) -> None:
    """float64 runs the compiled kernel in double; half types take the ATen path either way."""
    bs = _batches((4, 6, 12, 12), 2, seed=7, dtype=dtype)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    check(run_kernel(bs, 1, TANH), reference(_np(bs), 1, TANH), rtol=rtol)


def test_dead_and_live_units_are_exact_on_each_path(path: str) -> None:
    x = torch.randn(8, 4, 40, 40)
    x[:, 0] = -x[:, 0].abs()
    x[:, 1] = x[:, 1].abs() + 0.1
    y = x.permute(0, 2, 3, 1).reshape(-1, 4).contiguous()  # the same values, units last
    for t, axis in ((x, 1), (y, 1)):
        st = run_kernel([t], axis, RELU).to_stats()
        assert st.pos_sum[0] == 0 and st.pos_sq[0] == 0
        assert st.neg_sum[1] == 0 and st.neg_sq[1] == 0
        assert st.low[0] == 8 * 40 * 40 and st.low[1] == 0


@pytest.mark.parametrize(("shape", "axis"), [((3, 6, 9, 9), 1), ((64, 2048), 1), ((2, 64, 300), 2)])
def test_pure_path_chunk_boundaries(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], axis: int
) -> None:
    """The ATen path's chunking, with the compiled kernel out of the way."""
    monkeypatch.setattr(kernel, "_native_kernel", lambda: None)
    for budget in (64, 1000, 4096, 1 << 30):
        monkeypatch.setattr(kernel, "_CHUNK_BYTES", budget)
        bs = _batches(shape, 2, seed=budget)
        check(run_kernel(bs, axis, RELU6), reference(_np(bs), axis, RELU6), rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_give_the_same_counts(path: str, threads: int) -> None:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        bs = _batches((16, 24, 33, 33), 1, seed=threads)
        check(run_kernel(bs, 1, RELU), reference(_np(bs), 1, RELU), rtol=1e-5)
    finally:
        torch.set_num_threads(old)


def _verdicts(rep: object) -> list[tuple]:
    return [
        (v.info.name, v.units, list(v.dead_units), list(v.saturated_units), list(v.rarely_firing_units))
        for v in rep.sites  # type: ignore[attr-defined]
    ]


@needs_native
@pytest.mark.parametrize(
    ("model", "data"),
    [
        ("cnn_dead.ts", "cnn_images.npy"),
        ("cnn_dead.pt2", "cnn_images.npy"),
        ("mlp_kinds.ts", "mlp_inputs.npy"),
    ],
)
def test_audits_agree_between_paths(monkeypatch: pytest.MonkeyPatch, model: str, data: str) -> None:
    import actaudit

    path = ROOT / "fixtures" / "models" / model
    if not path.exists():
        pytest.skip(f"fixture {model} not present")
    calib = str(ROOT / "fixtures" / "data" / data)
    fn = native.kernel()
    monkeypatch.setattr(kernel, "_native_kernel", lambda: fn)
    a = actaudit.audit(str(path), calib=calib)
    monkeypatch.setattr(kernel, "_native_kernel", lambda: None)
    b = actaudit.audit(str(path), calib=calib)
    assert _verdicts(a) == _verdicts(b)
    for va, vb in zip(a.sites, b.sites, strict=True):
        for name in ("low", "high", "nonfinite"):
            np.testing.assert_array_equal(getattr(va.stats, name), getattr(vb.stats, name))
        # The positive parts are totals minus negative parts: float32 rounding of the totals.
        s1 = (va.stats.pos_sum - va.stats.neg_sum) * 1e-5 + 1e-9
        s2 = (va.stats.pos_sq + va.stats.neg_sq) * 1e-5 + 1e-9
        for name, scale in (("pos_sum", s1), ("neg_sum", s1), ("pos_sq", s2), ("neg_sq", s2)):
            err = np.abs(getattr(va.stats, name) - getattr(vb.stats, name))
            assert (err <= scale).all(), f"{va.info.name} {name}: max excess {(err - scale).max():.3g}"


# -- the loader -------------------------------------------------------------------------------------
@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("ACTAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    native.reset()
    yield tmp_path / "cache"
    native.reset()


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch, fresh_loader: Path) -> None:
    monkeypatch.setenv("ACTAUDIT_NATIVE", "0")
    assert native.kernel() is None
    assert "ACTAUDIT_NATIVE=0" in native.status()


def test_no_compiler_falls_back(monkeypatch: pytest.MonkeyPatch, fresh_loader: Path) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.delenv("ACTAUDIT_NATIVE", raising=False)
    assert native.kernel() is None
    assert "no C compiler" in native.status()


def test_failing_compiler_falls_back(monkeypatch: pytest.MonkeyPatch, fresh_loader: Path) -> None:
    monkeypatch.setenv("CC", "false")
    monkeypatch.delenv("ACTAUDIT_NATIVE", raising=False)
    assert native.kernel() is None
    assert "compiler failed" in native.status()
    assert not list(fresh_loader.glob("*.so"))  # nothing half-written is left to load later


def test_failed_self_check_falls_back(monkeypatch: pytest.MonkeyPatch, fresh_loader: Path) -> None:
    if native._compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.delenv("ACTAUDIT_NATIVE", raising=False)
    monkeypatch.setattr(native, "_self_check", lambda fn: False)
    assert native.kernel() is None
    assert "self-check" in native.status()


@needs_native
def test_builds_into_the_cache_once(monkeypatch: pytest.MonkeyPatch, fresh_loader: Path) -> None:
    monkeypatch.delenv("ACTAUDIT_NATIVE", raising=False)
    path, how = native.build()
    assert path is not None and path.parent == fresh_loader and how.startswith("built")
    again, how2 = native.build()
    assert again == path and how2 == "cached"
    assert native.kernel() is not None


def test_audit_without_the_compiled_kernel(tmp_path: Path) -> None:
    """A fresh process with no compiler still audits (the pure path), with the same verdicts."""
    env = dict(os.environ, CC="/nonexistent/cc", ACTAUDIT_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    args = [
        "audit",
        str(ROOT / "fixtures/models/cnn_dead.ts"),
        "--calib",
        str(ROOT / "fixtures/data/cnn_images.npy"),
    ]
    runs = []
    for e in (env, dict(os.environ, PYTHONPATH=str(ROOT))):
        r = subprocess.run(
            [sys.executable, "-m", "actaudit", *args, "--format", "json"],
            capture_output=True,
            text=True,
            env=e,
        )
        assert r.returncode in (0, 1), r.stderr
        runs.append([(s["name"], s["dead_units"]) for s in json.loads(r.stdout)["sites"]])
    assert runs[0] == runs[1]


# -- start-up --------------------------------------------------------------------------------------
def test_torchscript_audit_does_not_import_dynamo() -> None:
    """TorchDispatchMode's subclass hook would import torch._dynamo on the first dispatch (~1 s)."""
    probe = (
        "import sys, actaudit\n"
        f"actaudit.audit({str(ROOT / 'fixtures/models/cnn_dead.ts')!r}, "
        f"calib={str(ROOT / 'fixtures/data/cnn_images.npy')!r}, samples=8)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_dispatch_mode_is_not_wrapped_for_dynamo() -> None:
    raw = kernel.DispatchCapture.__dict__["__torch_dispatch__"]
    assert getattr(raw, "__wrapped__", None) is None  # torch._disable_dynamo uses functools.wraps
