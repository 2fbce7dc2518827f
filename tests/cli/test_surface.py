"""The everyday surface: terminal-width tables, fix hints, inspect's facts, JUnit, in-memory models.

Expected numbers come from the inputs (fixture catalogue, onnx/torch read directly,
hand-built models), never from the renderer under test.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from onnx import TensorProto, helper

import actaudit
from actaudit.cli import cli
from actaudit.errors import ActauditError
from actaudit.report.terminal import elide

FIX = Path(__file__).resolve().parents[2] / "fixtures"
TS, ONNX, PT2 = (FIX / "models" / f"cnn_dead.{e}" for e in ("ts", "onnx", "pt2"))
IMAGES = FIX / "data" / "cnn_images.npy"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ACTAUDIT = str(Path(sys.executable).with_name("actaudit"))


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner(env=env).invoke(cli, list(args))


# -- a model with many long-named sites --------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, width: int, dead: int) -> None:
        super().__init__()
        self.feed_forward_projection = nn.Linear(width, width)
        self.feed_forward_activation = nn.ReLU()
        with torch.no_grad():  # pre-activations are exactly -1 (the first `dead` units) or +1
            self.feed_forward_projection.weight.zero_()
            self.feed_forward_projection.bias.fill_(1.0)
            self.feed_forward_projection.bias[:dead] = -1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.feed_forward_activation(self.feed_forward_projection(x))


class _Deep(nn.Module):
    """44 ReLU sites with long module paths; block k has k % 5 dead units of 8."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder_transformer_layers = nn.ModuleList(_Block(8, k % 5) for k in range(44))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.encoder_transformer_layers:
            x = b(x)
        return x


@pytest.fixture(scope="module")
def deep_report() -> actaudit.Report:
    torch.manual_seed(0)
    return actaudit.audit(_Deep().eval(), torch.randn(64, 8))


def test_table_fits_80_columns_and_keeps_every_number(deep_report: actaudit.Report) -> None:
    full = deep_report.render("table")
    assert max(len(x) for x in full.splitlines()) > 80  # the case this is about
    text = deep_report.render("table", width=80, color=True)
    lines = [ANSI.sub("", x) for x in text.splitlines()]
    assert max(len(x) for x in lines) <= 80
    rows = [x for x in lines if re.match(r"^\s*\d+\s", x) and " relu " in x]
    assert len(rows) == 44
    assert len({row.split()[1] for row in rows}) == 44  # shortened names still tell the sites apart
    for k, row in enumerate(rows):
        cells = row.split()
        assert cells[0] == str(k)
        assert f".{k}." in cells[1] and cells[1].startswith("e")  # the layer index survives
        assert cells[4] == str(k % 5)  # dead units, by construction
        assert cells[-1] == f"{100 * (k % 5) / 8:.1f}%"


def test_elide_keeps_indices_and_the_last_component() -> None:
    assert elide("encoder.layers.10.ffn.act", 16) == "e.l.10.ffn.act"
    assert elide("encoder.layers.10.feed_forward_activation", 20) == "e.l.10.feed_f…vation"
    assert elide("/encoder/layers.3/act/Relu", 14) == "/e/l.3/a/Relu"
    assert len(elide("x" * 50, 13)) == 13
    assert elide("short", 10) == "short"


def _pty_run(args: list[str], columns: int) -> tuple[str, str]:
    """Run the CLI with stdout and stderr on one pseudo-terminal each; returns their text."""
    out_master, out_slave = pty.openpty()
    err_master, err_slave = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(args, stdout=out_slave, stderr=err_slave, stdin=subprocess.DEVNULL, env=env)
    os.close(out_slave)
    os.close(err_slave)
    chunks: dict[int, list[bytes]] = {out_master: [], err_master: []}
    open_fds = {out_master, err_master}
    deadline = time.monotonic() + 120
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_fds), [], [], 0.5)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                chunks[fd].append(data)
            else:
                open_fds.discard(fd)
                os.close(fd)
        if proc.poll() is not None and not ready:
            break
    proc.wait(timeout=30)
    for fd in open_fds:
        os.close(fd)
    return (b"".join(chunks[out_master]).decode(), b"".join(chunks[err_master]).decode())


