"""``actaudit rewrite`` on PyTorch models: every format, slopes in the file, drift against an independent computation."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from actaudit.cli import cli
from actaudit.edit.slopes import bias_shift
from actaudit.rewrite import apply_slopes
from actaudit.rewrite import rewrite as _rewrite

# Three ReLU sites, named by the audit as relu#0 / relu#1 (one module called twice) and
# fc.relu (a functional call at the top level on fc's output, formerly relu#2): dead units are
# forced with bias −4.
ARCH = """
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.c2 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.fc2 = nn.Linear(10, 5)

    def forward(self, x):
        y = self.relu(self.c1(x))
        y = self.relu(self.c2(y))
        y = torch.flatten(y, 1)
        y = F.relu(self.fc(y))
        return self.fc2(y)


def build():
    torch.manual_seed(0)
    m = Net()
    with torch.no_grad():
        m.c1.bias[:3] = -4.0
        m.c2.bias[:2] = -4.0
        m.fc.bias[:3] = -4.0
    return m.eval()
"""
SITES = ("relu#0", "relu#1", "fc.relu")
FORMER = {"fc.relu": "relu#2"}  # the name the functional site had before it was named after fc
DEAD = {"relu#0": [0, 1, 2], "relu#1": [0, 1], "fc.relu": [0, 1, 2, 6]}  # fc unit 6 dies on its own


@pytest.fixture(scope="module")
def arch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The architecture as a real module (TorchScript needs source; pickles refer to it by name)."""
    d = tmp_path_factory.mktemp("rw_arch")
    (d / "rw_arch.py").write_text(ARCH)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(d))
        module = importlib.import_module("rw_arch")
        yield module
    sys.modules.pop("rw_arch", None)


@pytest.fixture
def build(arch: Any) -> Any:
    return arch.build


def reference_forward(m: Any, x: torch.Tensor, slopes: dict[str, float]) -> torch.Tensor:
    """The leaky model computed by hand, independently of any rewrite."""
    a = [slopes.get(s, slopes.get(FORMER.get(s, ""), 0.0)) for s in SITES]
    y = F.leaky_relu(m.c1(x), a[0])
    y = F.leaky_relu(m.c2(y), a[1])
    y = F.leaky_relu(m.fc(torch.flatten(y, 1)), a[2])
    return m.fc2(y)  # type: ignore[no-any-return]


