"""Nothing lost, nothing overwritten; the same inputs give byte-identical JSON."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from click.testing import CliRunner

from actaudit.cli import cli


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_inputs_untouched(small, tmp_path) -> None:
    files = [small["ts"], small["sd"], small["pt2"], small["calib"]]
    before = [_sha(f) for f in files]
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    for model in ("ts", "pt2"):
        r = CliRunner().invoke(
            cli,
            [
                "audit",
                str(small[model]),
                "--calib",
                str(small["calib"]),
                "-o",
                str(tmp_path / f"{model}.txt"),
            ],
        )
        assert r.exit_code == 0
    assert [_sha(f) for f in files] == before
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes


def test_output_onto_input_is_refused(small) -> None:
    r = CliRunner().invoke(
        cli, ["audit", str(small["ts"]), "--calib", str(small["calib"]), "-o", str(small["ts"]), "--force"]
    )
    assert r.exit_code == 2 and "is the input file" in r.stderr


def test_json_identical_across_thread_counts(small) -> None:
    outs = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "actaudit",
                "audit",
                str(small["pt2"]),
                "--calib",
                str(small["calib"]),
                "--format",
                "json",
                "--batch-size",
                "7",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        d = json.loads(r.stdout)
        d.pop("run")
        outs.append(json.dumps(d, sort_keys=True))
    assert outs[0] == outs[1]
