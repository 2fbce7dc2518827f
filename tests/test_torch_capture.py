"""PyTorch capture against pre-activations recomputed by hand in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import actaudit
from actaudit.errors import ModelRunError


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv1(x)))
        return self.relu(self.conv2(y) + x)


class Net(nn.Module):
    """Stem (functional relu) → block (reused in-place ReLU) → tokens → linear over features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = Block()
        self.proj = nn.Linear(4, 5)
        self.head = nn.Linear(5, 2)
        with torch.no_grad():
            self.stem.bias[1] = -1e3  # channel 1 of the stem is dead by construction
            self.proj.bias[3] = -1e3  # feature 3 of proj is dead by construction
            self.head.bias[0] = 50.0  # tanh unit 0 saturated high by construction
            self.block.bn.running_mean.uniform_(-0.5, 0.5)
            self.block.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = self.block(x)
        t = x.flatten(2).transpose(1, 2)  # [batch, tokens, features]
        t = self.proj(t).relu()
        return torch.tanh(self.head(t.mean(1)))


def _preacts(m: Net, x: torch.Tensor) -> dict[str, tuple[np.ndarray, int]]:
    """Pre-activation per site, with the unit axis, recomputed step by step."""
    with torch.no_grad():
        a = m.stem(x)
        h = F.relu(a)
        b = m.block.bn(m.block.conv1(h))
        c = m.block.conv2(F.relu(b)) + h
        t = F.relu(c).flatten(2).transpose(1, 2)
        p = m.proj(t)
        q = m.head(F.relu(p).mean(1))
    return {
        "stem.relu": (a.numpy(), 1),
        "block.relu#0": (b.numpy(), 1),
        "block.relu#1": (c.numpy(), 1),
        "proj.relu": (p.numpy(), 2),
        "head.tanh": (q.numpy(), 1),
    }


def _counts(z: np.ndarray, axis: int, low: float, high: float | None = None) -> dict[str, np.ndarray]:
    zz = np.moveaxis(z, axis, 0).reshape(z.shape[axis], -1).astype(np.float64)
    out = {
        "low": (zz <= low).sum(1),
        "min": zz.min(1),
        "max": zz.max(1),
        "neg_sum": np.minimum(zz, 0).sum(1),
        "neg_sq": (np.minimum(zz, 0) ** 2).sum(1),
        "pos_sq": (np.maximum(zz, 0) ** 2).sum(1),
    }
    if high is not None:
        out["high"] = (zz >= high).sum(1)
    return out


@pytest.fixture(scope="module")
def net_and_data() -> tuple[Net, np.ndarray]:
    torch.manual_seed(0)
    m = Net().eval()
    x = torch.randn(40, 3, 6, 6).numpy()
    return m, x


def _sites(report: actaudit.Report) -> dict[str, object]:
    return {v.info.name: v for v in report.sites}


