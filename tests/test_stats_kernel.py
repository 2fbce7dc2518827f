"""The per-unit statistics kernel (``_Acc``) against a plain NumPy reference.

The kernel streams L2-sized chunks, transposes short rows, derives the positive parts
from totals and falls back to a masked path on NaN/Inf; each of those branches is hit
here with shapes chosen to cross the chunk and layout boundaries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actaudit.backends.torch import kernel as capture
from actaudit.backends.torch.backend import capture as run
from actaudit.backends.torch.backend import from_module
from actaudit.backends.torch.kernel import _Acc, unit_view
from actaudit.data import from_arrays
from actaudit.kinds import Thresholds

RELU = Thresholds(low=0.0)
TANH = Thresholds(low=-2.6467, high=2.6467)
RELU6 = Thresholds(low=0.0, high=6.0)
NONE = Thresholds()


def reference(batches: list[np.ndarray], axis: int, thr: Thresholds) -> dict[str, np.ndarray]:
    """The counters' definitions, written the obvious way in float64."""
    zs = [np.moveaxis(b.astype(np.float64), axis, 0).reshape(b.shape[axis], -1) for b in batches]
    z = np.concatenate(zs, axis=1)
    fin = np.isfinite(z)
    zf = np.where(fin, z, 0.0)
    neg, pos = np.minimum(zf, 0.0), np.maximum(zf, 0.0)
    units = z.shape[0]
    return {
        "low": ((z <= thr.low) & fin).sum(1) if math.isfinite(thr.low) else np.zeros(units, np.int64),
        "high": ((z >= thr.high) & fin).sum(1) if math.isfinite(thr.high) else np.zeros(units, np.int64),
        "nonfinite": (~fin).sum(1),
        "min": np.where(fin, z, np.inf).min(1),
        "max": np.where(fin, z, -np.inf).max(1),
        "neg_sum": neg.sum(1),
        "neg_sq": (neg**2).sum(1),
        "pos_sum": pos.sum(1),
        "pos_sq": (pos**2).sum(1),
        "abs_sum": np.abs(zf).sum(1),
        "sq_sum": (zf**2).sum(1),
    }


def run_kernel(batches: list[torch.Tensor], axis: int, thr: Thresholds) -> _Acc:
    acc = _Acc(int(batches[0].shape[axis]), batches[0].device)
    for b in batches:
        acc.add(b, axis, thr, int(b.shape[0]) if b.ndim else 1)
    return acc


def check(acc: _Acc, ref: dict[str, np.ndarray], rtol: float) -> None:
    st = acc.to_stats()
    for name in ("low", "high", "nonfinite"):
        np.testing.assert_array_equal(getattr(st, name), ref[name], err_msg=name)
    for name in ("min", "max"):
        np.testing.assert_allclose(getattr(st, name), ref[name], rtol=rtol, atol=0, err_msg=name)
    # Sums carry float32 rounding relative to the totals they are taken from.
    scale_1 = ref["abs_sum"] * rtol + 1e-12
    scale_2 = ref["sq_sum"] * rtol + 1e-12
    for name, scale in (("neg_sum", scale_1), ("pos_sum", scale_1), ("neg_sq", scale_2), ("pos_sq", scale_2)):
        err = np.abs(getattr(st, name) - ref[name])
        assert (err <= scale).all(), f"{name}: max excess {(err - scale).max():.3g}"


def _batches(
    shape: tuple[int, ...], n: int, seed: int, dtype: torch.dtype = torch.float32
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
        x[x.abs() < 0.3] = 0.0  # exact zeros sit on the ReLU threshold
        out.append(x.to(dtype))
    return out


def _np(batches: list[torch.Tensor]) -> list[np.ndarray]:
    return [b.double().numpy() for b in batches]


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((4, 8, 20, 20), 1),  # conv, rows of 400: inner reduction
        ((4, 8, 5, 5), 1),  # conv, rows of 25: transposed chunks
        ((3, 40, 16), 2),  # [batch, tokens, features]: units last
        ((3, 40, 16), 1),  # tokens as units
        ((6, 33), 1),  # linear
        ((6, 33), 0),  # unit axis first
        ((5,), 0),  # one-dimensional
        ((2, 3, 4, 5, 6), 2),  # rank 5
    ],
)
@pytest.mark.parametrize("thr", [RELU, TANH, RELU6, NONE], ids=["relu", "tanh", "relu6", "none"])
def test_matches_reference(shape: tuple[int, ...], axis: int, thr: Thresholds) -> None:
    bs = _batches(shape, 3, seed=len(shape) * 10 + axis)
    check(run_kernel(bs, axis, thr), reference(_np(bs), axis, thr), rtol=1e-5)


