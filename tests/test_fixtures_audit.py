"""The audit against the fixtures' independently derived verdicts, in every PyTorch format.

``fixtures/expected.json`` comes from ``fixtures/make_fixtures.py``, which knows the dead
and saturated units from how it built the weights and cross-checks them with a reference
forward pass; nothing there calls actaudit. Here every model × format is audited through
the Python API and through the CLI, and must match exactly.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import actaudit
from actaudit.cli import cli

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
MODELS = list(EXPECTED["models"])
TORCH_FORMATS = ["torchscript", "export", "state_dict", "checkpoint", "pickled"]
API_FORMATS = [*TORCH_FORMATS, "torchscript_traced"]

# Audit bugs these fixtures exposed, fixed since (keyword batches for torch.export programs,
# ModuleList names in TorchScript): the cases below run as ordinary tests. A newly found bug is
# tracked here as a strict xfail with its reason until it is fixed.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def _matrix(formats: list[str]) -> list[Any]:
    return [
        pytest.param(m, f, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[(m, f)])])
        if (m, f) in KNOWN_FAILURES
        else pytest.param(m, f)
        for m in MODELS
        for f in formats
    ]


SITE_KEYS = (
    "name",
    "former_name",  # functional sites: the name before they were named after their input's module
    "kind",
    "unit_axis",
    "units",
    "dead_units",
    "saturated_units",
    "never_positive_units",
    "rarely_firing_units",
)


def fixture_path(rel: str) -> Path:
    """A path from expected.json (relative to ``fixtures/``), made absolute."""
    return FIXTURES / rel


def repo_spec(spec: str) -> str:
    """An ``--arch`` / ``--data-loader`` spec from expected.json (``fixtures/x.py:fn``), made absolute."""
    file, _, fn = spec.rpartition(":")
    return f"{REPO / file}:{fn}"


def _opts(model: str, fmt: str) -> dict[str, Any]:
    m = EXPECTED["models"][model]
    kw: dict[str, Any] = {}
    if fmt in ("state_dict", "checkpoint"):
        kw["arch"] = repo_spec(m["arch"])
    if fmt == "pickled":
        kw["trust_pickle"] = True
    return kw


def _cli_flags(model: str, fmt: str) -> list[str]:
    flags = []
    for k, v in _opts(model, fmt).items():
        if k == "arch":
            flags += ["--arch", v]
        elif k == "trust_pickle":
            flags.append("--trust-pickle")
    return flags


def _model_file(model: str, fmt: str) -> str:
    return str(fixture_path(EXPECTED["models"][model]["files"][fmt]))


def _calib(model: str, kind: str | None = None) -> str:
    """A calibration file of ``model``: by default its .npy (its .npz for multi-input models)."""
    calib = EXPECTED["models"][model]["calib"]
    return str(fixture_path(calib[kind or ("npy" if "npy" in calib else "npz")]))


def _sites(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: s.get(k) for k in SITE_KEYS} for s in report["sites"]]


def _expected_sites(model: str) -> list[dict[str, Any]]:
    return [{k: s.get(k) for k in SITE_KEYS} for s in EXPECTED["models"][model]["sites"]]


def _assert_matches(model: str, fmt: str, report: dict[str, Any]) -> None:
    got, want = _sites(report), _expected_sites(model)
    assert [s["name"] for s in got] == [s["name"] for s in want], "site names or their order differ"
    for g, w in zip(got, want, strict=True):
        assert g == w, f"{model} [{fmt}] site {w['name']}"
    summary, exp = report["summary"], EXPECTED["models"][model]["summary"]
    assert (summary["sites"], summary["dead"], summary["saturated"]) == (
        exp["sites"],
        exp["dead"],
        exp["saturated"],
    )


def _cli(args: list[str]) -> Any:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result


# -- every model × every PyTorch format ---------------------------------------------------
@functools.cache
def _api_report_cached(model: str, fmt: str) -> str:
    sys.path.insert(0, str(FIXTURES))  # pickled fixtures refer to archs.<Class>
    try:
        report = actaudit.audit(_model_file(model, fmt), calib=_calib(model), **_opts(model, fmt))
    finally:
        sys.path.remove(str(FIXTURES))
    return report.to_json()


def _api_report(model: str, fmt: str) -> dict[str, Any]:
    """The API's report on the default calibration file, computed once per model and format."""
    d: dict[str, Any] = json.loads(_api_report_cached(model, fmt))
    return d


