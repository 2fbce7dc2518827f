"""``torchrun --nproc-per-node 2 -m actaudit audit ...`` (gloo, CPU) writes the one-process report.

The three torchrun jobs start at once (each spends most of its time importing torch), and
their results are checked by the tests below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from actaudit.cli import cli
from tests import scaleout_models as som

TIMEOUT_S = 240


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _torchrun(*args: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "actaudit", "audit", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


class _Ranks:
    """Two ranks started the way torchrun starts them (its environment), without torchrun's agent.

    With no agent to stop the other rank, the run ends only if actaudit itself does not hang.
    """

    def __init__(self, *args: Any) -> None:
        port = _free_port()
        self.procs = []
        for rank in range(2):
            env = _env() | {
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "ACTAUDIT_TEST_FAIL": "1",
            }
            cmd = [sys.executable, "-m", "actaudit", "audit", *map(str, args)]
            self.procs.append(
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            )

    def communicate(self, timeout: float) -> tuple[list[int], str, str]:
        outs = [p.communicate(timeout=timeout) for p in self.procs]
        return [p.returncode for p in self.procs], "".join(o for o, _ in outs), "".join(e for _, e in outs)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("dist")
    np.save(d / "x.npy", som.calib())
    (d / "loader.py").write_text(
        "import os\nimport numpy as np\n"
        "def load():\n"
        "    if os.environ.get('RANK') == '1' and os.environ.get('ACTAUDIT_TEST_FAIL'):\n"
        "        raise ValueError('no data on this node')\n"
        f"    x = np.load({str(d / 'x.npy')!r})\n"
        "    return [x[i : i + 8] for i in range(0, len(x), 8)]\n"
    )
    onnx_model, ts_model = som.write_onnx(d / "m.onnx"), som.write_torchscript(d / "m.ts")
    loader = f"{d / 'loader.py'}:load"
    specs = {
        "onnx": (onnx_model, "--data-loader", loader),
        "ts": (ts_model, "--calib", d / "x.npy", "--batch-size", "8"),
    }
    procs = {
        name: _torchrun(*spec, "--per-unit", "--format", "json", "-o", d / f"{name}.json")
        for name, spec in specs.items()
    }
    failing = _Ranks(onnx_model, "--data-loader", loader, "--format", "json", "--dist-timeout", "60")
    one = {}  # the one-process reports, while the jobs start up
    for name, spec in specs.items():
        r = CliRunner().invoke(cli, ["audit", *map(str, spec), "--per-unit", "--format", "json", "-q"])
        assert r.exit_code == 0, r.output
        one[name] = json.loads(r.stdout)
    out: dict[str, Any] = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=TIMEOUT_S)
        out[name] = (p.returncode, stdout, stderr)
    out["fail"] = failing.communicate(TIMEOUT_S)
    return {"dir": d, "results": out, "one": one}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnx", "ts"])
def test_two_processes_write_the_one_process_report(jobs: dict[str, Any], name: str) -> None:
    code, stdout, stderr = jobs["results"][name]
    assert code == 0, stderr
    assert stdout == ""  # -o given: nothing on stdout from any rank
    assert "actaudit:" not in stderr  # no rank printed warnings
    two = json.loads((jobs["dir"] / f"{name}.json").read_text())
    one = jobs["one"][name]
    assert two["run"]["processes"] == 2 and two["run"]["process_group"] == "gloo"
    for key in ("model", "calibration", "inputs", "settings", "summary", "gates", "uncovered", "warnings"):
        assert two[key] == one[key], key
    assert two["sites"] == one["sites"]
    assert two["summary"]["dead"] == len(som.DEAD) and two["sites"][2]["dead_units"] == list(som.DEAD)
    # unit j of the first site fires on sample j alone: each sample ran exactly once over both ranks
    first = two["sites"][0]
    assert first["coverage"]["samples"] == som.SAMPLES
    runs = np.rint(np.asarray(first["per_unit"]["fire_rate"]) * first["coverage"]["elements_per_unit"])
    assert runs.tolist() == [1.0] * som.SAMPLES


@pytest.mark.slow
def test_a_failing_rank_fails_the_run_with_its_line(jobs: dict[str, Any]) -> None:
    codes, stdout, stderr = jobs["results"]["fail"]
    assert codes == [2, 2] and stdout == ""  # both ranks end, with the failing rank's exit code
    lines = [ln for ln in stderr.splitlines() if ln.startswith("actaudit:")]
    assert lines == [
        "actaudit: error: rank 1 of 2: --data-loader "
        f"{jobs['dir'] / 'loader.py'}:load: calling it raised ValueError: no data on this node"
    ]
