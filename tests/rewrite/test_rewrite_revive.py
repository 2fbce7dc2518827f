"""The default rewrite revives dead units, checked from the written file with its own runtime.

Every number is re-derived outside the code under test: dead units from a NumPy forward
pass over the state_dict's weights, drift from the original and the written file run
side by side (``torch.jit.load`` / ``torch.export.load`` / ``torch.load`` /
onnxruntime), revival from a backward pass on the reloaded file (torch) or from the
slope tensors in the file (ONNX).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from actaudit.cli import cli

MIN_SLOPE = 0.01


def _run(*args: Any) -> Any:
    mode = [] if "--mode" in args else ["--mode", "deploy"]  # these tests hold the deploy mode's guarantees
    return CliRunner().invoke(cli, ["rewrite", *mode, *[str(a) for a in args]])


def _rel(new: list[np.ndarray], old: list[np.ndarray]) -> float:
    num = sum(
        float(np.square(a.astype(np.float64) - b.astype(np.float64)).sum())
        for a, b in zip(new, old, strict=True)
    )
    den = sum(float(np.square(b.astype(np.float64)).sum()) for b in old)
    return float(np.sqrt(num / den))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _load_torch(path: Path, kind: str) -> Any:
    if kind == "pt2":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(str(path)).module()
    if kind == "pickled":
        return torch.load(str(path), weights_only=False).eval()
    return torch.jit.load(str(path)).eval()


def _onnx_slopes(path: Path) -> list[np.ndarray]:
    """Every PRelu slope tensor in the file, subgraphs included."""
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    out = []

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            if n.op_type == "PRelu":
                out.append(inits[n.input[1]].reshape(-1))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(m.graph)
    return out


# -- mlp_trained in every format ------------------------------------------------------
def _mlp_dead(fixtures_dir: Path) -> tuple[np.ndarray, set[int]]:
    """act2's dead units by NumPy over the state_dict's weights (shares no code with the capture)."""
    sd = torch.load(str(fixtures_dir / "models" / "mlp_trained_sd.pt"), weights_only=True)
    sd = {k: v.numpy().astype(np.float64) for k, v in sd.items()}
    x = np.load(fixtures_dir / "data" / "trained_inputs.npy").astype(np.float64)
    h1 = np.maximum(x @ sd["fc1.weight"].T + sd["fc1.bias"], 0)
    z2 = h1 @ sd["fc2.weight"].T + sd["fc2.bias"]
    assert np.all((z2 <= 0).all(0) | (z2 > 1e-4).any(0))  # no unit sits at the threshold
    return x.astype(np.float32), {int(u) for u in np.flatnonzero((z2 <= 0).all(0))}


MLP_CASES = {
    "ts": ("mlp_trained.ts", [], "ts"),
    "pt2": ("mlp_trained.pt2", [], "pt2"),
    "pickled": ("mlp_trained_pickled.pt", ["--trust-pickle"], "pickled"),
    "sd-ts": ("mlp_trained_sd.pt", ["--arch", "ARCH", "--output-format", "ts"], "ts"),
    "sd-pt2": ("mlp_trained_sd.pt", ["--arch", "ARCH", "--output-format", "pt2"], "pt2"),
    "onnx": ("mlp_trained.onnx", [], "onnx"),
}


@pytest.mark.parametrize("case", list(MLP_CASES))
def test_default_rewrite_revives_mlp_trained(
    case: str, fixtures_dir: Path, fixtures_on_path: Path, tmp_path: Path
) -> None:
    src, extra, kind = MLP_CASES[case]
    extra = [str(fixtures_dir / "archs.py:build_mlp_trained") if e == "ARCH" else e for e in extra]
    x, dead = _mlp_dead(fixtures_dir)
    assert len(dead) == 10
    inp = fixtures_dir / "models" / src
    before = _sha(inp)
    out = tmp_path / ("out.onnx" if kind == "onnx" else f"out.{kind}")
    calib = fixtures_dir / "data" / "trained_inputs.npy"
    r = _run(inp, "-o", out, "--calib", calib, "--format", "json", *extra)
    assert r.exit_code == 0, r.output
    assert _sha(inp) == before
    rep = json.loads(r.stdout)
    claimed = rep["summary"]["drift_verified"]["relative_l2"]
    (site,) = [s for s in rep["sites"] if s["dead"]]  # act2, named as each format names it
    revived = {int(u) for u, a in site["unit_slopes"].items() if a >= MIN_SLOPE}
    assert revived <= dead and len(revived) == rep["summary"]["revived_units"] >= 1
    if kind == "onnx":
        orig = ort.InferenceSession(str(inp), providers=["CPUExecutionProvider"])
        new = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        name = orig.get_inputs()[0].name
        drift = _rel([new.run(None, {name: x})[0]], [orig.run(None, {name: x})[0]])
        (slopes,) = _onnx_slopes(out)
        assert {int(u) for u in np.flatnonzero(slopes)} == revived  # live units keep slope 0
        assert np.all(slopes[list(revived)] >= MIN_SLOPE)
    else:
        sd = torch.load(str(fixtures_dir / "models" / "mlp_trained_sd.pt"), weights_only=True)
        ref = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
        ref.load_state_dict(
            {k.replace("fc1", "0").replace("fc2", "2").replace("head", "4"): v for k, v in sd.items()}
        )
        m = _load_torch(out, kind)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            drift = _rel([m(xt).numpy()], [ref(xt).numpy()])
        # a backward pass on the reloaded file: the rows of fc2 feeding revived units get a gradient
        params = dict(m.named_parameters())
        w = params["fc2.weight"]
        w.requires_grad_(True)
        m(xt).square().sum().backward()
        assert w.grad is not None
        rows = w.grad.abs().sum(1)
        for u in revived:
            assert rows[u] > 0, u
        for u in dead - revived:
            assert rows[u] == 0, u
        ref(xt).square().sum().backward()
        assert all(float(ref[2].weight.grad.abs().sum(1)[u]) == 0 for u in dead)  # dead before the rewrite
    assert drift <= 0.01
    assert drift == pytest.approx(claimed, rel=1e-3, abs=1e-6)


# -- fixed-batch torch.export, ReLU6, prelu -> .ts ----------------------------------------
class _Relu6Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 8)
        self.act = nn.ReLU6()
        self.out = nn.Linear(8, 2)
        with torch.no_grad():
            self.fc.weight.mul_(0.5)
            self.fc.bias[:3] = -6.0  # dead: never above 0
            self.fc.bias[7] = 9.0  # live and mostly capped: the cap must survive the rewrite

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.fc(x)))


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 2)
        with torch.no_grad():
            self.conv.bias[:2] = -8.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def test_fixed_batch_export_is_rechunked_and_revived(tmp_path: Path) -> None:
    model = _ConvNet().eval()
    x = np.random.default_rng(2).standard_normal((40, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ep = torch.export.export(model, (torch.from_numpy(x[:16]),))  # static batch of 16
    src, out = tmp_path / "m.pt2", tmp_path / "o.pt2"
    torch.export.save(ep, str(src))
    r = _run(src, "-o", out, "--calib", tmp_path / "x.npy", "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["summary"]["revived_units"] == 2
    new = _load_torch(out, "pt2")
    with torch.no_grad():
        got = [new(torch.from_numpy(x[i : i + 16])).numpy() for i in (0, 16)]
        want = [model(torch.from_numpy(x[i : i + 16])).numpy() for i in (0, 16)]
    assert _rel(got, want) <= 0.01
    w = dict(new.named_parameters())["conv.weight"]
    new(torch.from_numpy(x[:16])).square().sum().backward()
    assert w.grad is not None and bool((w.grad[:2].abs().sum((1, 2, 3)) > 0).all())


def _relu6_oracle(model: _Relu6Net, x: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """NumPy: min(max(z,0),6) + a·min(z,0) − a·E[min(z,0)], then the output layer."""
    w1, b1 = model.fc.weight.detach().numpy().astype(np.float64), model.fc.bias.detach().numpy()
    w2, b2 = model.out.weight.detach().numpy().astype(np.float64), model.out.bias.detach().numpy()
    z = x.astype(np.float64) @ w1.T + b1
    neg = np.minimum(z, 0)
    h = np.clip(z, 0, 6) + slopes * neg - slopes * neg.mean(0)
    return h @ w2.T + b2


@pytest.mark.parametrize("fmt", ["ts", "pt2"])
def test_relu6_dead_units_get_a_leaky_lower_side_and_keep_the_cap(tmp_path: Path, fmt: str) -> None:
    model = _Relu6Net().eval()
    x = np.random.default_rng(4).standard_normal((64, 6)).astype(np.float32)
    z = x @ model.fc.weight.detach().numpy().T + model.fc.bias.detach().numpy()
    assert (z[:, :3] < -1).all() and (z[:, 7] > 6).mean() > 0.5
    np.save(tmp_path / "x.npy", x)
    src, out = tmp_path / f"m.{fmt}", tmp_path / f"o.{fmt}"
    if fmt == "ts":
        torch.jit.save(torch.jit.script(model), str(src))
    else:
        ep = torch.export.export(
            model, (torch.from_numpy(x[:4]),), dynamic_shapes=({0: torch.export.Dim.AUTO},)
        )
        torch.export.save(ep, str(src))
    r = _run(src, "-o", out, "--calib", tmp_path / "x.npy", "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    site = next(s for s in rep["sites"] if s["status"] == "rewritten")
    slopes = np.zeros(8)
    for u, a in site["unit_slopes"].items():
        slopes[int(u)] = a
    assert set(np.flatnonzero(slopes)) <= {0, 1, 2} and rep["summary"]["revived_units"] >= 1
    new = _load_torch(out, fmt)
    with torch.no_grad():
        got = new(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _relu6_oracle(model, x, slopes), rtol=1e-4, atol=1e-4)


def test_relu6_as_onnx_clip(tmp_path: Path) -> None:
    model = _Relu6Net().eval()
    w1, b1 = model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()
    w2, b2 = model.out.weight.detach().numpy(), model.out.bias.detach().numpy()
    g = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["z"], transB=1),
            helper.make_node("Clip", ["z", "lo", "hi"], ["h"]),
            helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1),
        ],
        "relu6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
            numpy_helper.from_array(np.array(0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6, np.float32), "hi"),
        ],
    )
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    x = np.random.default_rng(4).standard_normal((64, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = _run(src, "-o", out, "--calib", tmp_path / "x.npy", "--format", "json")
    assert r.exit_code == 0, r.output
    (slopes,) = _onnx_slopes(out)
    assert set(np.flatnonzero(slopes)) <= {0, 1, 2} and (slopes[slopes > 0] >= MIN_SLOPE).all()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, _relu6_oracle(model, x, slopes.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_prelu_all_units_from_a_state_dict_into_torchscript(tmp_path: Path) -> None:
    """``--to prelu --slope-units all`` written to .ts: the verification reads aten::prelu back."""
    arch = tmp_path / "arch.py"
    arch.write_text(
        "import torch\nfrom torch import nn\n\n"
        "def build():\n    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))\n"
    )
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        m[0].bias[:2] = -9.0
    torch.save(m.state_dict(), str(tmp_path / "sd.pt"))
    x = np.random.default_rng(5).standard_normal((64, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.ts"
    r = _run(
        tmp_path / "sd.pt", "--arch", f"{arch}:build", "-o", out, "--calib", tmp_path / "x.npy",
        "--to", "prelu", "--slope-units", "all", "--max-drift", "0.05", "--format", "json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    loaded = torch.jit.load(str(out))  # keep the module alive while its graph is read
    g = loaded.forward.graph.copy()
    torch._C._jit_pass_inline(g)
    assert "aten::prelu" in [n.kind() for n in g.nodes()]


# -- refusals and nothing-to-do paths -----------------------------------------------------
def test_refusals_keep_the_input_and_write_nothing(tmp_path: Path) -> None:
    model = _Relu6Net().eval()
    src = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(model), str(src))
    x = np.random.default_rng(4).standard_normal((64, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    before = _sha(src)
    out = tmp_path / "o.ts"
    cases = [
        (["--max-drift", "1e-12"], 1, "nothing revived"),  # nothing fits
        (["--sites", "nope*"], 2, "matches no"),
        (["--drift-outputs", "nope"], 2, "no floating-point output named nope"),
        (["--to", "leaky", "--slope-units", "dead"], 2, "needs --to prelu"),
    ]
    for extra, code, text in cases:
        r = _run(src, "-o", out, "--calib", tmp_path / "x.npy", *extra)
        assert r.exit_code == code and text in r.stderr, (extra, r.output)
        assert "Traceback" not in r.output
        assert not out.exists() and _sha(src) == before
    out.write_bytes(b"keep")
    r = _run(src, "-o", out, "--calib", tmp_path / "x.npy")
    assert r.exit_code == 2 and "--force" in r.stderr and out.read_bytes() == b"keep"
    r = _run(src, "-o", out, "--calib", tmp_path / "x.npy", "--max-drift", "1e-12", "--force")
    assert r.exit_code == 1 and out.read_bytes() == b"keep"  # --force overwrites only within budget
    r = _run(
        src,
        "-o",
        out,
        "--calib",
        tmp_path / "x.npy",
        "--max-drift",
        "1e-12",
        "--force",
        "--write-over-budget",
    )
    assert r.exit_code == 1 and out.read_bytes() != b"keep" and _sha(src) == before


def test_nothing_dead_or_no_relu_is_never_a_silent_success(tmp_path: Path) -> None:
    x = np.random.default_rng(6).standard_normal((32, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    healthy = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        healthy[0].bias.fill_(6.0)
    torch.jit.save(torch.jit.script(healthy), str(tmp_path / "h.ts"))
    for sites in ("dead", "all"):
        r = _run(tmp_path / "h.ts", "-o", tmp_path / "o.ts", "--calib", tmp_path / "x.npy", "--sites", sites)
        assert r.exit_code == 1 and "nothing revived" in r.stderr, r.output
        assert not (tmp_path / "o.ts").exists()
    smooth = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    torch.jit.save(torch.jit.script(smooth), str(tmp_path / "s.ts"))
    r = _run(tmp_path / "s.ts", "-o", tmp_path / "o.ts", "--calib", tmp_path / "x.npy", "--sites", "all")
    assert r.exit_code == 2 and "no ReLU / ReLU6 site" in r.stderr


def test_apply_slopes_per_unit_slopes_and_shifts() -> None:
    from actaudit.rewrite import apply_slopes

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    new = apply_slopes(m, {"1": [0.0, 0.2, 0.05]}, shifts={"1": [0.0, -0.1, 0.3]})
    x = torch.randn(16, 4)
    z = m[0](x).detach().numpy()
    want_h = np.maximum(z, 0) + np.array([0.0, 0.2, 0.05]) * np.minimum(z, 0) - np.array([0.0, -0.1, 0.3])
    want = want_h @ m[2].weight.detach().numpy().T + m[2].bias.detach().numpy()
    np.testing.assert_allclose(new(x).detach().numpy(), want, rtol=1e-5, atol=1e-6)
    assert isinstance(m[1], nn.ReLU)  # the input is not modified


UNTRACEABLE = '''
import torch
import torch.nn.functional as F
from torch import nn


class Untraceable(nn.Module):
    """A functional ReLU behind a shape-dependent branch: torch.fx cannot trace it, TorchScript can."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if h.shape[0] > 0:
            h = F.relu(h)
        return self.out(h)