@pytest.mark.parametrize(("model", "fmt"), _matrix(API_FORMATS))
def test_api_matches_expected(model: str, fmt: str, fixtures_on_path: Path) -> None:
    d = _api_report(model, fmt)
    assert d["calibration"]["samples"] == EXPECTED["models"][model]["samples"]
    assert not d["uncovered"]
    _assert_matches(model, fmt, d)


@pytest.mark.parametrize(("model", "fmt"), _matrix(TORCH_FORMATS))
def test_cli_matches_expected(model: str, fmt: str, fixtures_on_path: Path) -> None:
    args = [
        "audit",
        _model_file(model, fmt),
        "--calib",
        _calib(model),
        "--format",
        "json",
        *_cli_flags(model, fmt),
    ]
    result = _cli(args)
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["schema"] == "actaudit.report/1"
    _assert_matches(model, fmt, d)


def test_demo_command_finds_the_catalogued_units() -> None:
    """`make demo` audits cnn_dead.ts on cnn_images.npy; the table names every dead site."""
    result = _cli(["audit", _model_file("cnn_dead", "torchscript"), "--calib", _calib("cnn_dead")])
    assert result.exit_code == 0, result.stderr
    for s in EXPECTED["models"]["cnn_dead"]["sites"]:
        assert s["name"] in result.stdout


# -- calibration sources ------------------------------------------------------------------
def _per_unit(model: str, fmt: str, **kw: Any) -> dict[str, Any]:
    d = actaudit.audit(_model_file(model, fmt), per_unit=True, **kw, **_opts(model, fmt)).to_dict()
    return {"samples": d["calibration"]["samples"], "sites": d["sites"]}


def _assert_same_stats(a: dict[str, Any], b: dict[str, Any]) -> None:
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    assert a["samples"] == b["samples"]
    assert len(a["sites"]) == len(b["sites"])
    for sa, sb in zip(a["sites"], b["sites"], strict=True):
        ua, ub = sa.pop("per_unit"), sb.pop("per_unit")
        # Sums of floats may round differently with other batch boundaries; counts, mins and maxes may not.
        assert ua.pop("neg_mean") == pytest.approx(ub.pop("neg_mean"), rel=1e-5, abs=1e-6)
        assert ua == ub, sa["name"]
        assert sa == sb


def _sources(model: str) -> list[dict[str, str]]:
    calib = EXPECTED["models"][model]["calib"]
    out = [{"calib": str(fixture_path(calib[k]))} for k in ("npy", "npz", "pt") if k in calib]
    if "loader" in calib:
        out.append({"data_loader": repo_spec(calib["loader"])})
    return out


@pytest.mark.parametrize(
    ("model", "fmt"),
    [
        ("cnn_dead", "torchscript"),  # tensors; loader of tensors
        ("mlp_kinds", "state_dict"),  # .pt of 1-tuples
        ("transformer_ffn", "torchscript_traced"),  # .pt of dicts; loader of dicts
        ("two_inputs", "torchscript"),  # .npz members bound by name (stored aux, x); .pt of (x, aux) tuples
        ("two_inputs", "pickled"),
    ],
)
def test_calibration_formats_give_identical_stats(model: str, fmt: str, fixtures_on_path: Path) -> None:
    """.npy, .npz, .pt (tensors / tuples / dicts, other batch sizes) and --data-loader agree."""
    first, *others = _sources(model)
    ref = _per_unit(model, fmt, **first)
    assert ref["samples"] == EXPECTED["models"][model]["samples"]
    for src in others:
        _assert_same_stats(_per_unit(model, fmt, **src), ref)


@pytest.mark.parametrize(
    ("model", "source"), [("cnn_dead", "npz"), ("transformer_ffn", "pt"), ("transformer_ffn", "loader")]
)
def test_export_program_takes_keyword_batches(model: str, source: str) -> None:
    calib = EXPECTED["models"][model]["calib"]
    kw = {"data_loader": repo_spec(calib[source])} if source == "loader" else {"calib": _calib(model, source)}
    _assert_matches(model, "export", actaudit.audit(_model_file(model, "export"), **kw).to_dict())


