"""The command line: exit codes, streams, atomic outputs, no torch on --help, pickles never run."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from actaudit.cli import cli


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.act = nn.ReLU()
        self.out = nn.Linear(6, 2)
        with torch.no_grad():
            self.fc.bias[[1, 4]] = -1e3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.act(self.fc(x))))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    m = Tiny().eval()
    torch.jit.save(torch.jit.script(m), str(d / "tiny.ts"))
    x = torch.randn(50, 4).numpy()
    np.save(d / "x.npy", x)
    return {"model": d / "tiny.ts", "calib": d / "x.npy", "dir": d}


def _run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_json_report_on_stdout(files) -> None:
    r = _run("audit", files["model"], "--calib", files["calib"], "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["schema"] == "actaudit.report/1"
    assert d["model"]["format"] == "torchscript"
    assert d["calibration"] == {
        "source": str(files["calib"]),
        "samples": 50,
        "batches": 2,
        "batch_size": 32,
        "synthetic": False,
    }
    [relu, sig] = d["sites"]
    assert (relu["name"], relu["kind"], relu["units"], relu["dead_units"]) == ("act", "relu", 6, [1, 4])
    assert sig["kind"] == "sigmoid"
    assert d["summary"]["dead"] == 2 and d["summary"]["rectifier_units"] == 6
    assert relu["coverage"]["dead_rate_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 50), rel=1e-5)


def test_gates_and_exit_codes(files) -> None:
    ok = _run("audit", files["model"], "--calib", files["calib"], "--fail-on", "dead>2")
    assert ok.exit_code == 0
    bad = _run(
        "audit",
        files["model"],
        "--calib",
        files["calib"],
        "--fail-on",
        "act:dead-fraction>0.3",
        "--format",
        "json",
    )
    assert bad.exit_code == 1
    assert "failed: act:dead-fraction>0.3" in bad.stderr
    assert bad.stderr.count("act:dead-fraction>0.3") == 1  # the failed gate is said once on stderr
    d = json.loads(bad.stdout)
    assert d["passed"] is False and d["gates"][0]["failing_sites"] == ["act"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "missing.pt"], "does not exist"),
        (["audit", "{dir}"], "is a directory"),
        (["audit", "{model}", "--calib", "nope.npy"], "does not exist"),
        (["audit", "{model}", "--fail-on", "dead>>1"], "cannot read gate"),
        (["audit", "{model}", "--calib", "{calib}", "--fail-on", "enc.*:dead>0"], "matches no site"),
        (["audit", "{model}"], "no shape for input 'x'"),
        (["audit", "{model}", "--input-shape", "1x3"], "mat1 and mat2 shapes cannot be multiplied|raised"),
        (["audit", "{model}", "--calib", "{calib}", "--unit-axis", "act"], "SITE_GLOB=AXIS"),
    ],
)
def test_user_errors_are_one_line_exit_2(files, args, message) -> None:
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    r = _run(*args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actaudit: error:"), r.stderr
    assert pytest.importorskip("re").search(message, lines[0]), lines[0]
    assert "Traceback" not in r.output


def test_output_is_atomic_and_needs_force(files, tmp_path) -> None:
    out = tmp_path / "r.json"
    assert (
        _run("audit", files["model"], "--calib", files["calib"], "--format", "json", "-o", out).exit_code == 0
    )
    first = out.read_text()
    r = _run("audit", files["model"], "--calib", files["calib"], "-o", out)
    assert r.exit_code == 2 and "already exists" in r.stderr
    assert out.read_text() == first
    assert _run("audit", files["model"], "--calib", files["calib"], "-o", out, "--force").exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary files left


def test_json_is_deterministic(files) -> None:
    a = json.loads(_run("audit", files["model"], "--calib", files["calib"], "--format", "json").stdout)
    b = json.loads(_run("audit", files["model"], "--calib", files["calib"], "--format", "json").stdout)
    a.pop("run"), b.pop("run")
    assert a == b


def test_help_does_not_import_torch() -> None:
    code = "import sys; from actaudit.cli import main\ntry:\n    main(['audit', '--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


@pytest.mark.parametrize(
    "extra", [[], ["--calib", "{calib}"], ["--arch", "x.py:f"], ["--state-key", "model"]]
)
@pytest.mark.parametrize("command", ["audit", "rewrite", "inspect"])
def test_untrusted_pickle_never_runs(files, tmp_path, extra, command) -> None:
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(str(target))}, evil)
    before = evil.read_bytes()
    args = [a.format(calib=str(files["calib"])) for a in extra]
    if command == "rewrite":
        args += ["-o", str(tmp_path / "out.pt2")]
    if command == "inspect":
        args = [a for a in args if a not in (str(files["calib"]), "--calib")]
    r = _run(command, evil, *args)
    assert r.exit_code == 2
    assert "refusing to load" in r.stderr and "--trust-pickle" in r.stderr
    assert not target.exists()
    assert evil.read_bytes() == before
    # pickle.loads would create it: the payload is real
    pickle.loads(pickle.dumps(_Payload(str(target))))
    assert target.exists()


def test_python_m_entry_point(files) -> None:
    env = dict(os.environ)
    r = subprocess.run(
        [sys.executable, "-m", "actaudit", "audit", str(files["model"]), "--calib", str(files["calib"])],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0
    assert "act" in r.stdout and "2 dead of 6 rectifier units" in r.stdout


def test_table_colour_only_when_asked(files) -> None:
    import actaudit

    report = actaudit.audit(str(files["model"]), str(files["calib"]))
    assert "\x1b[" in report.render("table", color=True)
    plain = report.render("table")
    assert "\x1b[" not in plain
    assert "2 dead of 6 rectifier units (33.3%)" in plain
    r = _run("audit", files["model"], "--calib", files["calib"])  # not a terminal: no colour
    assert r.exit_code == 0 and "\x1b[" not in r.stdout
