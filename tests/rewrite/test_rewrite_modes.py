"""``rewrite --mode``: recycle, recycle-leaky and learnable, each held to a computation of its own.

Dead units are found here by a NumPy forward pass over the weights; outputs are compared with
the original model run side by side; rows, columns and slopes are read from the written file
with its own runtime (``torch.jit.load``, ``torch.export.load``); gradients come from a backward
pass on the reloaded model.
"""

from __future__ import annotations

import json
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

ARCH = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act1 = nn.Linear(6, 12), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(12, 10), nn.ReLU()
        self.out = nn.Linear(10, 3)

    def forward(self, x):
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))


def build():
    return Net()
"""
DEAD = [1, 4, 5, 8]


def _net() -> nn.Module:
    ns: dict[str, Any] = {}
    exec(ARCH, ns)
    torch.manual_seed(0)
    m = ns["build"]()
    with torch.no_grad():
        m.fc2.bias[:] = 0.5  # every other unit fires on part of the data
        m.fc2.bias[DEAD] = -40.0  # far below zero on any input of this scale
    return m.eval()


def _data(n: int = 256) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 6)).astype(np.float32)


def _np_pre2(sd: dict[str, torch.Tensor], x: np.ndarray) -> np.ndarray:
    """fc2's output by NumPy from a state_dict (shares no code with the rewrite)."""
    w1, b1 = sd["fc1.weight"].numpy(), sd["fc1.bias"].numpy()
    w2, b2 = sd["fc2.weight"].numpy(), sd["fc2.bias"].numpy()
    return np.maximum(x @ w1.T + b1, 0) @ w2.T + b2


def _dead(m: nn.Module, x: np.ndarray) -> list[int]:
    z = _np_pre2({k: v.detach() for k, v in m.state_dict().items()}, x)
    return [int(u) for u in np.flatnonzero((z > 0).sum(0) == 0)]


def test_recycle_keeps_the_function_and_reinitialises_exactly_the_dead_rows() -> None:
    m, x = _net(), _data()
    assert _dead(m, x) == DEAD
    r = rw.rewrite(m, x, mode="recycle", seed=7)
    assert r.passed and r.revived == len(DEAD)
    new = r.model_out
    with torch.no_grad():
        y0, y1 = m(torch.from_numpy(x)), new(torch.from_numpy(x))
    np.testing.assert_allclose(y1.numpy(), y0.numpy(), rtol=0, atol=1e-5)
    old_sd, new_sd = m.state_dict(), new.state_dict()
    live = [u for u in range(10) if u not in DEAD]
    changed = [u for u in range(10) if not torch.equal(old_sd["fc2.weight"][u], new_sd["fc2.weight"][u])]
    assert changed == DEAD
    assert torch.equal(old_sd["fc2.bias"][live], new_sd["fc2.bias"][live])
    # outgoing weights: the dead units' columns are zero, every other column untouched
    assert torch.count_nonzero(new_sd["out.weight"][:, DEAD]) == 0
    assert torch.equal(old_sd["out.weight"][:, live], new_sd["out.weight"][:, live])
    assert torch.equal(old_sd["fc1.weight"], new_sd["fc1.weight"])
    # the recycled units now fire on most of the calibration data (80 % by design), not all of it
    fires = (_np_pre2({k: v.detach() for k, v in new_sd.items()}, x)[:, DEAD] > 0).mean(0)
    assert ((fires > 0.7) & (fires < 0.9)).all(), fires
    row = next(s for s in r.sites if s.name == "act2")
    assert (
        row.recycled is not None and row.recycled["producer"] == "fc2" and row.recycled["consumer"] == "out"
    )
    assert any(t.startswith("fc2.weight rows") for t in r.trainable)


def test_recycle_is_seeded() -> None:
    m, x = _net(), _data()
    a = rw.rewrite(m, x, mode="recycle", seed=3).model_out.fc2.weight.detach()
    b = rw.rewrite(m, x, mode="recycle", seed=3).model_out.fc2.weight.detach()
    c = rw.rewrite(m, x, mode="recycle", seed=4).model_out.fc2.weight.detach()
    assert torch.equal(a, b) and not torch.equal(a[DEAD], c[DEAD])


