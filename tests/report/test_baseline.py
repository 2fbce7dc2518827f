"""``--against``: regressions against a baseline report, from two real audits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import actaudit
from actaudit.errors import InputError
from actaudit.report import Report
from actaudit.report.baseline import compare, load_baseline

X = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)


def _model(dead1: tuple[int, ...] = (0,), dead2: tuple[int, ...] = (), hidden: int = 8) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(5, hidden), nn.ReLU(), nn.Linear(hidden, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        m[0].bias[list(dead1)] = -100.0
        if dead2:
            m[2].bias[list(dead2)] = -100.0
    return m


def _audit(m: nn.Module, **kw: Any) -> Report:
    return actaudit.audit(m, X, **kw)


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    d = _audit(_model()).to_dict()
    assert [s["name"] for s in d["sites"]] == ["1", "3"]
    assert 0 in d["sites"][0]["dead_units"] and 5 not in d["sites"][0]["dead_units"]
    return d


def test_identical_reports_pass(base: dict[str, Any]) -> None:
    c = compare(base, base)
    assert c.passed and c.new_dead == 0 and c.revived == 0
    assert c.added_sites == [] and c.removed_sites == [] and c.warnings == []
    assert [g.gate.text for g in c.gate_results] == ["against:new-dead>0", "against:dead-fraction-rise>0"]


def test_one_more_dead_unit_is_a_regression(base: dict[str, Any]) -> None:
    now = _audit(_model(dead1=(0, 5))).to_dict()
    c = compare(now, base)
    assert not c.passed
    site = next(s for s in c.sites if s.name == "1")
    assert site.new_dead_units == [5] and site.revived_units == []
    assert site.dead == site.baseline_dead + 1
    assert site.dead_fraction_rise == pytest.approx(1 / 8)
    new_dead, rise = c.gate_results
    assert new_dead.failed and new_dead.value == 1.0 and new_dead.failing_sites == ["1"]
    assert rise.failed and rise.value == pytest.approx(0.125) and rise.failing_sites == ["1"]


def test_tolerances_let_small_changes_pass(base: dict[str, Any]) -> None:
    now = _audit(_model(dead1=(0, 5))).to_dict()
    c = compare(now, base, max_dead_fraction_rise=0.2, max_new_dead=1)
    assert c.passed and c.new_dead == 1 and c.risen == []
    c = compare(now, base, max_dead_fraction_rise=0.1, max_new_dead=1)
    assert [g.failed for g in c.gate_results] == [False, True]


def test_a_unit_that_moved_is_new_dead_even_if_the_fraction_held(base: dict[str, Any]) -> None:
    now = _audit(_model(dead1=(5,))).to_dict()  # unit 0 revived, unit 5 died
    c = compare(now, base)
    site = next(s for s in c.sites if s.name == "1")
    assert site.new_dead_units == [5] and site.revived_units == [0]
    assert site.dead_fraction_rise == 0
    assert [g.failed for g in c.gate_results] == [True, False]


def test_improvements_pass(base: dict[str, Any]) -> None:
    now = _audit(_model(dead1=())).to_dict()
    c = compare(now, base)
    assert c.passed and c.revived >= 1
    assert "revived 0" in c.render()


def test_added_removed_and_resized_sites(base: dict[str, Any]) -> None:
    class Wider(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _model(hidden=10)
            self.extra = nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.extra(self.inner(x))

    now = _audit(Wider()).to_dict()
    with pytest.raises(
        InputError, match="is not comparable: none of its 2 site names matches one of the 3 sites"
    ):
        compare(now, base)  # gates over no common site would pass on nothing
    c = compare(now, base, allow_renamed=True)
    assert c.added_sites == ["inner.1", "extra"]  # inner.1 has 10 units, the baseline's 1 has 8
    assert c.removed_sites == ["1"]
    assert [s.name for s in c.sites] == ["inner.3"]  # paired with "3": same position, kind, units
    assert any("paired by position" in w for w in c.warnings)


def test_renamed_sites_are_compared_only_when_asked(base: dict[str, Any]) -> None:
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _model(dead2=(4,))  # a newly dead unit at the second site (2 was dead already)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    now = _audit(Wrapped()).to_dict()
    assert [s["name"] for s in now["sites"]] == ["inner.1", "inner.3"]
    with pytest.raises(InputError, match="not comparable"):
        compare(now, base)
    c = compare(now, base, allow_renamed=True)
    assert not c.passed
    assert [(s.name, s.new_dead_units) for s in c.sites if s.new_dead_units] == [("inner.3", [4])]

    resized = _audit(_model(hidden=10)).to_dict()
    c = compare(resized, base)
    s = next(s for s in c.sites if s.name == "1")
    assert s.units_changed and s.new_dead_units == [] and s.revived_units == []
    assert any("1 has 10 units, 8 in the baseline" in w for w in c.warnings)


def test_different_settings_and_data_are_warned_about(base: dict[str, Any]) -> None:
    from actaudit.verdicts import Settings

    now = actaudit.audit(_model(), X[:32], settings=Settings(dead_rate=0.05)).to_dict()
    c = compare(now, base)
    text = " ".join(c.warnings)
    assert "dead-rate 0.0 → 0.05" in text
    assert "64 samples" in text and "32 from" in text


def test_gate_results_join_the_report(base: dict[str, Any]) -> None:
    r = _audit(_model(dead1=(0, 5)))
    assert r.passed
    c = compare(r.to_dict(), base, baseline_path="base.json")
    r.gates += c.gate_results
    d = r.to_dict()
    assert not r.passed and d["passed"] is False
    assert [g["gate"] for g in d["gates"]] == ["against:new-dead>0", "against:dead-fraction-rise>0"]
    from actaudit.report.schema import validate

    d["baseline"] = c.to_dict()
    validate(d)
    assert d["baseline"]["sites"][0]["new_dead_units"] == [5]


def test_render_names_the_regressions(base: dict[str, Any]) -> None:
    now = _audit(_model(dead1=(0, 5))).to_dict()
    text = compare(now, base, baseline_path="base.json").render()
    lines = text.splitlines()
    assert lines[0].startswith("against baseline base.json: 1 new dead units, 0 revived, 1 sites")
    assert any(
        line.startswith("  1: dead ") and "newly dead units 5" in line and "+12.5 points" in line
        for line in lines
    )
    assert "gate against:new-dead>0: FAILED (value 1) at 1" in text
    assert "gate against:dead-fraction-rise>0: FAILED (value 0.125) at 1" in text


def test_the_rise_reads_in_the_gate_s_unit_and_in_points(base: dict[str, Any]) -> None:
    """Two more dead units of 8: the rise is 2/8 = 0.25, i.e. 25 points; the site line gives both
    forms so that it matches the gate line's value, and the title states the limit the same way."""
    now = _audit(_model(dead1=(0, 5, 6))).to_dict()
    lines = compare(now, base, baseline_path="b.json", max_dead_fraction_rise=0.05).render().splitlines()
    assert lines[0].endswith("1 sites with dead-fraction-rise > 0.05 (5.0 points)")
    site = next(line for line in lines if line.startswith("  1: dead "))
    assert site.startswith("  1: dead 1 → 3 of 8 (dead-fraction-rise 0.25 = +25.0 points)")
    assert "gate against:dead-fraction-rise>0.05: FAILED (value 0.25) at 1" in lines


