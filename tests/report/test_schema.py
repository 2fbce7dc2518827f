"""The published report schema: real reports validate, broken ones do not, with and without jsonschema."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import actaudit
from actaudit.errors import InputError
from actaudit.report import SCHEMA, schema
from actaudit.report.baseline import compare


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.Sigmoid())
    with torch.no_grad():
        m[0].bias[:2] = -20.0
        m[2].bias[0] = 30.0
    return m


@pytest.fixture(scope="module")
def rich() -> dict[str, Any]:
    """Gates (one failing), warnings, an uncovered site and per-unit arrays, all in one report."""
    rng = np.random.default_rng(0)
    # the sequence length changes between batches, so axis 1 of the ReLU is not a stable unit axis
    batches = [rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(2, 5, 4)).astype(np.float32)]
    r = actaudit.audit(
        _model(),
        batches,
        unit_axis=["1=1"],
        fail_on=["saturated>0", "3:saturated-fraction>0.9"],
        per_unit=True,
    )
    d = r.to_dict()
    assert d["uncovered"] and d["warnings"] and d["gates"] and not d["passed"]
    assert "per_unit" in d["sites"][0]
    return d


@pytest.fixture(scope="module")
def plain() -> dict[str, Any]:
    x = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    return actaudit.audit(_model(), x).to_dict()


@pytest.fixture(params=["jsonschema", "builtin"])
def checker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "jsonschema":
        pytest.importorskip(
            "jsonschema", reason="jsonschema is a dev dependency; the built-in checker runs anyway"
        )
    else:
        import builtins

        real_import = builtins.__import__

        def no_jsonschema(name: str, *a: Any, **kw: Any) -> Any:
            if name == "jsonschema":
                raise ImportError(name)
            return real_import(name, *a, **kw)

        monkeypatch.setattr(builtins, "__import__", no_jsonschema)
    return str(request.param)


def test_schema_is_shipped_and_is_draft_2020_12() -> None:
    text = resources.files("actaudit").joinpath("report.schema.json").read_text(encoding="utf-8")
    s = json.loads(text)
    assert s == schema.load_schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["properties"]["schema"]["const"] == SCHEMA


def test_schema_is_valid_under_its_metaschema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema.load_schema())


def test_real_reports_validate(checker: str, rich: dict[str, Any], plain: dict[str, Any]) -> None:
    assert schema.errors(rich) == []
    assert schema.errors(plain) == []
    schema.validate(json.loads(json.dumps(rich)))  # after a JSON round trip, as a consumer reads it
    no_run = copy.deepcopy(plain)
    del no_run["run"]  # --format json without the run section (to_json(include_run=False))
    schema.validate(no_run)


def test_report_with_baseline_section_validates(
    checker: str, rich: dict[str, Any], plain: dict[str, Any]
) -> None:
    d = copy.deepcopy(plain)
    d["baseline"] = compare(plain, plain, max_dead_fraction_rise=0.05, baseline_path="base.json").to_dict()
    schema.validate(d)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.pop("summary"), "'summary' is a required property"),
        (lambda d: d.update(schema="actaudit.report/2"), "$.schema"),
        (lambda d: d["sites"][0].update(dead=-1), "$.sites[0].dead"),
        (lambda d: d["sites"][0].update(dead_fraction=1.5), "$.sites[0].dead_fraction"),
        (lambda d: d["sites"][0].update(family="smooth"), "$.sites[0].family"),
        (lambda d: d["sites"][0].update(dead_units=[1, 1]), "$.sites[0].dead_units"),
        (lambda d: d["summary"].update(dead="3"), "$.summary.dead"),
        (lambda d: d["gates"][0].update(passed="no"), "$.gates[0].passed"),
        (lambda d: d["model"].update(sha256="abc"), "$.model.sha256"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["sites"][0]["per_unit"]["fire_rate"].append("x"), "$.sites[0].per_unit.fire_rate["),
        (lambda d: d["uncovered"][0].pop("reason"), "$.uncovered[0]"),
    ],
)
def test_invalid_reports_fail(checker: str, rich: dict[str, Any], mutate: Any, where: str) -> None:
    d = copy.deepcopy(rich)
    mutate(d)
    found = schema.errors(d)
    assert found, "the broken report validated"
    assert any(where in e for e in found), found
    with pytest.raises(InputError, match=r"does not match report\.schema\.json"):
        schema.validate(d)


def test_validate_reports_every_error(rich: dict[str, Any]) -> None:
    d = copy.deepcopy(rich)
    d["summary"]["dead"] = -1
    d["passed"] = "yes"
    with pytest.raises(schema.ReportSchemaError) as info:
        schema.validate(d)
    assert len(info.value.errors) == 2
    assert "and 1 more" in str(info.value)