def rel_drift(y1: torch.Tensor, y0: torch.Tensor) -> float:
    return float((y1.detach().double() - y0.detach().double()).norm() / y0.detach().double().norm())


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, arch: Any) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rw_torch")
    m = arch.build()
    x = np.random.default_rng(0).normal(size=(64, 3, 4, 4)).astype(np.float32)
    np.save(d / "x.npy", x)
    (d / "arch.py").write_text(ARCH)
    torch.save(m.state_dict(), d / "sd.pt")
    torch.save(m, d / "pickled.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(m), str(d / "m.ts"))
        ep = torch.export.export(m, (torch.from_numpy(x[:8]),), dynamic_shapes=({0: torch.export.Dim("b")},))
        torch.export.save(ep, str(d / "m.pt2"))
    return {
        "dir": d,
        "x": d / "x.npy",
        "ts": d / "m.ts",
        "pt2": d / "m.pt2",
        "sd": d / "sd.pt",
        "pickled": d / "pickled.pt",
        "arch": d / "arch.py",
    }


def _x(files: dict[str, Path]) -> torch.Tensor:
    return torch.from_numpy(np.load(files["x"]))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def rewrite(*a: Any, **kw: Any) -> Any:
    """The classic one-α-per-site rewrite these tests cover (the default is per unit)."""
    kw.setdefault("mode", "deploy")
    kw.setdefault("to", "leaky")
    if kw["to"] == "prelu":
        kw.setdefault("slope_units", "all")
    kw.setdefault("shift", "none")
    if "alpha_range" not in kw and "min_slope" not in kw:
        kw.update(alpha_range=(0.001, 0.3), min_slope=0.001)  # issue 4's search range
    return _rewrite(*a, **kw)


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(cli, ["rewrite", *_classic([str(a) for a in args])])


def _classic(args: list[str]) -> list[str]:
    """These tests cover the classic one-α-per-site rewrite (issue 4): pin it, the default is per unit."""
    extra = [] if "--mode" in args else ["--mode", "deploy"]
    if "--to" not in args:
        extra += ["--to", "leaky"]
    elif "--slope-units" not in args:
        extra += ["--slope-units", "all"]
    if "--shift" not in args:
        extra += ["--shift", "none"]
    if "--alpha-range" not in args and "--min-slope" not in args:
        extra += ["--alpha-range", "0.001,0.3", "--min-slope", "0.001"]  # issue 4's search range
    return [*args, *extra]


def _load_written(path: Path, fmt: str) -> Any:
    if fmt == "pt2":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(str(path)).module()
    if fmt == "ts":
        return torch.jit.load(str(path))
    return torch.load(str(path), weights_only=False)


# -- the Python API ---------------------------------------------------------------------
def test_apply_slopes_splits_the_reused_module_and_rewrites_the_functional_call(build: Any) -> None:
    m = build()
    slopes = {"relu#0": 0.05, "relu#1": 0.2, "relu#2": 0.1}
    out = apply_slopes(m, slopes)
    x = torch.randn(16, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(out(x), reference_forward(m, x, slopes), rtol=1e-5, atol=1e-6)
    leaky = sorted(float(mod.negative_slope) for mod in out.modules() if isinstance(mod, nn.LeakyReLU))
    assert leaky == [0.05, 0.1, 0.2]
    assert isinstance(m.relu, nn.ReLU)  # the input model is untouched
    assert set(out.state_dict()) == set(m.state_dict())  # parameters keep their names


def test_apply_slopes_takes_the_functional_site_by_its_new_name(build: Any) -> None:
    # The audit names F.relu(self.fc(y)) "fc.relu"; the same call formerly read "relu#2" (above).
    m = build()
    slopes = {"relu#0": 0.05, "relu#1": 0.2, "fc.relu": 0.1}
    out = apply_slopes(m, slopes)
    x = torch.randn(16, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(out(x), reference_forward(m, x, slopes), rtol=1e-5, atol=1e-6)
    leaky = sorted(float(mod.negative_slope) for mod in out.modules() if isinstance(mod, nn.LeakyReLU))
    assert leaky == [0.05, 0.1, 0.2]


def test_apply_slopes_prelu_has_one_slope_per_unit_and_trains(build: Any) -> None:
    m = build()
    out = apply_slopes(
        m, {"relu#0": 0.25, "relu#2": 0.1}, to="prelu", units={"relu#0": (8, 1), "relu#2": (10, 1)}
    )
    prelus = [mod for mod in out.modules() if isinstance(mod, nn.PReLU)]
    assert sorted(p.weight.numel() for p in prelus) == [8, 10]
    assert sorted(float(p.weight.detach()[0]) for p in prelus) == pytest.approx([0.1, 0.25])
    out(torch.randn(4, 3, 4, 4)).sum().backward()
    assert all(p.weight.grad is not None for p in prelus)


def test_apply_slopes_unknown_site_is_an_error_not_silence(build: Any) -> None:
    from actaudit.errors import InputError

    with pytest.raises(InputError, match="no module"):
        apply_slopes(build(), {"nope.relu": 0.1})


def test_rewrite_in_memory_returns_the_model(build: Any, files: dict[str, Path]) -> None:
    m = build()
    rep = rewrite(m, str(files["x"]), alpha=0.05, max_drift=1.0)
    assert [s.name for s in rep.rewritten] == list(SITES)
    assert {s.name: s.dead for s in rep.sites} == {k: len(v) for k, v in DEAD.items()}
    x = _x(files)
    with torch.no_grad():
        want = reference_forward(m, x, dict.fromkeys(SITES, 0.05))
        torch.testing.assert_close(rep.model_out(x), want, rtol=1e-5, atol=1e-6)
        assert rep.drift is not None
        assert rep.drift.rel_l2 == pytest.approx(rel_drift(want, m(x)), rel=1e-4)


# -- every format ----------------------------------------------------------------------------
FORMATS = {
    "ts": (["{ts}"], "o.ts", "ts"),
    "pt2": (["{pt2}"], "o.pt2", "pt2"),
    "pickled": (["{pickled}", "--trust-pickle"], "o.pt", "pickle"),
    "sd-ts": (["{sd}", "--arch", "{arch}:build"], "o_sd.ts", "ts"),
    "sd-pt2": (["{sd}", "--arch", "{arch}:build", "--output-format", "pt2"], "o_sd.bin", "pt2"),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_fixed_alpha_in_every_format(build: Any, files: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    args, name, kind = FORMATS[fmt]
    model_args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    src = Path(model_args[0])
    before = _sha(src)
    out = tmp_path / name
    r = _run(
        [
            *model_args,
            "-o",
            out,
            "--calib",
            files["x"],
            "--alpha",
            "0.05",
            "--max-drift",
            "1",
            "--format",
            "json",
        ]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert _sha(src) == before  # the input is never modified
    assert rep["output"]["written"] and out.exists()
    assert not list(tmp_path.glob(".*.tmp"))
    assert [s["alpha"] for s in rep["sites"]] == [0.05, 0.05, 0.05]
    if fmt.startswith("sd"):
        assert any("state_dict" in n for n in rep["notes"])
    # what is in the file: leaky ops with the slope, no relu left
    slopes = [s["slope"] for s in rep["output"]["slopes_in_file"]]
    assert slopes and all(s == pytest.approx(0.05) for s in slopes)
    m = build()
    x = _x(files)
    loaded = _load_written(out, kind)
    with torch.no_grad():
        y = loaded(x)
        want = reference_forward(m, x, dict.fromkeys(SITES, 0.05))
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)
        assert rep["summary"]["drift_verified"]["relative_l2"] == pytest.approx(
            rel_drift(want, m(x)), rel=1e-4
        )
    if kind == "ts":
        from actaudit.backends.torch.surgery import torchscript_slopes

        ops = [op for _, op, _ in torchscript_slopes(loaded)]
        assert ops and all(op.startswith("leaky_relu") for op in ops)
        loaded(x).sum().backward()
        assert all(p.requires_grad for p in loaded.parameters())


def test_torchscript_graph_has_per_site_slopes(files: dict[str, Path], tmp_path: Path) -> None:
    from actaudit.backends.torch.surgery import SlopePlan, rewrite_torchscript, torchscript_slopes

    ts = torch.jit.load(str(files["ts"]))
    # A plan may name a site by its former name (a report of an older actaudit): it finds the same node.
    res = rewrite_torchscript(ts, [SlopePlan("relu#0", 0.01), SlopePlan("relu#2", 0.2)])
    assert set(res.rewritten) == {"relu#0", "relu#2"}
    found = {n: (op, s) for n, op, s in torchscript_slopes(res.model)}
    assert found["relu#0"] == ("leaky_relu", 0.01)
    assert found["relu#1"][0] == "relu"
    assert found["fc.relu"][0].startswith("leaky_relu") and found["fc.relu"][1] == 0.2
    assert "relu#2" not in found  # listings carry the current names only
    res = rewrite_torchscript(ts, [SlopePlan("fc.relu", 0.3)])
    assert set(res.rewritten) == {"fc.relu"}
    assert {n: s for n, _, s in torchscript_slopes(res.model)}["fc.relu"] == 0.3


def test_export_graph_targets_and_prelu_parameter(build: Any, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "p.pt2"
    r = _run(
        [
            files["pt2"],
            "-o",
            out,
            "--calib",
            files["x"],
            "--alpha",
            "0.05",
            "--max-drift",
            "1",
            "--to",
            "prelu",
            "--format",
            "json",
        ]
    )
    assert r.exit_code == 0, r.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.load(str(out))
    targets = [str(n.target) for n in ep.graph_module.graph.nodes if n.op == "call_function"]
    assert sum("prelu" in t for t in targets) == 3 and not any(t.startswith("aten.relu") for t in targets)
    shapes = sorted(tuple(v.shape) for k, v in ep.state_dict.items() if k.startswith("actaudit_prelu"))
    assert shapes == [(8,), (8,), (10,)]
    assert all(
        float(v.detach().min()) == float(v.detach().max()) == pytest.approx(0.05)
        for k, v in ep.state_dict.items()
        if k.startswith("actaudit_prelu")
    )
    m = build()
    x = _x(files)
    with torch.no_grad():
        torch.testing.assert_close(
            ep.module()(x), reference_forward(m, x, dict.fromkeys(SITES, 0.05)), rtol=1e-5, atol=1e-6
        )


def test_prelu_on_torchscript_is_refused_with_the_reason(files: dict[str, Path], tmp_path: Path) -> None:
    r = _run([files["ts"], "-o", tmp_path / "p.ts", "--calib", files["x"], "--to", "prelu"])
    assert r.exit_code == 2
    assert "cannot add a parameter" in r.stderr
    assert not (tmp_path / "p.ts").exists()


# -- the automatic slope ---------------------------------------------------------------------
@pytest.mark.parametrize("budget", [0.01, 0.05])
def test_auto_alpha_respects_the_budget(
    build: Any, files: dict[str, Path], tmp_path: Path, budget: float
) -> None:
    out = tmp_path / "auto.pt2"
    r = _run([files["pt2"], "-o", out, "--calib", files["x"], "--max-drift", budget, "--format", "json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    slopes = {s["name"]: s["alpha"] for s in rep["sites"]}
    assert all(0.001 <= a <= 0.3 for a in slopes.values())
    assert rep["search"]["passes"] <= 10
    # independent check: run the written file and the hand-computed leaky model
    m = build()
    x = _x(files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.load(str(out))
    with torch.no_grad():
        y = ep.module()(x)
        torch.testing.assert_close(y, reference_forward(m, x, slopes), rtol=1e-5, atol=1e-6)
        assert rel_drift(y, m(x)) <= budget
    # the search uses the budget: within [ACCEPT, 1] of it, or every slope at the top
    assert rel_drift(y, m(x)) >= 0.5 * budget or all(a == 0.3 for a in slopes.values())


def test_looser_budget_gives_larger_slopes(files: dict[str, Path]) -> None:
    tight = rewrite(str(files["ts"]), str(files["x"]), max_drift=0.01)
    loose = rewrite(str(files["ts"]), str(files["x"]), max_drift=0.1)
    assert sum(loose.slopes.values()) > sum(tight.slopes.values())
    assert tight.drift is not None and loose.drift is not None
    assert tight.drift.rel_l2 <= 0.01 < loose.drift.rel_l2 <= 0.1


# -- compensation ---------------------------------------------------------------------------
def test_bias_shift_matches_a_convolution() -> None:
    conv = nn.Conv2d(6, 4, 3, groups=2, bias=False)
    shift = np.linspace(-1, 1, 6)
    x = torch.tensor(shift, dtype=torch.float32).view(1, 6, 1, 1).expand(1, 6, 5, 5)
    with torch.no_grad():
        want = conv(x)[0, :, 1, 1].double().numpy()
    got = bias_shift("conv", conv.weight.detach().numpy(), shift, groups=2)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["ts", "pt2", "pickled"])
def test_compensation_lowers_drift(files: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    extra = ["--trust-pickle"] if fmt == "pickled" else []
    out = tmp_path / ("c." + ("pt" if fmt == "pickled" else fmt))
    r = _run(
        [
            files[fmt],
            *extra,
            "-o",
            out,
            "--calib",
            files["x"],
            "--alpha",
            "0.2",
            "--max-drift",
            "1",
            "--compensate",
            "--format",
            "json",
        ]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    with_c = rep["summary"]["drift_verified"]["relative_l2"]
    without = rep["summary"]["drift_uncompensated"]["relative_l2"]
    assert with_c < 0.5 * without
    comp = {s["name"]: s["compensation"] for s in rep["sites"]}
    # relu#0 → 1×1 conv, relu#1 → flatten → fc, fc.relu → fc2: no padding anywhere, so exact
    assert all(c and "not compensated" not in c and "padded" not in c for c in comp.values()), comp


# -- refusals -------------------------------------------------------------------------------
def test_fixed_alpha_over_budget_fails_the_gate_and_writes_nothing(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "over.ts"
    r = _run([files["ts"], "-o", out, "--calib", files["x"], "--alpha", "0.3", "--max-drift", "0.001"])
    assert r.exit_code == 1
    assert "gate failed" in r.stderr and not out.exists()
    r = _run(
        [files["ts"], "-o", out, "--calib", files["x"], "--alpha", "0.3", "--max-drift", "0.001", "--force"]
    )
    assert r.exit_code == 1 and not out.exists()  # --force only overwrites; it does not lift the drift gate
    r = _run(
        [
            files["ts"],
            "-o",
            out,
            "--calib",
            files["x"],
            "--alpha",
            "0.3",
            "--max-drift",
            "0.001",
            "--write-over-budget",
        ]
    )
    assert r.exit_code == 1 and out.exists()  # --write-over-budget writes, and still reports the failed gate


def test_existing_output_needs_force(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "exists.ts"
    out.write_bytes(b"keep me")
    r = _run([files["ts"], "-o", out, "--calib", files["x"], "--alpha", "0.01", "--max-drift", "1"])
    assert r.exit_code == 2 and "already exists" in r.stderr
    assert out.read_bytes() == b"keep me"


def test_output_equal_to_input_is_refused(files: dict[str, Path]) -> None:
    before = _sha(files["ts"])
    r = _run([files["ts"], "-o", files["ts"], "--calib", files["x"], "--force"])
    assert r.exit_code == 2 and "is the input file" in r.stderr and "(the model input)" in r.stderr
    assert _sha(files["ts"]) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--alpha", "2"], "not a slope"),
        (["--alpha", "fast"], "neither 'auto'"),
        (["--alpha-range", "0.3,0.1"], "LOW <= HIGH"),
        (["--sites", "nothing*"], "matches no ReLU site"),
        (["--output-format", "pt2"], "needs an eager model"),
    ],
)
def test_usage_errors(files: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    r = _run([files["ts"], "-o", tmp_path / "u.ts", "--calib", files["x"], *args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert not (tmp_path / "u.ts").exists()


def test_pickle_needs_trust_and_state_dict_needs_arch_and_a_format(
    files: dict[str, Path], tmp_path: Path
) -> None:
    r = _run([files["pickled"], "-o", tmp_path / "a.pt", "--calib", files["x"]])
    assert r.exit_code == 2 and "--trust-pickle" in r.stderr
    r = _run([files["sd"], "-o", tmp_path / "a.ts", "--calib", files["x"]])
    assert r.exit_code == 2 and "--arch" in r.stderr
    r = _run(
        [files["sd"], "--arch", f"{files['arch']}:build", "-o", tmp_path / "a.bin", "--calib", files["x"]]
    )
    assert r.exit_code == 2 and "--output-format" in r.stderr
    assert not list(tmp_path.iterdir())


def test_verification_failure_leaves_nothing(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actaudit.backends.torch import surgery

    original = torch.jit.load(str(files["ts"]))
    monkeypatch.setattr(surgery.TorchSurgeon, "reload", lambda self, path: original)
    out = tmp_path / "v.ts"
    r = _run([files["ts"], "-o", out, "--calib", files["x"], "--alpha", "0.2", "--max-drift", "10"])
    assert r.exit_code == 1 and "nothing was written" in r.stderr
    assert not list(tmp_path.iterdir())


def test_healthy_model_has_nothing_to_rewrite(tmp_path: Path) -> None:
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        m[0].bias.fill_(5.0)
    rep = rewrite(
        m, np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32), output=str(tmp_path / "o.pt")
    )
    assert not rep.rewritten and not rep.passed  # nothing revived is never a silent success
    assert rep.output["written"] is False and not (tmp_path / "o.pt").exists()
    assert any("nothing to revive" in n for n in rep.notes)


def test_table_shows_slopes_drift_and_reference_slopes(files: dict[str, Path], tmp_path: Path) -> None:
    r = _run(
        [files["ts"], "-o", tmp_path / "t.ts", "--calib", files["x"], "--alpha", "0.02", "--max-drift", "1"]
    )
    assert r.exit_code == 0, r.output
    assert "relu#1" in r.stdout and "0.02" in r.stdout
    assert "1/5.5" in r.stdout and "relative L2" in r.stdout
    assert math.isfinite(float(r.stdout.split("relative L2 ")[1].split(",")[0]))


def test_prelu_slope_on_dead_units_only_in_eager_and_export(files: dict[str, Path], tmp_path: Path) -> None:
    extra = ["--alpha", "0.1", "--max-drift", "10", "--to", "prelu", "--slope-units", "dead"]
    r = _run([files["pickled"], "--trust-pickle", "-o", tmp_path / "d.pt", "--calib", files["x"], *extra])
    assert r.exit_code == 0, r.output
    m = torch.load(str(tmp_path / "d.pt"), weights_only=False)
    from actaudit.backends.torch.surgery import UnitPReLU

    weights = [mod.weight.detach().numpy() for mod in m.modules() if isinstance(mod, (nn.PReLU, UnitPReLU))]
    assert sorted(np.flatnonzero(w).tolist() for w in weights) == sorted(DEAD.values())
    assert all(np.allclose(w[w != 0], 0.1) for w in weights)
    r = _run([files["pt2"], "-o", tmp_path / "d.pt2", "--calib", files["x"], *extra])
    assert r.exit_code == 0, r.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.load(str(tmp_path / "d.pt2"))
    vecs = [
        v.detach().numpy()
        for k, v in ep.state_dict.items()
        if k.startswith(("actaudit_prelu", "actaudit_slope"))
    ]
    assert sorted(np.flatnonzero(v).tolist() for v in vecs) == sorted(DEAD.values())


class _ListNet(torch.nn.Module):
    """ReLUs in a ModuleList (TorchScript drops the list's name) after a softsign."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])
        self.act = torch.nn.ModuleList([torch.nn.ReLU() for _ in range(2)])
        self.soft = torch.nn.Softsign()
        with torch.no_grad():
            for fc in self.fc:
                fc.bias[0] = -5.0  # softsign keeps inputs in (-1, 1): unit 0 never fires

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.soft(x)
        for fc, act in zip(self.fc, self.act):  # noqa: B905 (TorchScript has no zip(strict=))
            x = act(fc(x))
        return x


def test_torchscript_rewrite_uses_the_audit_site_names(tmp_path) -> None:
    from click.testing import CliRunner

    from actaudit.cli import cli

    torch.manual_seed(0)
    src, out = tmp_path / "m.ts", tmp_path / "out.ts"
    torch.jit.save(torch.jit.script(_ListNet().eval()), str(src))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32))
    args = ["rewrite", str(src), "-o", str(out), "--calib", str(tmp_path / "x.npy")]
    classic = ["--mode", "deploy", "--to", "leaky", "--shift", "none"]
    r = CliRunner().invoke(cli, [*args, *classic, "--alpha", "0.05", "--max-drift", "10", "--format", "json"])
    assert r.exit_code == 0, r.output
    rewritten = [s["name"] for s in json.loads(r.stdout)["sites"] if s.get("status") == "rewritten"]
    assert rewritten == ["act.0", "act.1"]
    graph = torch.jit.load(str(out)).forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    kinds = [n.kind() for n in graph.nodes()]
    assert kinds.count("aten::leaky_relu") == 2 and "aten::relu" not in kinds
