"""The default ``rewrite`` (``--mode train``): recycling where it can, deploy slopes where it cannot.

The model has one recyclable site (``fc1 → act1 → fc2``) and one behind a batch norm
(``fc2 → bn2 → act2``), which recycling refuses. Dead units are placed by hand (biases far
below zero). Each written file is read with its own runtime (``torch.jit.load``,
``torch.export.load``, ``onnx`` + onnxruntime): its weights (re-initialised rows, zeroed
columns) and its slopes are compared with the original's, and its outputs with a NumPy forward
pass of the *original* weights in which only the batch-norm site carries the slopes read back
from the file and the exact shift ``slope·mean(min(z, 0))`` computed here over the calibration
data. If recycling had changed the function, or the slopes or shifts were other than written,
the two would differ.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import actaudit.rewrite as rw
from actaudit.cli import cli

DEAD1 = [2, 7]  # act1: 12 units, recyclable
DEAD2 = [1, 4]  # act2: 10 units, behind bn2


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(6, 12), nn.ReLU()
        self.fc2, self.bn2, self.act2 = nn.Linear(12, 10), nn.BatchNorm1d(10), nn.ReLU()
        self.out = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act2(self.bn2(self.fc2(self.act1(self.fc1(x))))))


def _net() -> nn.Module:
    torch.manual_seed(0)
    m = Net()
    with torch.no_grad():
        m.fc1.bias[:] = 0.3
        m.fc1.bias[DEAD1] = -40.0
        m.bn2.running_mean[:] = torch.linspace(-0.2, 0.2, 10)
        m.bn2.running_var[:] = torch.linspace(0.5, 1.5, 10)
        m.bn2.weight[:] = torch.linspace(0.8, 1.2, 10)
        m.bn2.bias[:] = 0.3
        m.bn2.bias[DEAD2] = -6.0
    return m.eval()


def _data(n: int = 256) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 6)).astype(np.float32)


def _np(m: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().astype(np.float64) for k, v in m.state_dict().items()}


def _z2(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    z = h @ w["fc2.weight"].T + w["fc2.bias"]
    z = (z - w["bn2.running_mean"]) / np.sqrt(w["bn2.running_var"] + 1e-5)
    return z * w["bn2.weight"] + w["bn2.bias"]


def _expected(w: dict[str, np.ndarray], x: np.ndarray, slopes2: np.ndarray) -> np.ndarray:
    """The original model with per-unit slopes and the exact shift at act2 only (NumPy)."""
    z = _z2(w, x)
    neg = np.minimum(z, 0)
    a = np.maximum(z, 0) + slopes2 * neg - slopes2 * neg.mean(0)
    return a @ w["out.weight"].T + w["out.bias"]


def _dead(w: dict[str, np.ndarray], x: np.ndarray) -> tuple[list[int], list[int]]:
    z1 = x @ w["fc1.weight"].T + w["fc1.bias"]
    z2 = _z2(w, x)
    return [int(u) for u in np.flatnonzero((z1 > 0).sum(0) == 0)], [
        int(u) for u in np.flatnonzero((z2 > 0).sum(0) == 0)
    ]


# -- reading a written file with its own runtime ------------------------------------------------
def _is_slope(key: str) -> bool:
    """A PReLU module's weight where an activation was (``act1.weight``)."""
    return key in ("act1.weight", "act2.weight")