@pytest.mark.slow
def test_terminal_gets_a_fitted_table_and_a_progress_line() -> None:
    # ONNX: the subprocess then starts without importing torch
    out, err = _pty_run([ACTAUDIT, "audit", str(ONNX), "--calib", str(IMAGES)], columns=60)
    lines = [ANSI.sub("", x) for x in out.replace("\r\n", "\n").splitlines()]
    assert lines and max(len(x) for x in lines) <= 60
    assert any(x.split()[:3] == ["4", "/Tanh", "tanh"] for x in lines)
    # progress: carriage-return redraws on the terminal, ending at the sample count of the data
    assert "\r" in err and "calibrating [" in err
    assert f"{np.load(IMAGES, mmap_mode='r').shape[0]}/128 samples 100%" in err


def test_pipes_and_files_get_the_full_table(tmp_path: Path) -> None:
    r = _run("audit", str(TS), "--calib", str(IMAGES), env={"COLUMNS": "40"})
    assert r.exit_code == 0
    assert "dead/saturated" in r.stdout and "██" in r.stdout  # full headers and 10-wide bars


# -- fix hints ---------------------------------------------------------------------------------
def test_fail_on_unknown_metric_lists_the_metrics() -> None:
    r = _run("audit", str(TS), "--calib", str(IMAGES), "--fail-on", "dead_fraction>0.2")
    assert r.exit_code == 2
    assert "did you mean 'dead-fraction>0.2'" in r.stderr
    from actaudit.gates import METRICS

    assert all(m in r.stderr for m in METRICS)
    r = _run("audit", str(TS), "--calib", str(IMAGES), "--fail-on", "dead fraction 0.2")
    assert r.exit_code == 2 and "metrics: dead, dead-fraction" in r.stderr


@pytest.mark.parametrize("model", [TS, ONNX, PT2], ids=["ts", "onnx", "pt2"])
def test_unit_axis_mistakes_blame_the_option(model: Path) -> None:
    glob = "*stem*"
    r = _run("audit", str(model), "--calib", str(IMAGES), "--unit-axis", f"{glob}=5")
    assert r.exit_code == 2
    assert r.stderr.startswith(f"actaudit: error: --unit-axis {glob}=5: axis 5 does not exist")
    assert "the model raised" not in r.stderr
    assert "from -4 to 3" in r.stderr  # the activation is [N, 8, 16, 16]
    r = _run("audit", str(model), "--calib", str(IMAGES), "--unit-axis", "nosuch*=1")
    assert r.exit_code == 2 and "matches no site" in r.stderr and "sites are:" in r.stderr


@pytest.fixture(scope="module")
def nhwc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("nhwc") / "nhwc.npy"
    np.save(p, np.ascontiguousarray(np.load(IMAGES).transpose(0, 2, 3, 1)))
    return p


@pytest.mark.parametrize("model", [TS, ONNX, PT2], ids=["ts", "onnx", "pt2"])
def test_channels_last_data_gets_the_permutation(model: Path, nhwc: Path) -> None:
    r = _run("audit", str(model), "--calib", str(nhwc))
    assert r.exit_code == 2
    assert "NHWC data for an NCHW model" in r.stderr
    assert "np.transpose(x, (0, 3, 1, 2))" in r.stderr
    fixed = np.transpose(np.load(nhwc), (0, 3, 1, 2))  # the suggestion, applied, restores the data
    assert np.array_equal(fixed, np.load(IMAGES))


@pytest.mark.parametrize("model", [TS, ONNX, PT2], ids=["ts", "onnx", "pt2"])
def test_input_shape_without_batch_axis_is_named(model: Path) -> None:
    r = _run("audit", str(model), "--input-shape", "3x16x16")
    assert r.exit_code == 2
    assert "1x3x16x16" in r.stderr and "batch" in r.stderr
    assert _run("audit", str(model), "--input-shape", "1x3x16x16", "-q").exit_code == 0