def _grad_per_unit(m: nn.Module, x: np.ndarray) -> torch.Tensor:
    """Gradient norm reaching each fc2 unit's weights (its incoming row and its outgoing column)."""
    m = m.train()
    m.zero_grad()
    xt = torch.from_numpy(x)
    y = torch.as_tensor(np.random.default_rng(2).integers(0, 3, size=len(x)))
    nn.functional.cross_entropy(m(xt), y).backward()
    return (m.fc2.weight.grad.pow(2).sum(1) + m.out.weight.grad.pow(2).sum(0)).sqrt()


def test_recycled_units_get_a_gradient_comparable_to_live_units() -> None:
    m, x = _net(), _data()
    live = [u for u in range(10) if u not in DEAD]
    rec = _grad_per_unit(rw.rewrite(m, x, mode="recycle", seed=1).model_out, x)
    dep = _grad_per_unit(rw.rewrite(m, x, mode="deploy").model_out, x)
    ratio_recycle = float(rec[DEAD].mean() / rec[live].mean())
    ratio_deploy = float(dep[DEAD].mean() / dep[live].mean())
    assert ratio_recycle > 0.2, ratio_recycle  # a live unit's order of magnitude
    assert ratio_deploy < 0.05  # the fixed-slope deploy mode: a few percent of a live unit


CONV = """
import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.a1 = nn.Conv2d(2, 6, 3, padding=1), nn.ReLU()
        self.c2, self.a2 = nn.Conv2d(6, 4, 3, padding=1), nn.ReLU()
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.a2(self.c2(self.a1(self.c1(x)))), 1))


def build():
    return Conv()
"""


def test_recycle_through_convolutions_and_a_flatten() -> None:
    ns: dict[str, Any] = {}
    exec(CONV, ns)
    torch.manual_seed(2)
    m = ns["build"]().eval()
    with torch.no_grad():
        m.c1.bias[[0, 3]] = -30.0
        m.c2.bias[[2]] = -30.0
    x = np.random.default_rng(0).standard_normal((64, 2, 5, 5)).astype(np.float32)
    r = rw.rewrite(m, x, mode="recycle", seed=0)
    assert r.passed and r.revived == 3
    new = r.model_out
    with torch.no_grad():
        np.testing.assert_allclose(
            new(torch.from_numpy(x)).numpy(), m(torch.from_numpy(x)).numpy(), rtol=0, atol=1e-5
        )
    # conv consumer: input channels 0 and 3 zeroed, except in c2's own recycled filter 2 (drawn afterwards)
    assert torch.count_nonzero(new.c2.weight[[0, 1, 3]][:, [0, 3]]) == 0
    assert torch.count_nonzero(new.c2.weight[2]) == new.c2.weight[2].numel()
    hw = 25  # flatten: channel 2 spans features 50..74 of the head
    assert torch.count_nonzero(new.head.weight[:, 2 * hw : 3 * hw]) == 0
    assert torch.equal(new.head.weight[:, : 2 * hw], m.head.weight[:, : 2 * hw])
    with torch.no_grad():
        z1 = new.c1(torch.from_numpy(x))
    assert float((z1[:, [0, 3]] > 0).float().mean()) > 0.2


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act, self.bn_fc = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)
        self.bn, self.act2, self.out = nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.act(self.fc(x))  # a residual add consumes act
        return self.out(self.act2(self.bn(self.bn_fc(h))))  # act2's pre-activation is a batch norm


def test_recycle_refuses_a_residual_consumer_and_a_batchnorm_producer_with_the_reason() -> None:
    torch.manual_seed(0)
    m = _Residual().eval()
    with torch.no_grad():
        m.fc.bias[:2] = -40.0
        m.bn.bias[:2] = -40.0
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    r = rw.rewrite(m, x, mode="recycle")
    rows = {s.name: s for s in r.sites}
    assert rows["act"].status == "skipped" and "add" in (rows["act"].reason or "")
    assert rows["act2"].status == "skipped" and "BatchNorm1d" in (rows["act2"].reason or "")
    assert not r.passed and r.revived == 0


def _run(*args: Any) -> Any:
    return CliRunner().invoke(cli, ["rewrite", *[str(a) for a in args]])


def _load(path: Path) -> Any:
    if path.suffix == ".pt2":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(str(path)).module()
    return torch.jit.load(str(path))


