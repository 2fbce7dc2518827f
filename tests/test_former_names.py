"""Functional sites are named after the module that produced their input, in every format; every
place that matches sites by name still accepts the former (``#k``) name, with a note.

The expected names are written by hand from the model below: ``F.relu(self.conv1(x))`` reads
conv1's output (``conv1.relu``), ``torch.sigmoid(self.fc(...))`` reads fc's (``fc.sigmoid``);
``F.relu(a + b)`` reads no module's output and keeps the ``#k`` rule; conv2 runs twice, so its two
relus share a derived name and get ``#0`` / ``#1``.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import actaudit
from actaudit.cli import cli
from actaudit.naming import derived_base, named_sites
from actaudit.report import schema
from actaudit.report.baseline import compare


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv1.bias[1] = -50.0  # conv1.relu unit 1 dead by construction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv1(x))
        b = F.relu(self.conv2(a))
        c = self.conv2(b).relu()  # conv2 again: a second call, a second site
        d = F.relu(a + c)  # an add made the input: no producing module
        return torch.sigmoid(self.fc(d.mean((2, 3))))


# name -> former name, by the rule above
NAMES = {
    "conv1.relu": "relu#0",
    "conv2.relu#0": "relu#1",
    "conv2.relu#1": "relu#2",
    "relu#3": None,
    "fc.sigmoid": "sigmoid",
}
X = np.random.default_rng(0).normal(size=(24, 3, 6, 6)).astype(np.float32)


def _model() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def _names(report: Any) -> dict[str, str | None]:
    return {v.info.name: v.info.former_name for v in report.sites}


def _old(d: dict[str, Any]) -> dict[str, Any]:
    """The same report as an actaudit before this naming rule wrote it: former names, no former_name."""
    d = copy.deepcopy(d)
    for s in d["sites"]:
        former = s.pop("former_name", None)
        if former:
            s["name"] = former
    return d


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("former")
    m = _model()
    x = torch.from_numpy(X[:2])
    np.save(d / "x.npy", X)
    torch.jit.script(m).save(str(d / "m.ts"))
    torch.jit.trace(m, x).save(str(d / "m_traced.ts"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(m, (x,)), str(d / "m.pt2"))
        torch.onnx.export(
            m,
            (x,),
            str(d / "m.onnx"),
            dynamo=True,
            dynamic_shapes={"x": {0: torch.export.Dim("b")}},
            verbose=False,
        )
    return {
        "ts": d / "m.ts",
        "traced": d / "m_traced.ts",
        "pt2": d / "m.pt2",
        "onnx": d / "m.onnx",
        "x": d / "x.npy",
    }


@pytest.fixture(scope="module")
def report() -> Any:
    return actaudit.audit(_model(), X)


def test_the_rule_on_bases() -> None:
    assert derived_base("conv2", "", "relu") == "conv2.relu"
    assert derived_base("blk.conv", "blk", "relu") == "blk.conv.relu"
    assert derived_base("blk", "blk", "relu") is None  # the caller's own op made it
    assert derived_base("conv1", "blk", "relu") is None  # made outside the caller: not its child
    assert derived_base("", "", "relu") is None
    # A derived base that is another site's base keeps the former name; repeats get #k among themselves.
    got = named_sites(
        [("relu", "a.relu"), ("a.relu", None), ("relu", "b.relu"), ("relu", "b.relu"), ("relu", None)]
    )
    assert got == [
        ("relu#0", None),
        ("a.relu", None),
        ("b.relu#0", "relu#1"),
        ("b.relu#1", "relu#2"),
        ("relu#3", None),
    ]


def test_eager_names_and_former_names(report: Any) -> None:
    assert _names(report) == NAMES
    assert report.sites[0].dead_units == [1]
    d = report.to_dict()
    assert [s.get("former_name") for s in d["sites"]] == list(NAMES.values())
    schema.validate(d)  # former_name is part of actaudit.report/1


@pytest.mark.parametrize("fmt", ["ts", "traced", "pt2", "onnx"])
def test_every_format_gives_the_same_names(files: dict[str, Path], report: Any, fmt: str) -> None:
    got = actaudit.audit(str(files[fmt]), calib=str(files["x"]))
    assert _names(got) == NAMES
    assert [v.dead_units for v in got.sites] == [v.dead_units for v in report.sites]


def test_unit_axis_by_a_derived_name_with_its_suffix() -> None:
    r = actaudit.audit(_model(), X, unit_axis=["conv2.relu#1=2"])  # rows instead of channels
    axes = {v.info.name: (v.info.unit_axis, v.info.units) for v in r.sites}
    assert axes["conv2.relu#1"] == (2, 6) and axes["conv2.relu#0"] == (1, 4)
    assert not any("former name" in w for w in r.warnings)


def test_against_a_baseline_with_former_names(report: Any) -> None:
    now = actaudit.audit(_model(), X).to_dict()
    # A newly dead unit at conv1.relu, compared with a baseline written under the former names.
    worse = _model()
    with torch.no_grad():
        worse.conv1.bias[2] = -50.0
    now = actaudit.audit(worse, X).to_dict()
    c = compare(now, _old(report.to_dict()))
    assert {s.name for s in c.sites} == set(NAMES)  # every site paired, none added or removed
    assert c.added_sites == [] and c.removed_sites == []
    assert c.new_dead == 1 and not c.passed
    assert next(s for s in c.sites if s.name == "conv1.relu").new_dead_units == [2]
    assert any("relu#0 → conv1.relu" in w for w in c.warnings), c.warnings
    # And the other way: a report of the former naming against a new baseline.
    back = compare(_old(now), report.to_dict())
    assert back.new_dead == 1 and back.added_sites == [] and back.removed_sites == []
    assert any("relu#0 → conv1.relu" in w for w in back.warnings), back.warnings


def test_a_gate_on_a_former_name_still_gates_with_a_note() -> None:
    r = actaudit.audit(_model(), X, fail_on=["relu#0:dead>0"])
    (g,) = r.gates
    assert g.failed and g.failing_sites == ["conv1.relu"]
    assert any("relu#0 → conv1.relu" in w for w in r.warnings), r.warnings
    # The new name gates the same site, without a note.
    r = actaudit.audit(_model(), X, fail_on=["conv1.relu:dead>0"])
    assert r.gates[0].failed and not any("former name" in w for w in r.warnings)


def test_cli_against_and_config_file_with_former_names(
    files: dict[str, Path], report: Any, tmp_path: Path
) -> None:
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_old(report.to_dict())))
    cfg = tmp_path / "actaudit.toml"
    cfg.write_text('fail-on = ["sigmoid:saturated-fraction>0.99"]\n')
    r = CliRunner().invoke(
        cli,
        ["audit", str(files["ts"]), "--calib", str(files["x"]), "--against", str(base), "--config", str(cfg)],
    )
    assert r.exit_code == 0, r.output
    assert "relu#0 → conv1.relu" in r.output and "sigmoid → fc.sigmoid" in r.output


def test_rewrite_sites_by_former_name(files: dict[str, Path]) -> None:
    from actaudit.rewrite import rewrite

    rep = rewrite(str(files["ts"]), str(files["x"]), sites="relu#0", alpha=0.05, max_drift=1.0)
    assert [s.name for s in rep.rewritten] == ["conv1.relu"]
    assert any("relu#0 → conv1.relu" in n for n in rep.notes), rep.notes


def test_merge_aligns_a_shard_written_with_former_names(files: dict[str, Path], tmp_path: Path) -> None:
    paths = []
    for k in (1, 2):
        p = tmp_path / f"s{k}.json"
        r = CliRunner().invoke(
            cli,
            [
                "audit",
                str(files["ts"]),
                "--calib",
                str(files["x"]),
                "--shard",
                f"{k}/2",
                "--batch-size",
                "8",
                "--format",
                "json",
                "-o",
                str(p),
                "-q",
            ],
        )
        assert r.exit_code == 0, r.output
        paths.append(p)
    new = tmp_path / "new.json"
    assert (
        CliRunner().invoke(cli, ["merge", *map(str, paths), "--format", "json", "-o", str(new)]).exit_code
        == 0
    )
    old = json.loads(paths[1].read_text())  # shard 2 as the former naming wrote it
    for s in old["counters"]["sites"]:
        former = s["info"].pop("former_name", None)
        if former:
            s["info"]["name"] = former
    paths[1].write_text(json.dumps(_old(old)))
    mixed = tmp_path / "mixed.json"
    r = CliRunner().invoke(cli, ["merge", *map(str, paths), "--format", "json", "-o", str(mixed)])
    assert r.exit_code == 0, r.output
    a, b = json.loads(new.read_text()), json.loads(mixed.read_text())
    assert [(s["name"], s.get("former_name"), s["dead_units"]) for s in a["sites"]] == [
        (s["name"], s.get("former_name"), s["dead_units"]) for s in b["sites"]
    ]
    assert [s["name"] for s in b["sites"]] == list(NAMES)
    said = [*b.get("notes", []), *b.get("warnings", [])]
    assert any("older shard report" in n and "relu#0 → conv1.relu" in n for n in said), said


def test_history_keeps_the_former_names(files: dict[str, Path]) -> None:
    from actaudit.history import History

    h = History()
    h.add("a", actaudit.audit(str(files["ts"]), calib=str(files["x"])))
    sites = {s["name"]: s.get("former_name") for s in h.to_dict()["sites"]}  # type: ignore[union-attr]
    assert sites == {n: f for n, f in NAMES.items()}


class Recurrent(nn.Module):
    """``out, _ = self.lstm(x)``: the tanh reads a tuple element the LSTM returned."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return torch.sigmoid(self.fc(torch.tanh(out)))


def test_a_tuple_output_names_its_module_in_every_format(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = Recurrent().eval()
    x = torch.randn(2, 5, 4)
    data = tmp_path / "x.npy"
    np.save(data, torch.randn(8, 5, 4).numpy())
    paths = {"script": tmp_path / "s.ts", "trace": tmp_path / "t.ts", "pt2": tmp_path / "m.pt2"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's advice on the LSTM's own checks
        torch.jit.script(m).save(str(paths["script"]))
        torch.jit.trace(m, x).save(str(paths["trace"]))
        torch.export.save(torch.export.export(m, (x,)), str(paths["pt2"]))
    want = {"lstm.tanh": "tanh", "fc.sigmoid": "sigmoid"}
    for label, got in [
        ("eager", actaudit.audit(m, np.load(data))),
        *((k, actaudit.audit(str(p), calib=str(data))) for k, p in paths.items()),
    ]:
        names = {n: f for n, f in _names(got).items() if not n.startswith("lstm.l0.")}  # the gates
        assert names == want, label
