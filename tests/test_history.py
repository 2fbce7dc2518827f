"""``actaudit history`` over a seeded training run whose units die (and one revives) at known steps.

The steps are forced by construction, not read from the code under test: at step 3 unit 2
of ``fc1`` gets zero incoming weights and bias -10 (its pre-activation is -10 on every
input, so it never fires and plain SGD never moves it again); at step 6 the same is done to
unit 5 of ``fc2``; at step 8 unit 2 of ``fc1`` gets bias +1 (it fires on every input
again). Every other unit starts with bias 0.5 and small weights, so it fires on the
calibration inputs near zero and stays far from the threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from actaudit.callbacks import DeadUnitMonitor
from actaudit.history import natural_key, order_checkpoints

ARCH = """
import os

from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(8, 6)
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


def build():
    if os.environ.get("BUILD_LOG"):  # the test counts how often the builder runs
        with open(os.environ["BUILD_LOG"], "a") as f:
            f.write("built\\n")
    return Net()
"""

STEPS = 10
# (site index in graph order, unit, event, step): what the construction forces
EXPECTED = [(0, 2, "died", 3), (1, 5, "died", 6), (0, 2, "revived", 8)]


def _force(net: nn.Module, step: int) -> None:
    with torch.no_grad():
        if step == 3:
            net.fc1.weight[2] = 0.0
            net.fc1.bias[2] = -10.0
        if step == 6:
            net.fc2.weight[5] = 0.0
            net.fc2.bias[5] = -10.0
        if step == 8:
            net.fc1.bias[2] = 1.0


def _net(tmp: Path) -> nn.Module:
    arch = tmp / "net.py"
    arch.write_text(ARCH)
    ns: dict = {}
    exec(compile(ARCH, str(arch), "exec"), ns)  # the same class the CLI loads through --arch
    torch.manual_seed(0)
    net = ns["build"]()
    with torch.no_grad():
        net.fc1.weight.mul_(0.3)
        net.fc2.weight.mul_(0.1)
        net.fc1.bias.fill_(0.5)
        net.fc2.bias.fill_(0.5)
    return net


def _train(tmp: Path, save: object, monitor_for: object = None) -> None:
    """Seeded SGD on a toy regression; ``save(net, step)`` after each step's forced change.

    ``monitor_for(net)``, when given, builds a :class:`DeadUnitMonitor` stepped after each save.
    """
    net = _net(tmp)
    monitor = monitor_for(net) if callable(monitor_for) else None
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for step in range(1, STEPS + 1):
        x = torch.rand(16, 4, generator=gen) - 0.5
        loss = (net(x) - x[:, :3]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        _force(net, step)
        save(net, step)
        if monitor is not None:
            monitor.step(step)


def _calib(tmp: Path) -> tuple[Path, np.ndarray]:
    x = ((np.random.default_rng(2).random((64, 4)) - 0.5) * 0.5).astype(np.float32)
    x[0] = 0.0
    path = tmp / "calib.npy"
    np.save(path, x)
    return path, x


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "BUILD_LOG": str(cwd / "built.log"),
    }
    return subprocess.run(
        [sys.executable, "-m", "actaudit", "history", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def _events(d: dict) -> list[tuple[int, int, str, int]]:
    """(site index, unit, event, step) of a history, the step read from the checkpoint label."""
    index = {s["name"]: i for i, s in enumerate(d["sites"])}
    out = []
    for e in d["events"]:
        step = int("".join(ch for ch in e["label"].split(".")[0] if ch.isdigit()))
        out.append((index[e["site"]], e["unit"], e["event"], step))
    return sorted(out, key=lambda t: (t[3], t[0], t[1]))


def _save_state_dict(tmp: Path) -> object:
    def save(net: nn.Module, step: int) -> None:
        torch.save(net.state_dict(), tmp / f"step-{step}.pt")

    return save


def _save_script(tmp: Path) -> object:
    def save(net: nn.Module, step: int) -> None:
        torch.jit.script(net).save(str(tmp / f"step-{step}.ts"))

    return save


def _save_onnx(tmp: Path) -> object:
    def save(net: nn.Module, step: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (torch.zeros(2, 4),),
                str(tmp / f"step-{step}.onnx"),
                dynamo=False,
                input_names=["x"],
                dynamic_axes={"x": {0: "n"}},
            )

    return save


@pytest.mark.parametrize(
    ("fmt", "saver", "flags"),
    [
        ("pt", _save_state_dict, ["--arch", "net.py:build"]),
        ("ts", _save_script, []),
        ("onnx", _save_onnx, []),
    ],
)
def test_history_reports_the_forced_steps(tmp_path: Path, fmt: str, saver: object, flags: list[str]) -> None:
    _train(tmp_path, saver(tmp_path))  # type: ignore[operator]
    calib, _ = _calib(tmp_path)
    ckpts = sorted(str(p.name) for p in tmp_path.glob(f"step-*.{fmt}"))  # step-10 sorts before step-2 here
    r = _run(
        *ckpts,
        *flags,
        "--calib",
        str(calib),
        "--format",
        "json",
        "-o",
        "h.json",
        "--html",
        "h.html",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "h.json").read_text())
    assert [c["label"] for c in d["checkpoints"]] == [f"step-{k}.{fmt}" for k in range(1, STEPS + 1)]
    assert _events(d) == EXPECTED
    if fmt == "pt":  # one --arch model took every checkpoint's weights in turn
        assert (tmp_path / "built.log").read_text().splitlines() == ["built"]
    assert d["sites"][0]["dead_fraction"] == pytest.approx([0.0] * 2 + [1 / 8] * 5 + [0.0] * 3, abs=1e-6)
    assert d["sites"][1]["dead_fraction"] == pytest.approx([0.0] * 5 + [1 / 6] * 5, abs=1e-6)
    units = {(u["site"], u["unit"]): u for u in d["units"]}
    first = units[(d["sites"][0]["name"], 2)]
    assert (first["died"], first["revived"], first["dead_now"]) == (
        [f"step-3.{fmt}"],
        [f"step-8.{fmt}"],
        False,
    )
    html = (tmp_path / "h.html").read_text()
    assert html.count("<polyline") == 2  # one line per site whose dead fraction ever moved
    # the same run as CSV: one row per checkpoint and site
    r = _run(*ckpts, *flags, "--calib", str(calib), "--format", "csv", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = r.stdout.strip().splitlines()
    assert rows[0] == "index,checkpoint,site,kind,units,dead_fraction,saturated_fraction"
    assert len(rows) == 1 + 2 * STEPS
    assert rows[3].split(",")[1:] == [f"step-2.{fmt}", d["sites"][0]["name"], "relu", "8", "0.0", "-"]


def test_callback_history_equals_the_checkpoints_history(tmp_path: Path) -> None:
    calib, x = _calib(tmp_path)
    _train(
        tmp_path,
        _save_state_dict(tmp_path),
        lambda net: DeadUnitMonitor(net, x, tmp_path / "live.json", every=1),
    )
    ckpts = [f"step-{k}.pt" for k in range(1, STEPS + 1)]
    r = _run(
        *ckpts,
        "--arch",
        "net.py:build",
        "--calib",
        str(calib),
        "--format",
        "json",
        "-o",
        "h.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    offline = json.loads((tmp_path / "h.json").read_text())
    live = json.loads((tmp_path / "live.json").read_text())
    assert live["schema"] == offline["schema"] == "actaudit.history/1"
    assert _events(live) == _events(offline) == EXPECTED
    assert live["sites"] == offline["sites"]
    keys = ("dead", "dead_fraction", "saturated", "saturated_fraction", "samples")
    assert [{k: c[k] for k in keys} for c in live["checkpoints"]] == [
        {k: c[k] for k in keys} for c in offline["checkpoints"]
    ]


def test_monitor_restores_training_mode_and_refuses_an_existing_file(tmp_path: Path) -> None:
    net = _net(tmp_path)
    net.train()
    _, x = _calib(tmp_path)
    m = DeadUnitMonitor(net, x, every=5)
    assert not m.step(3)
    assert m.step(5)
    assert net.training
    assert m.history.checkpoints[0]["label"] == "step-5"
    (tmp_path / "exists.json").write_text("{}")
    from actaudit.errors import InputError

    with pytest.raises(InputError):
        DeadUnitMonitor(net, x, tmp_path / "exists.json")


def test_natural_and_mtime_order(tmp_path: Path) -> None:
    names = ["ckpt-step10.pt", "ckpt-step9.pt", "ckpt-step100.pt", "ckpt-step1.pt"]
    assert sorted(names, key=natural_key) == [
        "ckpt-step1.pt",
        "ckpt-step9.pt",
        "ckpt-step10.pt",
        "ckpt-step100.pt",
    ]
    paths = []
    for i, n in enumerate(["b.pt", "a.pt", "c.pt"]):
        p = tmp_path / n
        p.write_bytes(b"x")
        os.utime(p, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
        paths.append(str(p))
    assert [Path(p).name for p in order_checkpoints(paths, "mtime")] == ["b.pt", "a.pt", "c.pt"]
    assert [Path(p).name for p in order_checkpoints(paths, "name")] == ["a.pt", "b.pt", "c.pt"]


def test_history_refuses_an_output_that_is_a_checkpoint(tmp_path: Path) -> None:
    _train(tmp_path, _save_script(tmp_path))
    calib, _ = _calib(tmp_path)
    before = (tmp_path / "step-2.ts").read_bytes()
    r = _run("step-1.ts", "step-2.ts", "--calib", str(calib), "-o", "step-2.ts", "--force", cwd=tmp_path)
    assert r.returncode == 2
    assert "input" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "step-2.ts").read_bytes() == before


@pytest.mark.slow
def test_headless_chromium_draws_the_history(tmp_path: Path, screenshot: Any) -> None:
    """The plot over training is drawn: the first site's line colour covers a visible stretch of the page."""
    import actaudit
    from actaudit.history import History
    from actaudit.report.history import _PALETTE, render_html

    _, x = _calib(tmp_path)
    hist = History()
    net = _net(tmp_path)
    for step in range(1, 7):
        _force(net, 3 if step >= 3 else 0)
        hist.add(f"step-{step}", actaudit.audit(net, x))
    page, shot = tmp_path / "history.html", tmp_path / "shot.png"
    page.write_text(render_html(hist.to_dict()), encoding="utf-8")
    screenshot(page, shot, (1000, 700))
    from pngread import png_rgb

    w, h, rgb = png_rgb(shot)
    assert (w, h) == (1000, 700)
    line = np.array([int(_PALETTE[0][i : i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(rgb.astype(int) - line).max(axis=2) <= 40).sum() > 300


def test_missing_checkpoint_is_a_usage_error(tmp_path: Path) -> None:
    calib, _ = _calib(tmp_path)
    for order in ("name", "mtime"):
        r = _run("nothere-1.ts", "--calib", str(calib), "--order", order, cwd=tmp_path)
        assert r.returncode == 2 and "nothere-1.ts" in r.stderr and "Traceback" not in r.stderr


def test_transformers_adapter_steps_the_monitor(tmp_path: Path) -> None:
    """The Trainer adapter audits at the Trainer's global step, through the monitor's own rule."""
    transformers = pytest.importorskip("transformers")
    from actaudit.callbacks import transformers_callback

    _, x = _calib(tmp_path)
    monitor = DeadUnitMonitor(_net(tmp_path), x, every=2)
    cb = transformers_callback(monitor)
    assert isinstance(cb, transformers.TrainerCallback)
    control = transformers.TrainerControl()
    for step in (1, 2, 3, 4):
        assert cb.on_step_end(None, transformers.TrainerState(global_step=step), control) is control
    assert [c["label"] for c in monitor.history.checkpoints] == ["step-2", "step-4"]