def test_integer_data_warns_in_onnx_and_is_refused_with_a_fix_in_torch(tmp_path: Path) -> None:
    u8 = tmp_path / "u8.npy"
    np.save(u8, (np.clip(np.load(IMAGES), 0, 1) * 255).astype(np.uint8))
    r = _run("audit", str(ONNX), "--calib", str(u8), "--format", "json")
    assert r.exit_code == 0
    warnings = json.loads(r.stdout)["warnings"]
    assert any("is uint8 but the model takes float32" in w and "not rescaled" in w for w in warnings)
    for model in (TS, PT2):
        r = _run("audit", str(model), "--calib", str(u8))
        assert r.exit_code == 2 and "x.astype(np.float32)" in r.stderr, r.stderr


def test_per_unit_outside_json_warns() -> None:
    r = _run("audit", str(TS), "--calib", str(IMAGES), "--per-unit", "--format", "csv")
    assert r.exit_code == 0 and "--per-unit adds per-unit vectors to JSON only" in r.stderr
    r = _run("audit", str(TS), "--calib", str(IMAGES), "--per-unit", "--format", "json")
    assert "--per-unit adds" not in r.stderr


def test_csv_matches_the_table_for_bounded_sites() -> None:
    r = _run("audit", str(TS), "--calib", str(IMAGES), "--format", "csv")
    rows = {row.split(",")[1]: row.split(",") for row in r.stdout.splitlines()[1:]}
    header = r.stdout.splitlines()[0].split(",")
    col = header.index("fire_rate_mean")
    assert rows["out.tanh"][col] == ""  # the table shows "-" for a bounded site (tanh on out's output)
    assert float(rows["stem_act"][col]) > 0
    former = header.index("former_name")  # the JSON's former_name, so old gates and sheets still join
    assert rows["out.tanh"][former] == "tanh" and rows["stem_act"][former] == ""


def test_bar_is_the_union_of_dead_and_saturated(expected_fixtures: dict[str, Any]) -> None:
    r = actaudit.audit(str(TS), str(IMAGES))
    d = r.to_dict()
    fc = next(s for s in d["sites"] if s["name"] == "fc_act")  # ReLU6: one dead, one stuck at 6
    union = len(set(fc["dead_units"]) | set(fc["saturated_units"])) / fc["units"]
    assert fc["dead"] == 1 and fc["saturated"] == 1 and union == pytest.approx(2 / 6)
    row = next(x for x in r.render("table").splitlines() if " fc_act " in x)
    assert row.endswith(f"{100 * union:.1f}%")


