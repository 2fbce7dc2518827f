"""Names from a hostile file cannot inject terminal escapes or spreadsheet formulas into text outputs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from actaudit.cli import cli
from actaudit.sanitize import csv_cell, text

ESC = "\x1b]0;pwned\x07\x1b[2J"  # set the terminal title, clear the screen
FORMULA = '=HYPERLINK("http://evil.example","click")'


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("names")
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name=f"stem{ESC}"),
            helper.make_node("Sigmoid", ["r"], ["y"], name=FORMULA),
        ],
        "names",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(d / "names.onnx"))
    np.save(d / "x.npy", np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32))
    return {"model": d / "names.onnx", "calib": d / "x.npy"}


def _out(*args: object) -> str:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_helpers() -> None:
    assert text("a\x1b[31mb\nc\u202ed") == "a\\x1b[31mb\\nc\\u202ed"
    assert text("layer1.0.relu#1") == "layer1.0.relu#1"
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("@SUM(A1)") == "'@SUM(A1)" and csv_cell("+x") == "'+x"
    assert csv_cell("-0.5") == "-0.5" and csv_cell(3) == 3 and csv_cell("relu") == "relu"


@pytest.mark.parametrize("command", ["audit", "inspect"])
@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_tables_escape_control_characters(hostile, command, fmt) -> None:
    extra = ["--calib", hostile["calib"]] if command == "audit" else []
    out = _out(command, hostile["model"], *extra, "--format", fmt, "-q")
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07" in out


@pytest.mark.parametrize("command", ["audit", "inspect"])
def test_csv_neutralises_formulas(hostile, command) -> None:
    extra = ["--calib", hostile["calib"]] if command == "audit" else []
    out = _out(command, hostile["model"], *extra, "--format", "csv", "-q")
    assert "\x1b" not in out
    rows = list(csv.reader(io.StringIO(out)))
    cells = [c for row in rows[1:] for c in row]
    assert not any(c.startswith(("=", "+", "@")) for c in cells)
    assert f"'{FORMULA}" in cells


def test_json_keeps_the_names_exactly(hostile) -> None:
    d = json.loads(_out("audit", hostile["model"], "--calib", hostile["calib"], "--format", "json", "-q"))
    names = [s["name"] for s in d["sites"]]
    assert any(ESC in n for n in names) and FORMULA in names