def build():
    return Untraceable()
'''


def test_functional_relu_that_fx_cannot_trace_goes_through_torchscript(tmp_path: Path) -> None:
    arch = tmp_path / "untraceable.py"
    arch.write_text(UNTRACEABLE)
    ns: dict[str, Any] = {}
    exec(UNTRACEABLE, ns)
    torch.manual_seed(0)
    model = ns["build"]().eval()
    with torch.no_grad():
        model.fc.bias[:2] = -9.0
    torch.save(model.state_dict(), str(tmp_path / "sd.pt"))
    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    base = [tmp_path / "sd.pt", "--arch", f"{arch}:build", "--calib", tmp_path / "x.npy"]
    r = _run(*base, "-o", tmp_path / "o.ts", "--format", "json")
    assert r.exit_code == 0, r.output
    assert any("scripted" in n for n in json.loads(r.stdout)["notes"])
    m = torch.jit.load(str(tmp_path / "o.ts"))
    m(torch.from_numpy(x)).square().sum().backward()
    rows = m.fc.weight.grad.abs().sum(1)
    assert float(rows[:2].max()) > 0  # a formerly dead unit gets a gradient
    r = _run(*base, "-o", tmp_path / "o.pt2")  # no graph to edit: listed with the reason
    assert r.exit_code == 2 and "torch.fx cannot trace" in r.stderr and "TorchScript" in r.stderr