def test_weights_key_is_a_note_not_a_warning(fixtures_on_path: Path) -> None:
    r = _run(
        "audit",
        str(FIX / "models" / "cnn_dead_ckpt.pt"),
        "--arch",
        f"{FIX / 'archs.py'}:CnnDead",
        "--calib",
        str(IMAGES),
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert any(n.startswith("weights from key") for n in d["notes"])
    assert not any("weights from key" in w for w in d["warnings"])
    assert "actaudit: note: weights from key" in r.stderr


def test_batch_size_has_help() -> None:
    text = _run("audit", "--help").stdout
    assert re.search(r"--batch-size\s+INTEGER RANGE\s+Samples per forward pass", text)


# -- inspect -----------------------------------------------------------------------------------
def test_inspect_onnx_shows_the_models_facts() -> None:
    m = onnx.load(str(ONNX))
    r = _run("inspect", str(ONNX), "--format", "json")
    assert r.exit_code == 0, r.stderr
    f = json.loads(r.stdout)["facts"]
    assert f["opsets"] == {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    assert f["nodes"] == len(m.graph.node) and f["initializers"] == len(m.graph.initializer)
    assert f["producer"].startswith(m.producer_name)
    want_out = [
        (o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in m.graph.output
    ]
    assert [(o["name"], o["shape"]) for o in f["outputs"]] == want_out
    assert f["inputs"][0]["shape"][0] == m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # by name
    table = _run("inspect", str(ONNX)).stdout
    assert f"opset ai.onnx {m.opset_import[0].version}" in table and f"{len(m.graph.node)} nodes" in table
    assert "output" in table and m.graph.output[0].name in table


def test_inspect_pytorch_shows_the_models_facts() -> None:
    ep = torch.export.load(str(PT2))
    r = _run("inspect", str(PT2), "--format", "json")
    assert r.exit_code == 0, r.stderr
    f = json.loads(r.stdout)["facts"]
    assert f["parameters"] == sum(p.numel() for p in ep.module().parameters())
    assert [i["name"] for i in f["inputs"]] == list(ep.graph_signature.user_inputs)
    assert [o["name"] for o in f["outputs"]] == list(ep.graph_signature.user_outputs)
    assert f["inputs"][0]["dtype"] == "float32" and len(f["outputs"][0]["shape"]) == 2
    ts = torch.jit.load(str(TS))
    r = _run("inspect", str(TS), "--input-shape", "1x3x16x16", "--format", "json")
    f = json.loads(r.stdout)["facts"]
    assert f["parameters"] == sum(p.numel() for p in ts.parameters())
    assert [i["name"] for i in f["inputs"]] == [a.name for a in ts.forward.schema.arguments[1:]]


def _token_model(path: Path, vocab: int = 10, dim: int = 4) -> None:
    """ids [N, T] int64 → Gather(embedding) → Relu: rows >= vocab/2 are all negative (dead), the rest positive."""
    emb = np.where(np.arange(vocab)[:, None] >= vocab // 2, -1.0, 1.0) * np.ones((vocab, dim))
    g = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["e"], axis=0),
            helper.make_node("Relu", ["e"], ["y"], name="embed_act"),
        ],
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", "t"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "t", dim])],
        [helper.make_tensor("emb", TensorProto.FLOAT, [vocab, dim], emb.astype(np.float32).ravel())],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_inspect_and_audit_take_integer_inputs_with_a_value_range(tmp_path: Path) -> None:
    p = tmp_path / "tok.onnx"
    _token_model(p)
    r = _run("inspect", str(p), "--input-shape", "ids=1x6:int64", "--val-range", "0,9")
    assert r.exit_code == 0, r.stderr
    assert "n×t" in r.stdout and "int64" in r.stdout  # symbolic dims by name
    hi = _run(
        "audit", str(p), "--input-shape", "ids=1x6:int64", "--val-range", "5,9", "--format", "json", "-q"
    )
    lo = _run(
        "audit", str(p), "--input-shape", "ids=1x6:int64", "--val-range", "0,4", "--format", "json", "-q"
    )
    assert json.loads(hi.stdout)["summary"]["dead"] == 4  # every id picks a negative row
    assert json.loads(lo.stdout)["summary"]["dead"] == 0


def test_inspect_hints_name_only_its_options(tmp_path: Path) -> None:
    r = _run("inspect", str(TS))
    assert r.exit_code == 2 and "--input-shape" in r.stderr and "--calib" not in r.stderr


# -- CI output ---------------------------------------------------------------------------------
def test_junit_has_one_testcase_per_gate_and_comparison(tmp_path: Path) -> None:
    base = tmp_path / "base.json"
    assert _run("audit", str(TS), "--calib", str(IMAGES), "--format", "json", "-o", str(base)).exit_code == 0
    junit = tmp_path / "gates.xml"
    r = _run(
        "audit", str(TS), "--calib", str(IMAGES), "--fail-on", "dead>0", "--fail-on", "tanh:saturated>3",
        "--against", str(base), "--junit", str(junit), env={"GITHUB_ACTIONS": "true"},
    )  # fmt: skip
    assert r.exit_code == 1
    root = ET.parse(junit).getroot()
    cases = list(root.iter("testcase"))
    names = [c.get("name") for c in cases]
    assert names[:2] == ["dead>0", "tanh:saturated>3"] and len(cases) == 4  # + new-dead and rise
    assert {c.get("classname") for c in cases[2:]} == {"actaudit.baseline"}
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failed == {"dead>0"}  # 7 dead units; tanh has 2 saturated of 4; same data as the baseline
    assert root.find("testsuite").get("failures") == "1"  # type: ignore[union-attr]
    assert "value 7" in cases[0].find("failure").get("message", "")  # type: ignore[union-attr]
    assert "::error title=actaudit gate dead>0::" in r.stderr
    assert re.search(r"actaudit: .*cnn_dead.ts: 3 of 4 gates passed; failed: dead>0", r.stderr)


def test_config_file_is_named_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.actaudit]\nfail-on = ["dead>100"]\n')
    monkeypatch.chdir(tmp_path)
    r = _run("audit", str(TS), "--calib", str(IMAGES), "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["run"]["config_file"] == str(tmp_path / "pyproject.toml")
    assert r.stderr.count("using config file") == 1


# -- Python API --------------------------------------------------------------------------------
def _verdicts(r: actaudit.Report) -> list[tuple[int, list[int], list[int]]]:
    return [(s.info.units, s.dead_units, s.saturated_units) for s in r.sites]


def test_api_takes_in_memory_script_exported_and_onnx() -> None:
    x = np.load(IMAGES)
    by_path = _verdicts(actaudit.audit(str(TS), x))
    for model in (torch.jit.load(str(TS)), torch.export.load(str(PT2)), onnx.load(str(ONNX))):
        assert _verdicts(actaudit.audit(model, x)) == by_path


def test_input_fn_and_the_labels_hint() -> None:
    x = torch.tensor(np.load(IMAGES))
    pairs = [(x[i : i + 32], torch.zeros(32, dtype=torch.long)) for i in range(0, 128, 32)]
    for model in (torch.jit.load(str(TS)), onnx.load(str(ONNX))):
        with pytest.raises(ActauditError) as e:
            actaudit.audit(model, pairs)
        assert "input_fn=lambda batch: batch[0]" in str(e.value)
        r = actaudit.audit(model, pairs, input_fn=lambda b: b[0])
        assert r.summary()["dead"] == actaudit.audit(str(TS), np.load(IMAGES)).summary()["dead"]


# -- rewrite -o ----------------------------------------------------------------------------------
def test_rewrite_refuses_an_output_of_another_format(tmp_path: Path) -> None:
    out = tmp_path / "y.onnx"
    t0 = time.perf_counter()
    r = _run("rewrite", str(TS), "-o", str(out), "--calib", str(IMAGES))
    assert r.exit_code == 2 and "not ONNX" in r.stderr and "y.ts" in r.stderr and not out.exists()
    r = _run("rewrite", str(ONNX), "-o", str(tmp_path / "y.pt2"), "--calib", str(IMAGES))
    assert r.exit_code == 2 and "y.onnx" in r.stderr
    assert time.perf_counter() - t0 < 10  # refused before any calibration pass


# -- heads ---------------------------------------------------------------------------------------
def _head_model(path: Path) -> None:
    """x [N, 4] → Sigmoid(x·20) as the output (a saturated head), and an inner Tanh(x·20) that saturates."""
    w = np.full((4, 4), 5.0, np.float32)
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["a"]),
            helper.make_node("Tanh", ["a"], ["t"], name="inner_tanh"),
            helper.make_node("MatMul", ["t", "w"], ["b"]),
            helper.make_node("Sigmoid", ["b"], ["p"], name="head_sigmoid"),
            helper.make_node("Reshape", ["p", "shape"], ["prob"]),
        ],
        "heads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["n", 4])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, [4, 4], w.ravel()),
            helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 4]),
        ],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_saturated_output_head_is_expected_not_worst(tmp_path: Path) -> None:
    p = tmp_path / "heads.onnx"
    _head_model(p)
    x = (
        np.abs(np.random.default_rng(0).standard_normal((64, 4))).astype(np.float32) + 0.5
    )  # sums >= 2: saturates
    r = actaudit.audit(str(p), x)
    sat = {s.info.name: len(s.saturated_units) for s in r.sites}
    assert list(sat.values()) == [4, 4]  # both saturate on every unit
    text = r.render("table")
    worst = next(line for line in text.splitlines() if line.startswith("worst sites:"))
    heads = next(line for line in text.splitlines() if line.startswith("output heads saturate by design"))
    inner, head = (s.info.name for s in r.sites)
    assert inner in worst and head not in worst and head in heads
    from actaudit.report.html import render_html

    page = ET.fromstring(render_html(r))
    ranks = [tr.get("data-site") for tr in page.iter("tr") if tr.get("class") == "worst"]
    assert ranks == [inner, head]  # the head last, though both are 100 % saturated