def _read_torch(path: Path) -> tuple[Any, dict[str, np.ndarray], list[np.ndarray]]:
    """(callable, weights, slope vectors) of a .ts / .pt2 file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if path.suffix == ".pt2":
            ep = torch.export.load(str(path))
            tensors = {**ep.state_dict, **ep.constants}
            w = {k: v.detach().numpy().astype(np.float64) for k, v in tensors.items() if "." in k}
            sig = ep.graph_signature
            lifted = {
                **sig.inputs_to_parameters,
                **sig.inputs_to_buffers,
                **sig.inputs_to_lifted_tensor_constants,
            }
            slopes = [
                tensors[lifted[n.args[1].name]].detach().numpy().reshape(-1)
                for n in ep.graph.nodes
                if n.op == "call_function" and "prelu" in str(n.target)
            ]
            return ep.module(), w, slopes
        ts = torch.jit.load(str(path))
    w = {k: v.detach().numpy().astype(np.float64) for k, v in ts.state_dict().items()}
    slopes = [v.reshape(-1) for k, v in w.items() if _is_slope(k)]  # an eager model's PReLU modules
    for node in ts.inlined_graph.nodes():
        if node.kind() == "aten::prelu":
            src = list(node.inputs())[1]
            if src.node().kind() == "prim::Constant":
                slopes.append(src.toIValue().detach().numpy().reshape(-1))
    return ts, w, slopes


def _read_onnx(path: Path) -> tuple[Any, dict[str, np.ndarray], list[np.ndarray]]:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    slopes = [inits[n.input[1]].reshape(-1) for n in m.graph.node if n.op_type == "PRelu"]
    by_shape = {v.shape: v for v in inits.values()}
    w = {
        "fc1.weight": by_shape[(12, 6)] if (12, 6) in by_shape else by_shape[(6, 12)].T,
        "fc2.weight": by_shape[(10, 12)] if (10, 12) in by_shape else by_shape[(12, 10)].T,
    }
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {name: x.numpy()})[0])

    return run, w, slopes


def _check(path: Path, m: nn.Module, x: np.ndarray) -> None:
    orig = _np(m)
    assert _dead(orig, x) == (DEAD1, DEAD2)
    run, w, slopes = _read_onnx(path) if path.suffix == ".onnx" else _read_torch(path)
    by_len = {len(s): s.astype(np.float64) for s in slopes}
    assert sorted(by_len) == [10, 12], [len(s) for s in slopes]
    s1, s2 = by_len[12], by_len[10]
    # act1 recycled: slope 0.01 on exactly the recycled units, rows re-initialised, columns zeroed
    np.testing.assert_allclose(s1[DEAD1], 0.01, rtol=1e-6)
    assert np.count_nonzero(np.delete(s1, DEAD1)) == 0
    live1 = [u for u in range(12) if u not in DEAD1]
    np.testing.assert_array_equal(w["fc1.weight"][live1], orig["fc1.weight"][live1])
    assert not np.allclose(w["fc1.weight"][DEAD1], orig["fc1.weight"][DEAD1])
    assert np.count_nonzero(w["fc2.weight"][:, DEAD1]) == 0
    np.testing.assert_array_equal(w["fc2.weight"][:, live1], orig["fc2.weight"][:, live1])
    # act2 refused: deploy slopes (>= the stuck fraction 0.01) on its dead units only
    assert (s2[DEAD2] >= 0.01).all() and (s2[DEAD2] <= 0.3 + 1e-6).all(), s2
    assert np.count_nonzero(np.delete(s2, DEAD2)) == 0
    # the function: the original with only act2's slopes and exact shift (recycling changed nothing)
    with torch.no_grad():
        got = run(torch.from_numpy(x)).numpy().astype(np.float64)
    want = _expected(orig, x.astype(np.float64), s2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    y0 = _expected(orig, x.astype(np.float64), np.zeros(10))
    assert np.linalg.norm(got - y0) / np.linalg.norm(y0) <= 0.01 + 1e-6


def _rows(r: Any) -> dict[str, Any]:
    return {s.name: s for s in r.sites}


@pytest.mark.parametrize("suffix", [".ts", ".pt2"])
def test_default_rewrite_of_an_eager_model_recycles_one_site_and_gives_slopes_to_the_other(
    tmp_path: Path, suffix: str
) -> None:
    m, x = _net(), _data()
    out = tmp_path / f"out{suffix}"
    r = rw.rewrite(m, x, output=out, output_format=suffix[1:], seed=3)
    assert r.passed and r.output["written"], r.notes
    assert r.to_dict()["options"]["mode"] == "train"
    rows = _rows(r)
    assert rows["act1"].how.startswith("recycled: fc1") and rows["act1"].recycled["units"] == DEAD1
    assert rows["act2"].how.startswith("deploy slopes") and "BatchNorm1d bn2" in rows["act2"].how
    assert sorted(rows["act2"].unit_slopes) == DEAD2
    _check(out, m, x)
    with torch.no_grad():  # apply(module, report) on the user's own module does the same
        xt = torch.from_numpy(x)
        torch.testing.assert_close(rw.apply(m, r)(xt), r.model_out(xt), rtol=0, atol=1e-6)


def _export_file(m: nn.Module, x: np.ndarray, path: Path) -> None:
    xt = torch.from_numpy(x[:8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if path.suffix == ".ts":
            torch.jit.script(m).save(str(path))
        elif path.suffix == ".pt2":
            ep = torch.export.export(m, (xt,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
            torch.export.save(ep, str(path))
        elif path.suffix == ".onnx":
            _onnx_by_hand(m, path)
        else:  # torch's exporter, which folds bn2 into fc2's Gemm
            torch.onnx.export(
                m,
                (xt,),
                str(path.with_suffix(".onnx")),
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: torch.export.Dim.AUTO},),
                verbose=False,
            )


def _onnx_by_hand(m: nn.Module, path: Path) -> None:
    """Gemm → Relu → Gemm → BatchNormalization → Relu → Gemm, the weights taken from ``m``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = {k.replace(".", "_"): v.detach().numpy() for k, v in m.state_dict().items() if "num_batches" not in k}
    nodes = [
        helper.make_node("Gemm", ["x", "fc1_weight", "fc1_bias"], ["z1"], "fc1", transB=1),
        helper.make_node("Relu", ["z1"], ["h1"], "act1"),
        helper.make_node("Gemm", ["h1", "fc2_weight", "fc2_bias"], ["y2"], "fc2", transB=1),
        helper.make_node(
            "BatchNormalization",
            ["y2", "bn2_weight", "bn2_bias", "bn2_running_mean", "bn2_running_var"],
            ["z2"],
            "bn2",
            epsilon=1e-5,
        ),
        helper.make_node("Relu", ["z2"], ["h2"], "act2"),
        helper.make_node("Gemm", ["h2", "out_weight", "out_bias"], ["y"], "out", transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.mark.parametrize("suffix", [".ts", ".pt2", ".onnx"])
def test_default_cli_rewrite_of_a_file_recycles_one_site_and_gives_slopes_to_the_other(
    tmp_path: Path, suffix: str
) -> None:
    m, x = _net(), _data()
    src, out, calib = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}", tmp_path / "x.npy"
    _export_file(m, x, src)
    np.save(calib, x)
    res = CliRunner().invoke(
        cli, ["rewrite", str(src), "-o", str(out), "--calib", str(calib), "--seed", "3", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    _check(out, m, x)


def test_train_mode_refuses_per_site_slope_options(tmp_path: Path) -> None:
    m, x = _net(), _data()
    src, calib = tmp_path / "in.ts", tmp_path / "x.npy"
    _export_file(m, x, src)
    np.save(calib, x)
    args = ["rewrite", str(src), "-o", str(tmp_path / "o.ts"), "--calib", str(calib), "--to", "leaky"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    assert "--mode deploy" in res.output and "Traceback" not in res.output


def test_recycling_two_chained_onnx_sites_keeps_the_function(tmp_path: Path) -> None:
    """torch's exporter folds bn2 into fc2: fc2 is then act1's consumer and act2's producer."""
    import onnxruntime as ort

    m, x = _net(), _data()
    src, out = tmp_path / "in.export", tmp_path / "out.onnx"
    _export_file(m, x, src)
    r = rw.rewrite(str(src.with_suffix(".onnx")), x, mode="recycle", seed=3, output=out)
    assert r.passed and {s.name for s in r.sites if s.recycled} == {"act1", "act2"}
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
