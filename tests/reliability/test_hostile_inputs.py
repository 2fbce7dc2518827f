"""Hostile values at the edge: thresholds, shard reports, baselines, config files and .npz members.

Each test builds its hostile file, runs the command, and asserts exit 2 with one line naming the
problem (the option, or the file and the JSON path), and that every input is byte-identical
afterwards. Memory bounds are checked in a subprocess under an address-space limit.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from actaudit.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _err(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actaudit: error: "), r.output
    return lines[0]


def _usage(r) -> str:
    """click's usage error: its last line names the option."""
    assert "Traceback" not in r.output
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), r.output
    return last


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An ONNX Gemm → ReLU model (8 inputs, 6 units; units 0 and 3 dead by their bias) and its data."""
    d = tmp_path_factory.mktemp("hostile_inputs")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 6)).astype(np.float32) * 0.1
    b = np.zeros(6, np.float32)
    b[[0, 3]] = -100.0
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "B"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"], name="act"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = d / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    np.save(d / "x.npy", rng.standard_normal((40, 8)).astype(np.float32))
    return {"dir": d, "model": model, "calib": d / "x.npy"}


# -- thresholds --------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--dead-rate", "--saturation-rate", "--stuck-fraction", "--rare-rate"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.5", "1.5"])
def test_thresholds_are_finite_and_in_range_on_the_command_line(net, option, value) -> None:
    r = _run("audit", net["model"], "--calib", net["calib"], option, value)
    assert r.exit_code == 2, r.output
    assert option in _usage(r)


@pytest.mark.parametrize("key", ["dead-rate", "saturation-rate", "stuck-fraction"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1.0", "2.0"])
def test_thresholds_are_finite_and_in_range_in_a_config_file(net, tmp_path, key, value) -> None:
    cfg = tmp_path / "actaudit.toml"
    cfg.write_text(f"{key} = {value}\n")
    r = _run("audit", net["model"], "--calib", net["calib"], "--config", cfg, "--fail-on", "dead>0")
    assert r.exit_code == 2, r.output
    assert key in _usage(r) and str(cfg) in _usage(r)


def test_a_nan_dead_rate_no_longer_passes_a_gate(net) -> None:
    """The model has 2 dead units: with the default threshold the gate trips (exit 1)."""
    r = _run("audit", net["model"], "--calib", net["calib"], "--fail-on", "dead>1", "-q")
    assert r.exit_code == 1, r.output
    r = _run("audit", net["model"], "--calib", net["calib"], "--fail-on", "dead>1", "--dead-rate", "nan")
    assert r.exit_code == 2


def test_a_gate_threshold_must_be_finite(net) -> None:
    r = _run("audit", net["model"], "--calib", net["calib"], "--fail-on", "dead>1e999")
    assert r.exit_code == 2
    assert "not a finite number" in _err(r)


# -- merge ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(net) -> list[dict[str, Any]]:
    out = []
    for k in (1, 2):
        p = net["dir"] / f"s{k}.json"
        r = _run(
            "audit", net["model"], "--calib", net["calib"], "--batch-size", "8",
            "--shard", f"{k}/2", "--format", "json", "-o", p, "-q", "--force",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        out.append(json.loads(p.read_text()))
    return out


def _site(d: dict[str, Any]) -> dict[str, Any]:
    site: dict[str, Any] = d["counters"]["sites"][0]
    return site


HOSTILE_SHARDS = {
    "a shard count of 10**9": (lambda d: d["counters"]["shard"].update(count=10**9), "counters.shard.count"),
    "a shard count of 0": (lambda d: d["counters"]["shard"].update(count=0), "counters.shard.count"),
    "a vector of the wrong length": (lambda d: _site(d)["low"].pop(), "counters.sites[0].low"),
    "a count over the element count": (
        lambda d: _site(d).update(low=[_site(d)["elements"] + 1] * 6),
        "counters.sites[0].low[0]",
    ),
    "a negative count": (lambda d: _site(d).update(high=[-1] * 6), "counters.sites[0].high[0]"),
    "a missing key": (lambda d: d["counters"].pop("samples"), "counters.samples"),
    "a wrong type": (lambda d: d["counters"].update(batches="3"), "counters.batches"),
    "a huge integer": (lambda d: _site(d).update(elements=10**40), "counters.sites[0].elements"),
    "a claimed unit count of 10**9": (
        lambda d: _site(d)["info"].update(units=10**9),
        "counters.sites[0].low",
    ),
    "an unknown activation kind": (
        lambda d: _site(d)["info"].update(kind="evil"),
        "counters.sites[0].info.kind",
    ),
    "a setting out of range": (lambda d: d["settings"].update(dead_rate=-1), "settings.dead_rate"),
    "a float where a counter goes": (lambda d: _site(d).update(nonfinite=[0.5] * 6), "nonfinite[0]"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SHARDS))
def test_merge_validates_before_it_allocates(shards, tmp_path, case) -> None:
    mutate, where = HOSTILE_SHARDS[case]
    bad = copy.deepcopy(shards[0])
    mutate(bad)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(bad))
    b.write_text(json.dumps(shards[1]))
    before = _digests(tmp_path)
    r = _run("merge", a, b, "--format", "json")
    assert r.exit_code == 2, r.output
    line = _err(r)
    assert str(a) in line and where in line, line
    assert _digests(tmp_path) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "levels deep"),
        (b'{"schema": ' + b"9" * 10_000 + b"}", "digits"),
        (b'{"schema": "\xff\xfe"}', "not UTF-8"),
        (b'{"schema": NaN}', "NaN"),
    ],
)
def test_merge_refuses_unparseable_json_in_one_line(shards, tmp_path, content, message) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_bytes(content)
    b.write_text(json.dumps(shards[1]))
    r = _run("merge", a, b)
    assert r.exit_code == 2, r.output
    assert message in _err(r) and str(a) in _err(r)


def test_an_honest_merge_still_passes(shards, tmp_path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(shards[0]))
    b.write_text(json.dumps(shards[1]))
    r = _run("merge", a, b, "--format", "json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["summary"]["dead"] == 2


# -- --against --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["sites"][0].update(units="6"), "sites[0].units"),
        (lambda d: d["sites"][0].update(dead_units=[0, 10**12]), "sites[0].dead_units[1]"),
        (lambda d: d["sites"][0].update(dead=99), "sites[0].dead"),
        (lambda d: d["sites"][0].pop("name"), "sites[0].name"),
        (lambda d: d.update(settings=[1, 2]), "settings"),
    ],
)
def test_a_baseline_of_the_wrong_shape_is_refused_before_the_run(net, tmp_path, mutate, where) -> None:
    base = tmp_path / "base.json"
    r = _run("audit", net["model"], "--calib", net["calib"], "--format", "json", "-o", base, "-q")
    assert r.exit_code == 0, r.output
    d = json.loads(base.read_text())
    mutate(d)
    base.write_text(json.dumps(d))
    before = _digests(tmp_path)
    r = _run("audit", net["model"], "--calib", net["calib"], "--against", base, "--html", tmp_path / "r.html")
    assert r.exit_code == 2, r.output
    assert where in _err(r) and "baseline report" in _err(r)
    assert _digests(tmp_path) == before  # refused before the run: no --html written


# -- config files ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"fail-on = " + b"[" * 5000 + b"]" * 5000 + b"\n", "too deeply"),
        (b'fail-on = ["dead>0"]\n# \xff\xfe\n', "not UTF-8"),
    ],
)
def test_a_hostile_config_file_is_one_line(net, tmp_path, content, message) -> None:
    cfg = tmp_path / "actaudit.toml"
    cfg.write_bytes(content)
    r = _run("audit", net["model"], "--calib", net["calib"], "--config", cfg)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("value", ["/tmp/x.html", "../x.html", "~/x.html", "sub/../../x.html"])
def test_a_config_file_names_outputs_only_inside_its_folder(net, tmp_path, value) -> None:
    project = tmp_path / "project"
    work = project / "work"
    work.mkdir(parents=True)
    (project / "actaudit.toml").write_text(f"html = {value!r}\n")
    before = _digests(tmp_path)
    old = os.getcwd()
    os.chdir(work)  # the file is found in a parent folder, not given with --config
    try:
        r = _run("audit", net["model"], "--calib", net["calib"])
    finally:
        os.chdir(old)
    assert r.exit_code == 2, r.output
    assert "config file's folder" in r.stderr
    assert _digests(tmp_path) == before and not (tmp_path / "x.html").exists()


def test_a_config_output_through_a_symbolic_link_is_refused(net, tmp_path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "out").symlink_to(elsewhere)
    (project / "actaudit.toml").write_text('html = "out/r.html"\n')
    r = _run("audit", net["model"], "--calib", net["calib"], "--config", project / "actaudit.toml")
    assert r.exit_code == 2, r.output
    assert "outside the config file's folder" in r.stderr
    assert not (elsewhere / "r.html").exists()


def test_a_config_output_inside_its_folder_is_written_and_named(net, tmp_path) -> None:
    (tmp_path / "actaudit.toml").write_text('html = "r.html"\n')
    r = _run("audit", net["model"], "--calib", net["calib"], "--config", tmp_path / "actaudit.toml", "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.html").is_file()  # named on stderr even with -q: the command line did not name it
    assert f"actaudit: wrote {tmp_path / 'r.html'} (--html from config file" in r.stderr


# -- .npz members -------------------------------------------------------------------------------------
def _npy(shape: tuple[int, ...], data: bytes = b"") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return b.getvalue() + data


def _npz(path: Path, payload: bytes, compression: int) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("x.npy", payload)
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_member_that_declares_more_rows_than_it_holds(net, tmp_path, compression) -> None:
    rows = np.random.default_rng(1).standard_normal((10, 8)).astype("<f4").tobytes()
    calib = _npz(tmp_path / "lie.npz", _npy((100_000, 8), rows), compression)
    before = _digests(tmp_path)
    r = _run("audit", net["model"], "--calib", calib)
    assert r.exit_code == 2, r.output
    assert "declares shape (100000, 8)" in _err(r)
    assert _digests(tmp_path) == before


@pytest.mark.parametrize("shape", [(100_000, 8), (2**62, 2**62)])
def test_an_npy_that_declares_more_than_it_holds(net, tmp_path, shape) -> None:
    calib = tmp_path / "lie.npy"
    calib.write_bytes(_npy(shape, bytes(4 * 8 * 10)))
    before = _digests(tmp_path)
    r = _run("audit", net["model"], "--calib", calib)
    assert r.exit_code == 2, r.output
    assert f"declares shape {shape}" in _err(r)
    assert _digests(tmp_path) == before


def test_a_corrupt_deflated_member(net, tmp_path) -> None:
    rows = np.random.default_rng(1).standard_normal((64, 8)).astype("<f4").tobytes()
    calib = _npz(tmp_path / "c.npz", _npy((64, 8), rows), zipfile.ZIP_DEFLATED)
    raw = bytearray(calib.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 32] = bytes(32)  # the sizes in the directory stay; the stream does not
    calib.write_bytes(bytes(raw))
    r = _run("audit", net["model"], "--calib", calib)
    assert r.exit_code == 2, r.output
    assert "c.npz" in _err(r)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1_200_000_000, 1_200_000_000))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS semantics")
def test_long_deflated_rows_are_refused_before_they_inflate(net, tmp_path) -> None:
    """Two rows of 256 MiB of zeros deflate to ~0.5 MiB; a batch of both would take 512 MiB (twice, copied)."""
    calib = tmp_path / "long.npz"
    with zipfile.ZipFile(calib, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z, z.open("x.npy", "w") as f:
        f.write(_npy((2, 2**26)))
        zeros = bytes(1 << 24)
        for _ in range(2 * 2**26 * 4 // len(zeros)):
            f.write(zeros)
    before = _digests(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "actaudit", "audit", str(net["model"]), "--calib", str(calib)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_memory,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "would inflate to 512 MiB" in r.stderr and "MemoryError" not in r.stderr
    assert _digests(tmp_path) == before
