"""The accelerator code paths, run on CPU: CI has no GPU, the same code must be covered.

``--device cuda`` changes two things in the PyTorch backend: the statistics kernel takes
one launch per statistic over the whole tensor (no chunks, no transposes), and under
torchrun the counters travel over NCCL instead of gloo. The first is forced here on CPU
tensors and checked against the NumPy reference; the accumulators stay on the tensors'
device until :meth:`_Acc.to_stats`, which is the only place they reach the host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from actaudit.backends.torch import kernel as capture
from tests.test_stats_kernel import RELU, RELU6, TANH, _batches, check, reference, run_kernel


@pytest.mark.parametrize(
    ("shape", "axis", "thr"),
    [((4, 24, 9, 7), 1, RELU), ((3, 50, 40), 2, TANH), ((6, 33), 1, RELU6), ((2, 16, 5000), 1, RELU)],
)
def test_accelerator_kernel_matches_the_reference(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], axis: int, thr: object
) -> None:
    monkeypatch.setattr(capture, "_host_kernel", lambda device: False)
    batches = _batches(shape, 3, seed=11)
    acc = run_kernel(batches, axis, thr)  # type: ignore[arg-type]
    for t in (acc.sums, acc.min, acc.max, acc.nonfinite):
        assert t.device == batches[0].device
    check(acc, reference([b.numpy() for b in batches], axis, thr), rtol=1e-5)  # type: ignore[arg-type]


def test_accelerator_kernel_with_nonfinite_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture, "_host_kernel", lambda device: False)
    batches = _batches((4, 8, 30), 2, seed=5)
    batches[1][0, 3, 7] = float("nan")
    batches[1][2, 5, 1] = float("inf")
    acc = run_kernel(batches, 1, RELU)
    st = acc.to_stats()
    assert st.nonfinite.tolist() == [0, 0, 0, 1, 0, 1, 0, 0]
    check(acc, reference([b.numpy() for b in batches], 1, RELU), rtol=1e-5)


def test_host_kernel_is_chosen_by_device_type() -> None:
    assert capture._host_kernel(torch.device("cpu"))
    assert not capture._host_kernel(torch.device("cuda", 0))
    assert not capture._host_kernel(torch.device("meta"))


def test_onnx_ranks_pick_their_gpu_by_local_rank() -> None:
    """Under torchrun a GPU provider gets ``device_id=LOCAL_RANK``; the CPU provider takes no options."""
    from actaudit.backends.onnx import backend
    from actaudit.backends.onnx.session import _providers

    h = backend.load(Path(__file__).resolve().parent.parent / "fixtures" / "models" / "cnn_dead.onnx")
    h.device_id = 1
    assert _providers(h) == ["CPUExecutionProvider"]
    h.provider = "CUDAExecutionProvider"
    assert _providers(h) == [("CUDAExecutionProvider", {"device_id": "1"}), "CPUExecutionProvider"]
    h.device_id = None
    assert _providers(h) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