def test_eager_counters_match_hand_computation(net_and_data) -> None:
    m, x = net_and_data
    report = actaudit.audit(m, x, batch_size=16)
    sites = _sites(report)
    # Functional calls are named after the module that produced their input; the former names stay.
    assert list(sites) == ["stem.relu", "block.relu#0", "block.relu#1", "proj.relu", "head.tanh"]
    formers = {n: v.info.former_name for n, v in sites.items()}
    assert formers == {
        "stem.relu": "relu#0",
        "block.relu#0": None,
        "block.relu#1": None,
        "proj.relu": "relu#1",
        "head.tanh": "tanh",
    }
    expected = _preacts(m, torch.from_numpy(x))
    tanh_hi = 2.993222846126381
    for name, (z, axis) in expected.items():
        v = sites[name]
        assert v.info.unit_axis == axis, name
        low = -tanh_hi if name == "head.tanh" else 0.0
        exp = _counts(z, axis, low, tanh_hi if name == "head.tanh" else None)
        st = v.stats
        assert st.elements == z.size // z.shape[axis]
        assert st.samples == 40
        np.testing.assert_array_equal(st.low, exp["low"], err_msg=name)
        np.testing.assert_allclose(st.min, exp["min"], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(st.max, exp["max"], rtol=1e-6, err_msg=name)
        # Sums over many elements carry float32 rounding that differs between CPUs (oneDNN picks
        # kernels per CPU); a unit with a tiny sum beside large ones gets the site's absolute slack.
        for key in ("neg_sum", "neg_sq", "pos_sq"):
            ref = exp[key]
            slack = 1e-4 * float(np.abs(ref).max())
            np.testing.assert_allclose(getattr(st, key), ref, rtol=1e-4, atol=slack, err_msg=f"{name} {key}")
        if "high" in exp:
            np.testing.assert_array_equal(st.high, exp["high"])
        if name != "head.tanh":
            assert v.dead_units == [int(i) for i in np.flatnonzero(exp["low"] == st.elements)], name
    assert 1 in sites["stem.relu"].dead_units  # forced by the stem's bias
    assert 3 in sites["proj.relu"].dead_units  # forced by proj's bias
    assert sites["head.tanh"].saturated_units == [0]
    # the in-place ReLU was measured before it clamped its input
    assert sites["block.relu#1"].stats.min.min() < 0


@pytest.mark.parametrize("fmt", ["script", "trace", "export"])
def test_compiled_formats_agree_with_eager(net_and_data, tmp_path, fmt) -> None:
    m, x = net_and_data
    path = tmp_path / f"net.{fmt}"
    ex = torch.from_numpy(x[:4])
    if fmt == "script":
        torch.jit.save(torch.jit.script(m), str(path))
    elif fmt == "trace":
        torch.jit.save(torch.jit.trace(m, ex), str(path))
    else:
        batch = torch.export.Dim("batch", min=1)
        torch.export.save(torch.export.export(m, (ex,), dynamic_shapes={"x": {0: batch}}), str(path))
    eager = _sites(actaudit.audit(m, x, batch_size=16))
    other = _sites(actaudit.audit(str(path), x, batch_size=16))
    assert list(other) == list(eager)
    for name, v in eager.items():
        w = other[name]
        assert (w.info.kind, w.info.unit_axis, w.info.units) == (v.info.kind, v.info.unit_axis, v.info.units)
        np.testing.assert_array_equal(w.stats.low, v.stats.low)
        assert w.dead_units == v.dead_units and w.saturated_units == v.saturated_units


def test_model_is_left_as_it_was(net_and_data) -> None:
    m, x = net_and_data
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    actaudit.audit(m, x[:8])
    assert m.training and all(mod.training for mod in m.modules())
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())
    m.eval()


def test_memory_of_statistics_does_not_depend_on_samples(net_and_data) -> None:
    m, x = net_and_data
    small = actaudit.audit(m, x[:8])
    large = actaudit.audit(m, np.concatenate([x] * 5))
    for a, b in zip(small.sites, large.sites, strict=True):
        assert a.stats.low.shape == b.stats.low.shape


def test_unit_axis_override(net_and_data) -> None:
    m, x = net_and_data
    r = actaudit.audit(m, x[:8], unit_axis=["proj.relu=1"])
    v = _sites(r)["proj.relu"]
    assert (v.info.unit_axis, v.info.units) == (1, 36)  # tokens instead of features


def test_unit_axis_override_by_former_name_still_applies_with_a_note(net_and_data) -> None:
    m, x = net_and_data
    r = actaudit.audit(m, x[:8], unit_axis=["relu#1=1"])  # proj.relu's name before it was named after proj
    v = _sites(r)["proj.relu"]
    assert (v.info.unit_axis, v.info.units) == (1, 36)
    assert any("relu#1 → proj.relu" in w for w in r.warnings), r.warnings


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x)
        a = torch.clamp(z, 0, 6) + F.relu6(z) + F.hardtanh(z) + torch.sigmoid(z) + F.leaky_relu(z, 0.2)
        b = (
            F.gelu(z)
            + F.silu(z)
            + F.mish(z)
            + F.hardswish(z)
            + F.softplus(z)
            + F.elu(z)
            + F.selu(z)
            + F.celu(z)
        )
        c = F.softsign(z) + F.hardsigmoid(z) + z.clamp(min=1e-6) + torch.clamp(z, min=0)
        return a + b + c + z.clone().relu_()