def test_cli_data_loader_matches_expected() -> None:
    loader = repo_spec(EXPECTED["models"]["cnn_dead"]["calib"]["loader"])
    result = _cli(["audit", _model_file("cnn_dead", "export"), "--data-loader", loader, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    _assert_matches("cnn_dead", "export", json.loads(result.stdout))


@pytest.mark.parametrize(
    ("fmt", "calib", "samples", "batch_size"),
    [
        ("torchscript", "npy", 100, 32),  # last batch sliced to 4
        ("export", "npy", 33, 32),  # last batch of one sample through a dynamic-batch program
        ("state_dict", "pt", 70, 32),  # .pt batches of 32 are fed as given, the third sliced to 6
        ("torchscript", "loader", 45, 32),  # loader batches of 40, the second sliced to 5
    ],
)
def test_samples_cap_equals_truncated_data(
    tmp_path: Path, fmt: str, calib: str, samples: int, batch_size: int
) -> None:
    """--samples N gives the statistics of the first N samples exactly."""
    model = "cnn_dead"
    src = EXPECTED["models"][model]["calib"][calib]
    kw: dict[str, Any] = (
        {"data_loader": repo_spec(src)} if calib == "loader" else {"calib": str(fixture_path(src))}
    )
    opts = _opts(model, fmt)
    capped = actaudit.audit(
        _model_file(model, fmt), samples=samples, batch_size=batch_size, per_unit=True, **kw, **opts
    )
    head = tmp_path / "head.npy"
    np.save(head, np.load(_calib(model))[:samples])
    full = actaudit.audit(
        _model_file(model, fmt), calib=str(head), batch_size=batch_size, per_unit=True, **opts
    )
    a, b = capped.to_dict(), full.to_dict()
    assert a["calibration"]["samples"] == samples
    _assert_same_stats(
        {"samples": samples, "sites": a["sites"]},
        {"samples": b["calibration"]["samples"], "sites": b["sites"]},
    )
    for s in a["sites"]:
        assert s["coverage"]["samples"] == samples


def test_cli_samples_cap() -> None:
    result = _cli(
        [
            "audit",
            _model_file("mlp_kinds", "pickled"),
            "--trust-pickle",
            "--calib",
            _calib("mlp_kinds", "npz"),
            "--samples",
            "50",
            "--batch-size",
            "16",
            "--format",
            "json",
        ]
    )
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["calibration"]["samples"] == 50
    assert {s["coverage"]["samples"] for s in d["sites"]} == {50}
    _assert_matches("mlp_kinds", "pickled", d)  # forced units are forced on any subset


# -- the fixtures themselves -------------------------------------------------------------
def test_catalogue_is_complete_and_consistent() -> None:
    assert EXPECTED["schema"] == "actaudit.fixtures/1"
    for name, m in EXPECTED["models"].items():
        for fmt in [*API_FORMATS, "onnx"]:
            assert fixture_path(m["files"][fmt]).is_file(), (name, fmt)
        names = [s["name"] for s in m["sites"]]
        assert len(names) == len(set(names)), name
        for s in m["sites"]:
            listed = s["dead_units"] + s["saturated_units"] + s["never_positive_units"]
            assert all(0 <= u < s["units"] for u in listed), (name, s["name"])
            assert not set(s["dead_units"]) & set(s["never_positive_units"])
        sm = m["summary"]
        assert sm["sites"] == len(m["sites"])
        assert sm["dead"] == sum(len(s["dead_units"]) for s in m["sites"])
        assert sm["saturated"] == sum(len(s["saturated_units"]) for s in m["sites"])
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < 6 * 2**20, f"fixtures take {total / 2**20:.1f} MiB"


def test_calibration_files_hold_the_same_samples() -> None:
    for name, m in EXPECTED["models"].items():
        npz = np.load(fixture_path(m["calib"]["npz"]))
        x = npz["x"]
        assert x.shape == (m["samples"], *m["input_shape"][1:])
        assert {k: [None, *npz[k].shape[1:]] for k in npz.files} == m["inputs"]
        if "npy" in m["calib"]:
            np.testing.assert_array_equal(np.load(fixture_path(m["calib"]["npy"])), x)
        batches = torch.load(fixture_path(m["calib"]["pt"]), weights_only=True)
        parts = [b["x"] if isinstance(b, dict) else b[0] if isinstance(b, tuple) else b for b in batches]
        np.testing.assert_array_equal(torch.cat(parts).numpy(), x, err_msg=name)


def test_trained_model_is_in_a_dying_regime() -> None:
    m = EXPECTED["models"]["mlp_trained"]
    t = m["training"]
    assert t["lr"] >= 0.1 and t["train_accuracy"] > 0.8  # it learned, and still lost units
    dead = sum(len(s["dead_units"]) for s in m["sites"])
    units = sum(s["units"] for s in m["sites"])
    assert 0 < dead < units


def test_onnx_exports_are_valid() -> None:
    onnx = pytest.importorskip("onnx")
    for m in EXPECTED["models"].values():
        for fmt in ("onnx", "onnx_dynamo"):
            if fmt in m["files"]:
                onnx.checker.check_model(onnx.load(str(fixture_path(m["files"][fmt]))), full_check=True)


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("_fixture_generator", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_fixture_generator"] = mod
    spec.loader.exec_module(mod)
    return mod


# Regenerating on another CPU may differ in the last bits of a weight (PyTorch promises no bitwise
# equality across CPUs; the generator keeps its own choices CPU-independent, see _cut_bias). What
# the fixtures promise is the verdict catalogue and the inputs, exactly; weights and derived
# thresholds within these tolerances.
WEIGHT_RTOL, WEIGHT_ATOL = 1e-5, 1e-6
VALUE_REL, VALUE_ABS = 1e-3, 2e-4  # for figures the catalogue rounds to 4 decimals


@pytest.fixture(scope="module")
def regenerated() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(FIXTURES))  # the generator imports fixtures/archs.py
        gen = _load_generator()
        models: dict[str, torch.nn.Module] = {}
        yield gen, gen.generate(FIXTURES, write=False, keep=models), models


def _assert_same_catalogue(fresh: Any, committed: Any, where: str) -> None:
    """Equal, except floats, which may differ by the tolerances above."""
    if isinstance(committed, dict):
        assert isinstance(fresh, dict) and set(fresh) == set(committed), where
        for k in committed:
            _assert_same_catalogue(fresh[k], committed[k], f"{where}.{k}")
    elif isinstance(committed, list):
        assert isinstance(fresh, list) and len(fresh) == len(committed), where
        for i, (a, b) in enumerate(zip(fresh, committed, strict=True)):
            _assert_same_catalogue(a, b, f"{where}[{i}]")
    elif isinstance(committed, float) and not isinstance(fresh, bool):
        assert fresh == pytest.approx(committed, rel=VALUE_REL, abs=VALUE_ABS), where
    else:
        assert fresh == committed and type(fresh) is type(committed), where


@pytest.mark.slow
def test_regeneration_gives_the_committed_catalogue(regenerated: Any) -> None:
    """Deriving the catalogue again (no files written): verdicts and inputs as committed."""
    _, again, _ = regenerated
    assert set(again["models"]) == set(EXPECTED["models"])
    for name, m in EXPECTED["models"].items():
        fresh = again["models"][name]
        for key in ("sites", "summary", "input_sha256", "input_shape", "samples"):
            _assert_same_catalogue(fresh[key], m[key], f"{name}.{key}")


@pytest.mark.slow
def test_regenerated_weights_match_the_committed_files(regenerated: Any) -> None:
    _, _, models = regenerated
    for name, m in EXPECTED["models"].items():
        committed = torch.load(fixture_path(m["files"]["state_dict"]), weights_only=True)
        fresh = models[name].state_dict()
        assert list(fresh) == list(committed), name
        for k, v in committed.items():
            torch.testing.assert_close(fresh[k], v, rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL, msg=f"{name} {k}")


@pytest.mark.slow
def test_regeneration_is_bit_exact_on_one_machine(regenerated: Any) -> None:
    """Twice on the same machine, the same bytes (across machines see the tolerances above)."""
    gen, again, _ = regenerated
    twice = gen.generate(FIXTURES, write=False)
    for name, m in again["models"].items():
        assert twice["models"][name]["weights_sha256"] == m["weights_sha256"], name


# -- error paths on fixture files ---------------------------------------------------------
def test_pickled_module_is_refused_without_trust() -> None:
    result = CliRunner().invoke(
        cli, ["audit", _model_file("cnn_dead", "pickled"), "--calib", _calib("cnn_dead")]
    )
    assert result.exit_code == 2
    assert "--trust-pickle" in result.stderr
    assert "archs.CnnDead" in result.stderr


def test_state_dict_without_arch_is_refused() -> None:
    result = CliRunner().invoke(
        cli, ["audit", _model_file("cnn_dead", "checkpoint"), "--calib", _calib("cnn_dead")]
    )
    assert result.exit_code == 2
    assert "--arch" in result.stderr


def test_state_dict_with_wrong_arch_names_the_keys() -> None:
    arch = repo_spec(EXPECTED["models"]["mlp_kinds"]["arch"])
    result = CliRunner().invoke(
        cli, ["audit", _model_file("cnn_dead", "state_dict"), "--arch", arch, "--calib", _calib("cnn_dead")]
    )
    assert result.exit_code == 2
    assert "stem.weight" in result.stderr
