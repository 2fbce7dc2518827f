"""Package-shipped trained models against oracles that share no code with the capture (issue 12).

* resemblyzer's speaker encoder (a state_dict: 3-layer ``nn.LSTM`` + Linear + ReLU, plus
  loss parameters the model does not have): every gate pre-activation and the ReLU's
  computed in float64 NumPy from the checkpoint's tensors.
* magika's ONNX model (Conv → Slice → Squeeze → GELU, and a Dense → GELU): the GELU
  pre-activations promoted to outputs and counted in NumPy on the axis the producer's weight
  shape says (Conv: its 512 output channels; MatMul: the last axis).
* silero-vad's TorchScript archive: names from the arm that ran (``_model``, not ``_model_8k``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import actaudit
from actaudit.cli import cli

pytestmark = pytest.mark.realmodel
HERE = Path(__file__).resolve().parent
# stuck thresholds at 1 % of the maximum derivative (docs/statistics.md)
SIG, TANH, GELU = 5.987, 2.993, -3.02


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        reason = f"{name} is not installed (pip install --no-deps {name}; `make test` does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(spec.origin).parent


def _sig(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _speaker_oracle(sd: dict[str, np.ndarray], mels: np.ndarray) -> dict[str, tuple[int, set[int], set[int]]]:
    """(units, dead, saturated) per site, from a float64 LSTM written out here."""
    n, steps, _ = mels.shape
    out: dict[str, tuple[int, set[int], set[int]]] = {}
    x = mels.astype(np.float64)
    h_last = None
    for layer in range(3):
        w_ih, w_hh = sd[f"lstm.weight_ih_l{layer}"], sd[f"lstm.weight_hh_l{layer}"]
        b = sd[f"lstm.bias_ih_l{layer}"] + sd[f"lstm.bias_hh_l{layer}"]
        h, c = np.zeros((n, 256)), np.zeros((n, 256))
        pre: dict[str, list[np.ndarray]] = {g: [] for g in ("i", "f", "g", "o", "c")}
        hs = []
        for t in range(steps):
            z = x[:, t] @ w_ih.T + h @ w_hh.T + b
            i, f, g, o = np.split(z, 4, axis=1)
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
            for k, v in zip("ifgoc", (i, f, g, o, c), strict=True):
                pre[k].append(v)
            hs.append(h)
        x = np.stack(hs, 1)
        h_last = h
        for k, name, thr in (
            ("i", "input_gate", SIG),
            ("f", "forget_gate", SIG),
            ("g", "cell_gate", TANH),
            ("o", "output_gate", SIG),
            ("c", "cell_tanh", TANH),
        ):
            v = np.concatenate(pre[k])
            sat = {int(u) for u in np.flatnonzero((np.abs(v) >= thr).mean(0) >= 0.99)}
            out[f"lstm.l{layer}.{name}"] = (256, set(), sat)
    assert h_last is not None
    z = h_last @ sd["linear.weight"].T + sd["linear.bias"]
    out["relu"] = (256, {int(u) for u in np.flatnonzero((z > 0).sum(0) == 0)}, set())
    return out


def test_speaker_encoder_gates_match_numpy(tmp_path) -> None:
    ckpt = _package_dir("resemblyzer") / "pretrained.pt"
    sd = {
        k: v.double().numpy()
        for k, v in torch.load(ckpt, map_location="cpu", weights_only=True)["model_state"].items()
    }
    mels = np.random.default_rng(0).random((16, 30, 40)).astype(np.float32) * 0.3
    calib = tmp_path / "mels.npy"
    np.save(calib, mels)
    args = [
        "audit",
        str(ckpt),
        "--arch",
        f"{HERE / 'realmodel_archs.py'}:voice_encoder",
        "--state-key",
        "model_state",
        "--calib",
        str(calib),
        "--format",
        "json",
    ]
    refused = CliRunner().invoke(cli, args)
    assert (
        refused.exit_code == 2 and "similarity_weight" in refused.stderr
    )  # loss parameters: not the model's
    r = CliRunner().invoke(cli, [*args, "--non-strict"])
    assert r.exit_code == 0, r.stderr
    assert "similarity_weight" in r.stderr  # listed, not silently ignored
    report = json.loads(r.stdout)
    got = {s["name"]: (s["units"], set(s["dead_units"]), set(s["saturated_units"])) for s in report["sites"]}
    assert got == _speaker_oracle(sd, mels)
    assert len(got) == 16 and report["uncovered"] == []


def test_magika_gelu_units_are_the_producers_channels() -> None:
    path = _package_dir("magika") / "models" / "standard_v3_3" / "model.onnx"
    model = onnx.load(str(path))
    rng = np.random.default_rng(1)
    data = rng.integers(0, 257, (24, 2048)).astype(np.int32)
    report = actaudit.audit(str(path), data, batch_size=8)
    sites = report.to_dict()["sites"]
    assert [s["kind"] for s in sites] == ["gelu", "gelu"]
    # Oracle: the GELU inputs promoted, the unit axis from the producers' weight shapes.
    import onnxruntime as ort

    from actaudit.backends.onnx.sites import find_sites

    found = {s.name: s.x for s in find_sites(model.graph).sites}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    channels = weights[conv.input[1]][0]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    names = [found[s["name"]] for s in sites]
    for n in names:
        m.graph.output.append(onnx.ValueInfoProto(name=n))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    parts = [sess.run(names, {"bytes": data[i : i + 8]}) for i in range(0, 24, 8)]
    for k, s in enumerate(sites):
        z = np.concatenate([p[k] for p in parts])
        axis = 1 if k == 1 else z.ndim - 1  # the Conv's channels; the Dense's features (last)
        flat = np.moveaxis(z, axis, -1).reshape(-1, z.shape[axis])
        dead = {int(u) for u in np.flatnonzero((flat > GELU).sum(0) == 0)}
        assert s["units"] == z.shape[axis]
        assert set(s["dead_units"]) == dead
    assert sites[1]["units"] == channels == 512


def test_silero_jit_names_the_arm_that_ran() -> None:
    path = _package_dir("silero_vad") / "data" / "silero_vad.jit"
    from actaudit.backends.torch import backend
    from actaudit.data import DataSource

    audio = (np.random.default_rng(2).standard_normal((8, 512)) * 0.1).astype(np.float32)
    tm = backend.load(path)
    cap = backend.capture(
        tm,
        DataSource(lambda: iter([([torch.from_numpy(audio), 16000], {})]), "t"),
        samples=None,
        stuck_fraction=0.01,
        axis_overrides=[],
    )
    names = [r.info.name for r in cap.sites]
    assert all(n.startswith("_model.") for n in names), names
    assert "_model.decoder.decoder.1" in names and "_model.decoder.rnn.forget_gate" in names
    relu = next(r for r in cap.sites if r.info.name == "_model.decoder.decoder.1")
    assert relu.info.units == 128  # Conv1d(128, 1, 1) consumes it; the LSTMCell (128 hidden) produces it
    assert not cap.uncovered and not cap.warnings