def test_functional_zoo_kinds() -> None:
    torch.manual_seed(1)
    r = actaudit.audit(Functional().eval(), torch.randn(16, 6).numpy())
    got = [(v.info.name, v.info.kind) for v in r.sites]
    assert got == [
        # every call reads fc's output: named after fc, the two clamps told apart by #k
        ("fc.clamp#0", "relu6"),
        ("fc.relu6", "relu6"),
        ("fc.hardtanh", "hardtanh"),
        ("fc.sigmoid", "sigmoid"),
        ("fc.leaky_relu", "leaky_relu"),
        ("fc.gelu", "gelu"),
        ("fc.silu", "silu"),
        ("fc.mish", "mish"),
        ("fc.hardswish", "hardswish"),
        ("fc.softplus", "softplus"),
        ("fc.elu", "elu"),
        ("fc.selu", "selu"),
        ("fc.celu", "celu"),
        ("fc.softsign", "softsign"),
        ("fc.hardsigmoid", "hardsigmoid"),
        ("fc.clamp#1", "relu"),
        ("relu", "relu"),  # z.clone(): no module produced its input, so the former rule stays
    ]


class Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.fc(x))
        if bool((x > 3).any()):
            raise ValueError("input out of range")
        return y


def test_model_error_names_batch_and_site() -> None:
    x = np.zeros((8, 3), dtype=np.float32)
    x[5, 0] = 10
    with pytest.raises(
        ModelRunError, match=r"ValueError on batch 1 \(samples 4–7; inputs \(4, 3\)\), after site relu#0"
    ):
        actaudit.audit(Boom(), x, batch_size=4)


@pytest.mark.parametrize("fmt", ["script", "export"])
def test_functional_zoo_reads_alike_when_compiled(tmp_path, fmt) -> None:
    """Every kind, softsign's x / (1 + |x|) included, is found in compiled graphs too."""
    torch.manual_seed(1)
    m = Functional().eval()
    x = torch.randn(16, 6)
    path = tmp_path / f"zoo.{fmt}"
    if fmt == "script":
        torch.jit.save(torch.jit.script(m), str(path))
    else:
        torch.export.save(
            torch.export.export(m, (x,), dynamic_shapes={"x": {0: torch.export.Dim("b")}}), str(path)
        )
    eager = actaudit.audit(m, x.numpy())
    compiled = actaudit.audit(str(path), x.numpy())
    assert [(v.info.name, v.info.kind) for v in compiled.sites] == [
        (v.info.name, v.info.kind) for v in eager.sites
    ]
    for a, b in zip(eager.sites, compiled.sites, strict=True):
        np.testing.assert_array_equal(a.stats.low, b.stats.low, err_msg=a.info.name)
        np.testing.assert_array_equal(a.stats.high, b.stats.high, err_msg=a.info.name)
    assert not compiled.warnings or all("composite" not in w for w in compiled.warnings)


def test_fixed_batch_export_is_fed_in_chunks(net_and_data, tmp_path) -> None:
    m, x = net_and_data
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(m, (torch.from_numpy(x[:2]),)), str(path))  # batch fixed at 2
    r = actaudit.audit(str(path), x[:5], batch_size=4)
    assert r.calibration["samples"] == 4
    assert any("fixed batch size of 2" in w for w in r.warnings)
    assert any("1 of 5 calibration samples were not used" in w for w in r.warnings)
    eager = actaudit.audit(m, x[:4])
    assert [v.dead_units for v in r.sites] == [v.dead_units for v in eager.sites]