# -- HTML on a real 47-site model, drawn by headless Chromium -------------------------------------
def _ocr_detector() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # not imported: it imports OpenCV
    if spec is None or spec.origin is None:
        reason = "rapidocr-onnxruntime is not installed (the Makefile installs it --no-deps)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(spec.origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


@pytest.fixture(scope="module")
def ocr_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[actaudit.Report, Path]:
    from actaudit.report.html import render_html

    x = np.random.default_rng(3).standard_normal((4, 3, 64, 64)).astype(np.float32)
    r = actaudit.audit(str(_ocr_detector()), x, batch_size=2)
    page = tmp_path_factory.mktemp("ocr") / "report.html"
    page.write_text(render_html(r), encoding="utf-8")
    return r, page


@pytest.mark.realmodel
def test_html_names_sites_ranks_worst_first_and_marks_the_head(
    ocr_page: tuple[actaudit.Report, Path],
) -> None:
    r, page = ocr_page
    root = ET.parse(page).getroot()
    assert len(r.sites) >= 40
    labels = [t for t in root.iter("text") if t.get("class") == "site-label"]
    assert [int(t.get("data-index", "")) for t in labels] == list(range(len(r.sites)))
    assert all(r.sites[int(t.get("data-index", ""))].info.name[:6] in "".join(t.itertext()) for t in labels)
    worst = [tr for tr in root.iter("tr") if tr.get("class") == "worst"]
    flagged = [s for s in r.sites if s.dead_units or s.saturated_units]
    assert len(worst) == len(flagged)
    # the head (the probability map's Sigmoid, which is the model's output) comes last
    graph = onnx.load(str(_ocr_detector()), load_external_data=False).graph
    heads = [s.info.name for s in r.sites if s.info.model_output]
    assert heads and all("Sigmoid" in h for h in heads)
    assert any(n.op_type == "Sigmoid" and n.output[0] == graph.output[0].name for n in graph.node)
    assert worst[-1].get("data-site") == heads[-1]
    bad = [float(tr.get("data-bad", "")) for tr in worst if tr.get("data-site") not in heads]
    assert bad == sorted(bad, reverse=True)
    # dead unit indices per site, as in the JSON
    d = {s["name"]: s for s in r.to_dict()["sites"]}
    for span in root.iter("span"):
        if span.get("class") == "dead-units":
            site = span.get("data-units", "")
            assert site  # non-empty
    rows = {tr.get("data-site"): tr for tr in worst}
    for name, tr in rows.items():
        spans = [sp for sp in tr.iter("span") if sp.get("class") == "dead-units"]
        assert [int(u) for u in (spans[0].get("data-units", "").split() if spans else [])] == d[name][
            "dead_units"
        ]
    # histogram axes carry a count scale whose top is the tallest bar
    hist = next(s for s in root.iter("svg") if s.get("class") == "hist")
    ticks = [t.text for t in hist.iter("text") if t.get("class") == "y-tick"]
    counts = [int(c) for c in hist.get("data-counts", "").split()] + [int(hist.get("data-flagged", ""))]
    assert ticks[0] == "0" and float(ticks[-1]) == max(counts)


