"""Ctrl-C anywhere is exit 130, and no line the tool prints carries a terminal escape from a file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from actaudit.cli import cli
from actaudit.cli.interrupts import SigintWatch

ROOT = Path(__file__).resolve().parents[2]
ESCAPE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mrelu\u202e"


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.fixture()
def esc(tmp_path: Path) -> dict[str, Path]:
    """An ONNX MatMul → ReLU model whose ReLU node is named with terminal escapes, and its data."""
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Relu", ["h"], ["y"], name=ESCAPE),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [w],
    )
    model = tmp_path / "esc.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32))
    return {"dir": tmp_path, "model": model, "calib": tmp_path / "x.npy"}


@pytest.mark.parametrize("extra", [["--fail-on", "zzz:dead>0"], ["--unit-axis", "*=5"]])
def test_error_lines_escape_names_read_from_the_model(esc, extra) -> None:
    r = CliRunner().invoke(cli, ["audit", str(esc["model"]), "--calib", str(esc["calib"]), *extra])
    assert r.exit_code == 2, r.output
    line = r.stderr.strip()
    assert line.startswith("actaudit: error: ") and "\n" not in line
    assert "\\x1b]0;pwned\\x07" in line  # the name is still there, visibly
    assert not any(c in line for c in "\x1b\x07\r\u202e")


def test_every_stderr_line_is_escaped(esc) -> None:
    """Warnings, notes and the table of a normal run: no control character from the node name."""
    r = CliRunner().invoke(
        cli, ["audit", str(esc["model"]), "--calib", str(esc["calib"]), "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    assert not any(c in r.stderr for c in "\x1b\x07\r\u202e")
    assert "\x1b" not in r.stdout  # JSON escapes it


_HOOK = """
import builtins, signal, sys
real = builtins.__import__
state = {"done": False}
def hook(name, *a, **k):
    if name == "onnxruntime" and not state["done"]:
        state["done"] = True
        failed = False
        try:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C during the first import of onnxruntime ...
        except KeyboardInterrupt:
            failed = True  # ... swallowed by an extension module's init, as onnxruntime's numpy import does
        if failed:
            raise ImportError("import numpy failed")
    return real(name, *a, **k)
builtins.__import__ = hook
from actaudit.cli import main
main(sys.argv[1:])
"""


def test_sigint_during_the_first_import_of_onnxruntime_is_130(esc) -> None:
    hook = esc["dir"] / "hook.py"
    hook.write_text(_HOOK)
    out = esc["dir"] / "r.json"
    before = _digests(esc["dir"])
    r = subprocess.run(
        [sys.executable, str(hook), "audit", str(esc["model"]), "--calib", str(esc["calib"]), "-o", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert r.returncode == 130, r.stderr
    assert "interrupted" in r.stderr and "internal error" not in r.stderr
    assert _digests(esc["dir"]) == before and not out.exists()


def test_the_watch_sees_a_swallowed_sigint_and_a_chained_one() -> None:
    import signal

    with SigintWatch() as watch:
        assert not watch.interrupted(ValueError("x"))
        with contextlib.suppress(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert watch.interrupted(ImportError("import numpy failed"))
    with SigintWatch() as watch:
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("wrapped") from None
        except RuntimeError as e:
            assert watch.interrupted(e)