def _files(tmp_path: Path) -> tuple[nn.Module, np.ndarray, list[str]]:
    m, x = _net(), _data()
    (tmp_path / "arch.py").write_text(ARCH)
    torch.save(m.state_dict(), str(tmp_path / "sd.pt"))
    np.save(tmp_path / "x.npy", x)
    return (
        m,
        x,
        [tmp_path / "sd.pt", "--arch", f"{tmp_path / 'arch.py'}:build", "--calib", tmp_path / "x.npy"],
    )


@pytest.mark.parametrize("ext", ["ts", "pt2"])
def test_recycle_leaky_written_file_keeps_outputs_rows_columns_and_slopes(tmp_path: Path, ext: str) -> None:
    m, x, base = _files(tmp_path)
    out = tmp_path / f"o.{ext}"
    r = _run(
        *base, "-o", out, "--mode", "recycle-leaky", "--alpha", "0.05", "--seed", "5", "--format", "json"
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["options"]["mode"] == "recycle-leaky"
    got = _load(out)
    with torch.no_grad():
        np.testing.assert_allclose(
            got(torch.from_numpy(x)).numpy(), m(torch.from_numpy(x)).numpy(), rtol=0, atol=1e-5
        )
    sd = {k: v.detach() for k, v in got.state_dict().items()}
    assert torch.count_nonzero(sd["out.weight"][:, DEAD]) == 0
    fires = (_np_pre2(sd, x)[:, DEAD] > 0).mean(0)
    assert (fires > 0.3).all(), fires
    # the slope read back from the file: 0.05 on the recycled units, 0 (plain ReLU) on the others
    slope = next(v for k, v in sd.items() if k.startswith("act2.") and v.numel() == 10)
    want = np.zeros(10, dtype=np.float32)
    want[DEAD] = 0.05
    np.testing.assert_allclose(slope.numpy(), want, rtol=1e-6)
    site = next(s for s in rep["sites"] if s["name"] == "act2")
    assert site["recycled"]["units"] == DEAD


@pytest.mark.parametrize("ext", ["ts", "pt2"])
def test_learnable_slopes_are_bounded_trainable_tensors_in_the_written_file(tmp_path: Path, ext: str) -> None:
    _m, x, base = _files(tmp_path)
    out = tmp_path / f"o.{ext}"
    r = _run(*base, "-o", out, "--mode", "learnable", "--max-drift", "0.05", "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert "act2.weight (slopes)" in rep["trainable"]
    got = _load(out)
    params = dict(got.named_parameters())
    slope = params["act2.weight"]
    assert slope.requires_grad
    chosen = np.zeros(10)
    for u, a in next(s for s in rep["sites"] if s["name"] == "act2")["unit_slopes"].items():
        chosen[int(u)] = a
    np.testing.assert_allclose(slope.detach().numpy(), chosen, rtol=1e-4)
    xt = torch.from_numpy(x)
    got(xt).pow(2).sum().backward()
    assert slope.grad is not None and float(slope.grad[DEAD].abs().sum()) > 0
    # bounded: a slope pushed to 5 acts as the bound (0.3, HIGH of --alpha-range), by hand below
    with torch.no_grad():
        slope[DEAD] = 5.0
        z2 = torch.from_numpy(_np_pre2({k: v.detach() for k, v in got.state_dict().items()}, x))
        eff = np.zeros(10, dtype=np.float32)
        eff[DEAD] = 0.3
        other = [u for u in range(10) if u not in DEAD]
        eff[other] = np.clip(slope.detach().numpy()[other], 0, 0.3)
        shift = np.zeros(10, dtype=np.float32)
        for u, v in (next(s for s in rep["sites"] if s["name"] == "act2")["unit_shifts"] or {}).items():
            shift[int(u)] = v
        h = np.maximum(z2.numpy(), 0) + eff * np.minimum(z2.numpy(), 0) - shift
        want = h @ got.state_dict()["out.weight"].numpy().T + got.state_dict()["out.bias"].numpy()
        np.testing.assert_allclose(got(xt).numpy(), want, rtol=1e-4, atol=1e-4)


def test_apply_puts_the_reports_slopes_and_shifts_into_a_module_exactly() -> None:
    m, x = _net(), _data()
    with torch.no_grad():
        m.fc2.bias[DEAD] = -1.0  # dead on the data, near enough for slopes to fit the budget
        m.fc2.weight[DEAD] *= 0.05
    xt = torch.from_numpy(x)
    for kw in ({"mode": "deploy"}, {"mode": "deploy", "to": "leaky"}, {"mode": "recycle-leaky"}):
        r = rw.rewrite(m, x, **kw)
        assert r.revived > 0, kw
        new = rw.apply(m, r)
        with torch.no_grad():
            y0, y1, y2 = m(xt), r.model_out(xt), new(xt)
        drift = float((y2 - y0).norm() / y0.norm())
        np.testing.assert_allclose(y2.numpy(), y1.numpy(), rtol=0, atol=1e-6)
        assert drift == pytest.approx(r.final_drift.rel_l2, rel=1e-3, abs=1e-7), kw
        assert drift <= 0.01
        assert isinstance(m.act2, nn.ReLU)  # the input is not modified


@pytest.mark.parametrize("mode", ["recycle", "recycle-leaky"])
def test_recycle_an_onnx_file_rows_columns_outputs_and_slopes(tmp_path: Path, mode: str) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    m, x = _net(), _data()
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (torch.from_numpy(x[:2]),),
            str(src),
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
            dynamo=False,
        )
    np.save(tmp_path / "x.npy", x)
    r = _run(src, "-o", out, "--calib", tmp_path / "x.npy", "--mode", mode, "--format", "json")
    assert r.exit_code == 0, r.output
    run = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run
    np.testing.assert_allclose(
        run(None, {"x": x})[0], m(torch.from_numpy(x)).detach().numpy(), rtol=0, atol=1e-5
    )
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    gemms = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Gemm"]
    w2, b2, w_out = inits[gemms[1].input[1]], inits[gemms[1].input[2]], inits[gemms[2].input[1]]
    live = [u for u in range(10) if u not in DEAD]
    sd = m.state_dict()
    assert not np.allclose(w2[DEAD], sd["fc2.weight"].numpy()[DEAD])
    np.testing.assert_array_equal(w2[live], sd["fc2.weight"].numpy()[live])
    assert np.count_nonzero(w_out[:, DEAD]) == 0
    z = _np_pre2({"fc1.weight": sd["fc1.weight"], "fc1.bias": sd["fc1.bias"], "fc2.weight": torch.tensor(w2),
                  "fc2.bias": torch.tensor(b2)}, x)  # fmt: skip
    assert ((z[:, DEAD] > 0).mean(0) > 0.3).all()
    prelu = [inits[n.input[1]] for n in onnx.load(str(out)).graph.node if n.op_type == "PRelu"]
    if mode == "recycle":
        assert prelu == []
    else:
        want = np.zeros(10, dtype=np.float32)
        want[DEAD] = 0.01
        assert len(prelu) == 1
        np.testing.assert_allclose(prelu[0].reshape(-1), want, rtol=1e-6)


@pytest.mark.parametrize("how", ["trace", "script"])
def test_recycle_a_torchscript_file_rows_columns_outputs(tmp_path: Path, how: str) -> None:
    m, x = _net(), _data()
    xt = torch.from_numpy(x)
    if how == "trace":
        ts = torch.jit.trace(m, xt[:2])
    else:
        (tmp_path / "netmod.py").write_text(ARCH)
        import importlib.util

        spec = importlib.util.spec_from_file_location("netmod", tmp_path / "netmod.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        fresh = mod.build()
        fresh.load_state_dict(m.state_dict())
        ts = torch.jit.script(fresh.eval())
    torch.jit.save(ts, str(tmp_path / "m.ts"))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.ts"
    r = _run(
        tmp_path / "m.ts",
        "-o",
        out,
        "--calib",
        tmp_path / "x.npy",
        "--mode",
        "recycle-leaky",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.output
    got = torch.jit.load(str(out))
    with torch.no_grad():
        np.testing.assert_allclose(got(xt).numpy(), m(xt).numpy(), rtol=0, atol=1e-5)
    sd = {k: v.detach() for k, v in got.state_dict().items()}
    live = [u for u in range(10) if u not in DEAD]
    assert torch.count_nonzero(sd["out.weight"][:, DEAD]) == 0
    assert torch.equal(sd["fc2.weight"][live], m.fc2.weight.detach()[live])
    assert (((_np_pre2(sd, x)[:, DEAD]) > 0).mean(0) > 0.7).all()
    rep = json.loads(r.stdout)
    rec = next(s for s in rep["sites"] if s["recycled"])["recycled"]
    assert rec["producer"] == "fc2" and rec["consumer"] == "out" and rec["units"] == DEAD


def test_bounded_slopes_stay_in_their_bound_under_huge_sgd_steps() -> None:
    from actaudit.backends.torch.activations import BoundedUnitPReLU

    act = BoundedUnitPReLU(np.full(4, 0.01), np.zeros(4), 1, 2, None, 0.3)
    opt = torch.optim.SGD(act.parameters(), lr=1e4)
    z = torch.full((8, 4), -50.0)  # far below zero: the slope's gradient is as large as |z|
    for sign in (1.0, -1.0, 1.0):
        opt.zero_grad()
        (sign * act(z).sum()).backward()
        opt.step()
        y = act(z).detach()
        assert torch.isfinite(y).all()
        slope = y[0] / z[0]
        assert bool(((slope >= 0) & (slope <= 0.3 + 1e-7)).all()), slope


def test_slopes_in_file_name_the_sites_as_the_report_does(tmp_path: Path) -> None:
    _m, _x, base = _files(tmp_path)
    for ext in ("ts", "pt2"):
        out = tmp_path / f"n.{ext}"
        r = _run(*base, "-o", out, "--max-drift", "0.05", "--format", "json")
        assert r.exit_code == 0, r.output
        rep = json.loads(r.stdout)
        rewritten = {s["name"] for s in rep["sites"] if s["status"] == "rewritten"}
        every = {s["name"] for s in rep["sites"]}
        sloped = {e["site"] for e in rep["output"]["slopes_in_file"] if e["slope"] is not None}
        assert rewritten and sloped == rewritten
        assert {e["site"] for e in rep["output"]["slopes_in_file"]} <= every  # plain ReLUs too, same names


def test_recycle_a_torch_export_program_rows_columns_outputs(tmp_path: Path) -> None:
    m, x = _net(), _data()
    xt = torch.from_numpy(x)
    ep = torch.export.export(m, (xt[:8],), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.pt2"
    r = _run(
        tmp_path / "m.pt2",
        "-o",
        out,
        "--calib",
        tmp_path / "x.npy",
        "--mode",
        "recycle-leaky",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.output
    got = _load(out)
    with torch.no_grad():
        np.testing.assert_allclose(got(xt).numpy(), m(xt).numpy(), rtol=0, atol=1e-5)
    sd = {k: v.detach() for k, v in got.state_dict().items()}
    live = [u for u in range(10) if u not in DEAD]
    assert torch.count_nonzero(sd["out.weight"][:, DEAD]) == 0
    assert torch.equal(sd["fc2.weight"][live], m.fc2.weight.detach()[live])
    assert (((_np_pre2(sd, x)[:, DEAD]) > 0).mean(0) > 0.7).all()
    rep = json.loads(r.stdout)
    assert next(s for s in rep["sites"] if s["recycled"])["recycled"]["producer"] == "fc2"


def test_recycle_a_traced_torchscript_cnn(tmp_path: Path) -> None:
    ns: dict[str, Any] = {}
    exec(CONV, ns)
    torch.manual_seed(2)
    m = ns["build"]().eval()
    with torch.no_grad():
        m.c1.bias[[0, 3]] = -30.0
        m.c2.bias[[2]] = -30.0
    x = np.random.default_rng(0).standard_normal((64, 2, 5, 5)).astype(np.float32)
    xt = torch.from_numpy(x)
    torch.jit.save(torch.jit.trace(m, xt[:2]), str(tmp_path / "c.ts"))
    r = rw.rewrite(str(tmp_path / "c.ts"), x, mode="recycle")
    assert r.passed and r.revived == 3
    new = r.model_out
    with torch.no_grad():
        np.testing.assert_allclose(new(xt).numpy(), m(xt).numpy(), rtol=0, atol=1e-5)
        sd = new.state_dict()
        assert torch.count_nonzero(sd["c2.weight"][[0, 1, 3]][:, [0, 3]]) == 0
        assert torch.count_nonzero(sd["head.weight"][:, 50:75]) == 0
        z1 = nn.functional.conv2d(xt, sd["c1.weight"], sd["c1.bias"], padding=1)
    assert float((z1[:, [0, 3]] > 0).float().mean()) > 0.6