@pytest.mark.parametrize(("shape", "axis"), [((3, 6, 9, 9), 1), ((64, 2048), 1), ((2, 64, 300), 2)])
def test_chunk_boundaries(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], axis: int) -> None:
    """Tiny chunks force row blocks, unit blocks and a ragged last chunk."""
    for budget in (64, 1000, 4096, 1 << 30):
        monkeypatch.setattr(capture, "_CHUNK_BYTES", budget)
        bs = _batches(shape, 2, seed=budget)
        check(run_kernel(bs, axis, RELU6), reference(_np(bs), axis, RELU6), rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype: torch.dtype) -> None:
    bs = _batches((4, 6, 12, 12), 2, seed=7, dtype=dtype)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    # The reference sees the same (rounded) values the kernel sees.
    check(run_kernel(bs, 1, TANH), reference(_np(bs), 1, TANH), rtol=rtol)


@pytest.mark.parametrize(("shape", "axis"), [((4, 5, 7, 7), 1), ((4, 5, 30, 30), 1), ((3, 10, 6), 2)])
def test_nan_and_inf(shape: tuple[int, ...], axis: int) -> None:
    bs = _batches(shape, 3, seed=3)
    bs[1].view(-1)[::17] = float("nan")
    bs[1].view(-1)[5::23] = float("inf")
    bs[1].view(-1)[9::29] = -float("inf")
    ref = reference(_np(bs), axis, TANH)
    assert ref["nonfinite"].sum() > 0
    check(run_kernel(bs, axis, TANH), ref, rtol=1e-5)


def test_overflowing_squares_take_the_exact_path() -> None:
    """Finite values whose float32 squares overflow are still summed (in float64)."""
    x = torch.randn(2, 3, 10, 10)
    x[0, 1, 0, 0] = 3e20
    acc = run_kernel([x], 1, RELU)
    ref = reference(_np([x]), 1, RELU)
    check(acc, ref, rtol=1e-5)
    assert acc.to_stats().nonfinite.sum() == 0


def test_dead_and_live_units_are_exact() -> None:
    """All-negative units get pos sums of exactly 0; all-positive units neg sums of exactly 0."""
    x = torch.randn(8, 4, 16, 16)
    x[:, 0] = -x[:, 0].abs()  # dead
    x[:, 1] = x[:, 1].abs() + 0.1  # always on
    st = run_kernel([x], 1, RELU).to_stats()
    assert st.pos_sum[0] == 0 and st.pos_sq[0] == 0
    assert st.neg_sum[1] == 0 and st.neg_sq[1] == 0
    assert st.low[0] == 8 * 16 * 16 and st.low[1] == 0


def test_layouts_and_views() -> None:
    """Channels-last, transposed and sliced inputs give the same counters as contiguous ones."""
    x = torch.randn(4, 6, 9, 9)
    ref = reference(_np([x]), 1, TANH)
    for variant in (
        x.to(memory_format=torch.channels_last),
        x.transpose(2, 3),
        torch.randn(4, 12, 9, 9)[:, ::2].copy_(x),
    ):
        v = variant if variant.shape == x.shape else variant.transpose(2, 3)
        want = ref if v is variant else reference(_np([variant]), 1, TANH)
        check(run_kernel([variant], 1, TANH), want, rtol=1e-5)
    cl = x.to(memory_format=torch.channels_last)
    assert unit_view(cl, 1).shape == (4 * 9 * 9, 6, 1)  # no copy: channels last is units last


def test_in_place_activation_sees_the_pre_activation() -> None:
    """An in-place ReLU is reduced before it runs: the counters see the negative inputs."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 3)
            self.act = torch.nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv(x))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(6, 3, 12, 12)
    with torch.no_grad():
        pre = net.conv(x)

    cap = run(
        from_module(net),
        from_arrays([x.numpy()], 4, "x"),
        samples=None,
        stuck_fraction=0.01,
        axis_overrides=[],
    )
    (site,) = cap.sites
    ref = reference([pre.numpy()[:4], pre.numpy()[4:]], 1, RELU)
    check_stats = site.stats
    np.testing.assert_array_equal(check_stats.low, ref["low"])
    np.testing.assert_allclose(check_stats.neg_sum, ref["neg_sum"], rtol=1e-5)
    np.testing.assert_allclose(check_stats.min, ref["min"], rtol=1e-6)
    assert (check_stats.min < 0).all()


def test_empty_batch() -> None:
    acc = _Acc(3, torch.device("cpu"))
    acc.add(torch.empty(0, 3, 4), 1, RELU, 0)
    st = acc.to_stats()
    assert st.elements == 0 and st.low.sum() == 0