def test_load_baseline(tmp_path: Path, base: dict[str, Any]) -> None:
    p = tmp_path / "base.json"
    p.write_text(json.dumps(base))
    assert load_baseline(p) == base
    with pytest.raises(InputError, match="does not exist"):
        load_baseline(tmp_path / "nope.json")
    p.write_text("{not json")
    with pytest.raises(InputError, match="is not JSON"):
        load_baseline(p)
    p.write_text(json.dumps({"sites": [], "schema": "actaudit.report/0"}))
    with pytest.raises(InputError, match=r"has schema 'actaudit\.report/0'"):
        load_baseline(p)
    p.write_text("[1, 2]")
    with pytest.raises(InputError, match="is not an actaudit report"):
        load_baseline(p)


def test_bad_tolerances_are_input_errors(base: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        compare(base, base, max_dead_fraction_rise=5)
    with pytest.raises(InputError):
        compare(base, base, max_new_dead=-1)


def test_cli_not_comparable_is_exit_2_unless_renamed_sites_are_allowed(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    from click.testing import CliRunner

    from actaudit.cli import cli

    model = fixtures_dir / "models" / "cnn_dead.onnx"
    calib = fixtures_dir / "data" / "cnn_images.npy"
    args = ["audit", str(model), "--calib", str(calib), "--samples", "16", "-q"]
    r = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    for s in d["sites"]:
        s["name"] = "exporter2/" + s["name"]  # the same model, named by another exporter
    base = tmp_path / "base.json"
    base.write_text(json.dumps(d))
    r = CliRunner().invoke(cli, [*args, "--against", str(base)])
    assert r.exit_code == 2
    assert (
        r.stderr.strip().splitlines()[-1].startswith(f"actaudit: error: --against {base} is not comparable")
    )
    r = CliRunner().invoke(cli, [*args, "--against", str(base), "--allow-renamed-sites"])
    assert r.exit_code == 0, r.output
