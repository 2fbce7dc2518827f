"""Hostile output paths: every output is checked against every input (an ONNX model's external-data
files included) and every other output before the run, and needs --force to replace a file.

Each test builds its files, runs the command, and asserts exit 2 with one line, and that every
input is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from actaudit.cli import cli
from actaudit.onnxrefs import external_locations


def _run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _err(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actaudit: error: "), r.output
    return lines[0]


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.fixture()
def ext(tmp_path: Path) -> dict[str, Path]:
    """An ONNX MatMul → ReLU model whose weights lie in ``w.bin`` beside it, and its data."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    np.save(tmp_path / "x.npy", rng.standard_normal((16, 6)).astype(np.float32))
    return {"dir": tmp_path, "model": path, "data": tmp_path / "w.bin", "calib": tmp_path / "x.npy"}


def test_the_scanner_finds_the_external_data_file(ext) -> None:
    assert external_locations(ext["model"]) == ["w.bin"]
    m = onnx.load(str(ext["model"]), load_external_data=False)
    assert [e.value for e in m.graph.initializer[0].external_data if e.key == "location"] == ["w.bin"]


@pytest.mark.parametrize(
    "extra",
    [
        ["rewrite", "-o", "out.onnx", "--report", "w.bin"],
        ["rewrite", "-o", "out.onnx", "--report", "w.bin", "--force"],
        ["prune", "-o", "out.onnx", "--report", "w.bin", "--force"],
        ["rewrite", "-o", "w.bin", "--force"],
        ["audit", "--html", "w.bin", "--force"],
        ["audit", "-o", "w.bin", "--force"],
        ["audit", "--junit", "w.bin", "--force"],
        ["inspect", "-o", "w.bin", "--force"],
    ],
)
def test_no_output_lands_on_an_external_data_file(ext, extra) -> None:
    before = _digests(ext["dir"])
    command, *rest = extra
    rest = [str(ext["dir"] / a) if a in ("w.bin", "out.onnx") else a for a in rest]
    calib = [] if command == "inspect" else ["--calib", ext["calib"]]
    r = _run(command, ext["model"], *calib, *rest)
    assert r.exit_code == 2, r.output
    assert "external data input" in _err(r)
    assert _digests(ext["dir"]) == before


def test_an_honest_run_beside_external_data_writes_and_leaves_the_inputs(ext) -> None:
    before = _digests(ext["dir"])
    html, out = ext["dir"] / "r.html", ext["dir"] / "r.json"
    r = _run("audit", ext["model"], "--calib", ext["calib"], "--html", html, "-o", out, "--format", "json")
    assert r.exit_code == 0, r.output
    assert html.is_file() and out.is_file()
    assert {k: v for k, v in _digests(ext["dir"]).items() if k not in ("r.html", "r.json")} == before


def test_an_existing_report_needs_force(ext) -> None:
    report = ext["dir"] / "old.json"
    report.write_text("keep me")
    before = _digests(ext["dir"])
    out = ext["dir"] / "out.onnx"
    r = _run(
        "rewrite", ext["model"], "--calib", ext["calib"], "-o", out, "--report", report, "--alpha", "0.01"
    )
    assert r.exit_code == 2, r.output
    assert "already exists" in _err(r) and "old.json" in _err(r)
    assert _digests(ext["dir"]) == before and not out.exists()


def test_merge_refuses_one_file_for_two_outputs(tmp_path) -> None:
    shard = tmp_path / "s.json"
    shard.write_text("{}")
    target = tmp_path / "r.json"
    r = _run("merge", shard, "-o", target, "--html", target)
    assert r.exit_code == 2, r.output
    assert "are the same file" in _err(r)
    assert not target.exists() and shard.read_text() == "{}"


def test_html_cannot_replace_the_config_file_just_read(ext) -> None:
    cfg = ext["dir"] / "actaudit.toml"
    cfg.write_text("batch-size = 8\n")
    hard = ext["dir"] / "hard.toml"
    hard.hardlink_to(cfg)
    before = _digests(ext["dir"])
    for target in (cfg, hard):
        r = _run("audit", ext["model"], "--calib", ext["calib"], "--config", cfg, "--html", target, "--force")
        assert r.exit_code == 2, r.output
        assert "config file input" in _err(r)
    assert _digests(ext["dir"]) == before


def test_output_below_a_regular_file_is_one_line(ext) -> None:
    before = _digests(ext["dir"])
    for flag in ("-o", "--html", "--junit"):
        r = _run("audit", ext["model"], "--calib", ext["calib"], flag, ext["calib"] / "r.txt")
        assert r.exit_code == 2, r.output
        assert "is a file, not a directory" in _err(r)
    assert _digests(ext["dir"]) == before


def test_a_location_outside_the_model_folder_is_never_listed(tmp_path) -> None:
    """A model naming ``../x`` or an absolute path: the scanner lists nothing outside its folder."""
    from actaudit.onnxrefs import external_data_files

    (tmp_path / "outside.bin").write_bytes(b"\0" * 16)
    inner = tmp_path / "inner"
    inner.mkdir()
    t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../outside.bin"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = k, v
    t2 = TensorProto()
    t2.CopyFrom(t)
    t2.name = "V"
    t2.external_data[0].value = str(tmp_path / "outside.bin")
    graph = helper.make_graph(
        [], "g", [], [helper.make_tensor_value_info("W", TensorProto.FLOAT, [4])], [t, t2]
    )
    path = inner / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    assert external_locations(path) == ["../outside.bin", str(tmp_path / "outside.bin")]
    assert external_data_files(path) == []