@pytest.mark.slow
@pytest.mark.realmodel
def test_headless_chromium_draws_a_47_site_report(
    ocr_page: tuple[actaudit.Report, Path], tmp_path: Path, screenshot: Any
) -> None:
    from pngread import png_rgb as _png_rgb

    _, page = ocr_page
    shot = tmp_path / "shot.png"
    screenshot(page, shot, (1100, 1300))
    w, h, rgb = _png_rgb(shot)
    assert (w, h) == (1100, 1300)
    sat = (np.abs(rgb - np.array((0xF2, 0x8E, 0x2B))).max(axis=2) <= 3).sum()  # --sat: saturated bars
    dead = (np.abs(rgb - np.array((0xD6, 0x27, 0x28))).max(axis=2) <= 3).sum()
    assert sat > 500 and dead > 500
    # the site names under the depth chart are drawn: the chart alone, with and without its labels
    html = page.read_text(encoding="utf-8")
    style = re.search(r"<style>.*?</style>", html, flags=re.S)
    chart = re.search(r'<section id="depth">.*?</section>', html, flags=re.S)
    assert style and chart
    bare = re.sub(r'<text class="site-label".*?</text>', "", chart.group(0), flags=re.S)
    pixels = []
    for k, body in enumerate((chart.group(0), bare)):
        f, png = tmp_path / f"chart{k}.html", tmp_path / f"chart{k}.png"
        f.write_text(f"<!DOCTYPE html><html><head>{style.group(0)}</head><body>{body}</body></html>")
        screenshot(f, png, (1000, 500))
        pixels.append(_png_rgb(png)[2].max(axis=2) < 160)  # grey text, not a bar colour
    named, control = pixels
    # the labels added about 0.9 % of the image in grey text here (1.9 % against 1.0 %)
    assert named.mean() - control.mean() > 0.005, (named.mean(), control.mean())


