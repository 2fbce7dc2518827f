"""``actaudit inspect``: the sites an audit covers, with the audit's names and order, and the inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import actaudit
from actaudit.cli import cli
from actaudit.inspection import inspect_model


class Net(nn.Module):
    """A conv ReLU, a functional ReLU, a module reused at two call sites and a tanh head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        x = F.relu(x - 0.1).mean((2, 3))
        x = self.act(self.fc(x))
        return torch.tanh(self.head(x))


@pytest.fixture(scope="module")
def pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("inspect") / "net.pt2"
    ep = torch.export.export(
        Net().eval(), (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: torch.export.Dim("b")},)
    )
    torch.export.save(ep, str(p))
    return p


@pytest.fixture(scope="module")
def ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("inspect") / "net.ts"
    torch.jit.save(torch.jit.trace(Net().eval(), torch.randn(2, 3, 8, 8)), str(p))
    return p


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_json_sites_match_the_audit(pt2: Path) -> None:
    code, out, err = _run("inspect", str(pt2), "--format", "json")
    assert code == 0, err
    ins = json.loads(out)
    audit = actaudit.audit(str(pt2), input_shapes=["1x3x8x8"], samples=4).to_dict()
    assert [s["name"] for s in ins["sites"]] == [s["name"] for s in audit["sites"]]
    assert len(ins["sites"]) == 4
    for a, b in zip(ins["sites"], audit["sites"], strict=True):
        for key in ("index", "op", "kind", "family", "module", "unit_axis", "units", "sample_shape"):
            assert a[key] == b[key], key
    assert ins["schema"] == "actaudit.inspect/1"
    assert ins["model"]["sha256"] == audit["model"]["sha256"]
    assert ins["inputs"] == audit["inputs"]
    assert ins["inputs"][0]["shape"] == ["?", 3, 8, 8]
    # structural only: no verdicts in the listing
    assert not {"dead", "saturated", "fire_rate", "coverage"} & set(ins["sites"][0])


def test_table_lists_sites_and_inputs(pt2: Path) -> None:
    code, out, _ = _run("inspect", str(pt2))
    assert code == 0
    assert f"{pt2} [torch.export]" in out.splitlines()[0]
    # the program's own symbol for the dynamic batch (torch names it s0, s1, ... on load), not "?"
    assert re.search(r"^x\s+s\d+×3×8×8\s+float32$", out, flags=re.M), out
    header = next(line for line in out.splitlines() if line.startswith("#"))
    assert header.split() == [
        "#",
        "site",
        "op",
        "kind",
        "unit",
        "axis",
        "units",
        "activation",
        "shape",
        "module",
    ]
    assert "4 sites, " in out and "units; found by one forward pass of 1 sample (synthetic x=3x8x8)" in out


def test_csv_and_markdown(pt2: Path) -> None:
    code, out, _ = _run("inspect", str(pt2), "--format", "csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "index,name,op,kind,family,unit_axis,units,sample_shape,module"
    assert len(lines) == 5 and lines[1].split(",")[-2] == "4x8x8"
    code, out, _ = _run("inspect", str(pt2), "--format", "markdown")
    assert code == 0 and "| site" in out and out.startswith("**")


def test_torchscript_needs_an_input_shape(ts: Path) -> None:
    code, _, err = _run("inspect", str(ts))
    assert code == 2
    assert "no shape for input" in err and "--input-shape" in err
    code, out, err = _run("inspect", str(ts), "--input-shape", "1x3x8x8", "--format", "json")
    assert code == 0, err
    audit = actaudit.audit(str(ts), input_shapes=["1x3x8x8"], samples=2).to_dict()
    assert [s["name"] for s in json.loads(out)["sites"]] == [s["name"] for s in audit["sites"]]


def test_unit_axis_override_shows_up(pt2: Path) -> None:
    plain = inspect_model(str(pt2))
    over = inspect_model(str(pt2), unit_axis=["act#0=2"])
    assert plain.sites[0]["unit_axis"] == 1 and plain.sites[0]["units"] == 4
    assert over.sites[0]["unit_axis"] == 2 and over.sites[0]["units"] == 8
    assert [s["name"] for s in over.sites] == [s["name"] for s in plain.sites]


def test_in_memory_module() -> None:
    ins = inspect_model(Net(), input_shapes=["1x3x8x8"])
    # relu(x - 0.1): no module made its input; tanh(head(x)): named after head, formerly "tanh"
    assert [s["name"] for s in ins.sites] == ["act#0", "relu", "act#1", "head.tanh"]
    assert [s.get("former_name") for s in ins.sites] == [None, None, None, "tanh"]
    assert ins.model["format"] == "in-memory" and ins.model["path"] is None
    assert ins.to_dict()["sites"][1]["kind"] == "relu"


def test_output_file_and_force(pt2: Path, tmp_path: Path) -> None:
    out = tmp_path / "sites.json"
    code, stdout, _ = _run("inspect", str(pt2), "--format", "json", "-o", str(out))
    assert code == 0 and stdout == ""
    assert json.loads(out.read_text())["sites"]
    code, _, err = _run("inspect", str(pt2), "-o", str(out))
    assert code == 2 and "already exists" in err
    assert _run("inspect", str(pt2), "-o", str(out), "--force")[0] == 0


def test_same_formats_as_audit() -> None:
    from actaudit.cli import FORMATS
    from actaudit.cli import inspect as cli_inspect

    assert cli_inspect.FORMATS == FORMATS


def test_help_and_missing_model(tmp_path: Path) -> None:
    code, out, _ = _run("inspect", "--help")
    assert code == 0 and "actaudit inspect model.pt2" in out
    code, _, err = _run("inspect", str(tmp_path / "missing.pt2"))
    assert code == 2 and "missing.pt2" in err