class _Head(nn.Module):
    """Linear → Tanh (saturates inside) → Linear → Sigmoid → reshape: the sigmoid's values are the output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.inner, self.out = nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.fill_(5.0)
            self.out.weight.fill_(5.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.inner(self.fc(x)))).reshape(-1, 3)


def test_torch_heads_are_found_in_every_format() -> None:
    torch.manual_seed(0)
    m = _Head().eval()
    x = np.abs(np.random.default_rng(0).standard_normal((64, 4))).astype(np.float32) + 0.5
    ep = torch.export.export(m, (torch.tensor(x[:2]),), dynamic_shapes=({0: torch.export.Dim("b")},))
    for model in (m, torch.jit.trace(m, torch.tensor(x[:2])), ep):
        r = actaudit.audit(model, x)
        assert [(len(s.saturated_units), s.info.model_output) for s in r.sites] == [(4, False), (3, True)]
        d = r.to_dict()["sites"]
        assert "model_output" not in d[0] and d[1]["model_output"] is True


def test_html_site_table_keeps_its_header_and_tags_heads(ocr_page: tuple[actaudit.Report, Path]) -> None:
    r, page = ocr_page
    table = ET.parse(page).getroot().find(".//table[@id='site-table']")
    assert table is not None and table.find("thead") is not None
    assert [c.text for c in table.find("thead").iter("th")][:2] == ["#", "site"]  # type: ignore[union-attr]
    tagged = [
        tr.get("data-site")
        for tr in table.iter("tr")
        if any(sp.get("class") == "tag" for sp in tr.iter("span"))
    ]
    assert tagged == [s.info.name for s in r.sites if s.info.model_output and s.saturated_units]


def test_table_width_follows_the_terminal_unless_wide_or_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from actaudit.report.terminal import table_width

    class _Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", _Tty())
    monkeypatch.setenv("COLUMNS", "72")
    assert table_width(False, False) == 72
    assert table_width(True, False) is None  # --wide
    assert table_width(False, True) is None  # -o FILE
    monkeypatch.setattr(sys, "stdout", object())  # no isatty: a pipe-like object
    assert table_width(False, False) is None
