"""``audit --shard K/N`` + ``merge`` write the report of one run; merge refuses shards that do not belong together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from actaudit.cli import cli
from actaudit.report import schema
from tests import scaleout_models as som

FIX = Path(__file__).resolve().parents[2] / "fixtures"
CNN_DATA = FIX / "data" / "cnn_images.npy"


def _run(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _json(path: Path) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(path.read_text())
    d.pop("run")
    return d


@pytest.fixture(scope="module")
def onehot(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onehot")
    x = som.calib()
    np.save(d / "x.npy", x)
    np.savez(d / "x.npz", x=x)
    torch.save([torch.from_numpy(x[i : i + 8]) for i in range(0, len(x), 8)], d / "x.pt")
    (d / "loader.py").write_text(
        "import numpy as np\n"
        f"def load():\n    x = np.load({str(d / 'x.npy')!r})\n    return [x[i : i + 5] for i in range(0, len(x), 5)]\n"
    )
    return {
        "onnx": som.write_onnx(d / "m.onnx"),
        "ts": som.write_torchscript(d / "m.ts"),
        "npy": d / "x.npy",
        "npz": d / "x.npz",
        "pt": d / "x.pt",
        "loader": d / "loader.py",
    }


def _shards(tmp: Path, model: Path, n: int, *args: Any) -> list[Path]:
    out = []
    for k in range(1, n + 1):
        p = tmp / f"shard{k}.json"
        r = _run("audit", model, *args, "--shard", f"{k}/{n}", "--format", "json", "-o", p, "-q")
        assert r.exit_code == 0, r.output
        out.append(p)
    return out


def _one(tmp: Path, model: Path, *args: Any) -> dict[str, Any]:
    p = tmp / "one.json"
    r = _run("audit", model, *args, "--format", "json", "-o", p, "--force", "-q")
    assert r.exit_code == 0, r.output
    return _json(p)


def _merged(tmp: Path, shards: list[Path], *args: Any) -> tuple[int, dict[str, Any]]:
    p = tmp / "merged.json"
    r = _run("merge", *shards, *args, "--format", "json", "-o", p, "--force", "-q")
    return r.exit_code, _json(p)


@pytest.mark.parametrize("model", ["cnn_dead.onnx", "cnn_dead.ts"])
def test_shards_merge_to_the_single_run(tmp_path: Path, model: str) -> None:
    m = FIX / "models" / model
    args = ("--calib", CNN_DATA, "--batch-size", "16", "--per-unit")
    one = _one(tmp_path, m, *args)
    shards = _shards(tmp_path, m, 3, *args)
    for s in shards:
        schema.validate(json.loads(s.read_text()))
    code, merged = _merged(tmp_path, shards)
    assert code == 0
    # the fixture has dead units: the comparison is not between two empty lists
    assert one["summary"]["dead"] > 0 and one["summary"]["saturated"] > 0
    for key in ("model", "calibration", "inputs", "settings", "summary", "uncovered", "warnings", "gates"):
        assert merged[key] == one[key], key
    assert len(merged["sites"]) == len(one["sites"])
    for a, b in zip(merged["sites"], one["sites"], strict=True):
        rates = ("fire_rate", "per_unit")
        assert {k: v for k, v in a.items() if k not in rates} == {
            k: v for k, v in b.items() if k not in rates
        }
        np.testing.assert_allclose(a["per_unit"]["neg_mean"], b["per_unit"]["neg_mean"], rtol=1e-5)
        np.testing.assert_allclose(a["per_unit"]["fire_rate"], b["per_unit"]["fire_rate"], rtol=1e-6)
    # the shards split the samples: 128 images in batches of 16 are 8 batches, 3 + 3 + 2
    assert [json.loads(s.read_text())["calibration"]["samples"] for s in shards] == [48, 48, 32]
    assert "counters" not in merged


@pytest.mark.parametrize(
    ("fmt", "key"), [("onnx", "npz"), ("onnx", "pt"), ("onnx", "loader"), ("ts", "npy"), ("ts", "loader")]
)
def test_every_sample_is_in_exactly_one_shard(
    tmp_path: Path, onehot: dict[str, Path], fmt: str, key: str
) -> None:
    """Unit j of the first site fires on sample j only: its fire count is how often sample j ran."""
    flag = "--data-loader" if key == "loader" else "--calib"
    data = f"{onehot[key]}:load" if key == "loader" else onehot[key]
    args = (flag, data, "--batch-size", "8", "--per-unit")
    shards = _shards(tmp_path, onehot[fmt], 2, *args)
    runs = np.zeros(som.SAMPLES)
    for s in shards:
        site = json.loads(s.read_text())["sites"][0]
        n = site["coverage"]["elements_per_unit"]  # one element per sample and unit
        runs += np.rint(np.asarray(site["per_unit"]["fire_rate"]) * n)
    assert runs.tolist() == [1.0] * som.SAMPLES
    code, merged = _merged(tmp_path, shards)
    assert code == 0
    one = _one(tmp_path, onehot[fmt], *args)
    assert merged["sites"] == one["sites"]
    assert merged["summary"]["dead"] == len(som.DEAD)
    assert merged["sites"][2]["dead_units"] == list(som.DEAD)


def test_synthetic_inputs_and_sample_cap_shard_alike(tmp_path: Path, onehot: dict[str, Path]) -> None:
    args = ("--input-shape", f"1x{som.SAMPLES}", "--samples", "50", "--batch-size", "7", "--seed", "3")
    one = _one(tmp_path, onehot["onnx"], *args)
    code, merged = _merged(tmp_path, _shards(tmp_path, onehot["onnx"], 4, *args))
    assert code == 0
    assert merged["calibration"] == one["calibration"] and merged["calibration"]["samples"] == 50
    assert merged["summary"] == one["summary"] and merged["warnings"] == one["warnings"]


def test_gates_are_evaluated_on_the_merged_report(tmp_path: Path, onehot: dict[str, Path]) -> None:
    args = ("--calib", onehot["npy"], "--batch-size", "8", "--fail-on", "dead>1")
    shards = _shards(tmp_path, onehot["onnx"], 2, *args)  # a shard exits 0: it decides nothing
    assert json.loads(shards[0].read_text())["gates"] == []
    code, merged = _merged(tmp_path, shards)
    assert code == 1 and merged["passed"] is False and merged["gates"][0]["value"] == 2.0
    code, merged = _merged(tmp_path, shards, "--fail-on", "dead>2")
    assert code == 0 and merged["passed"] is True


def _refusal(tmp: Path, *reports: Path) -> str:
    r = _run("merge", *reports)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    return str(r.stderr)


def test_merge_refuses_shards_that_do_not_belong_together(tmp_path: Path, onehot: dict[str, Path]) -> None:
    base = ("--calib", onehot["npy"], "--batch-size", "8")

    def shards(name: str, model: Path, n: int, *args: Any) -> list[Path]:
        (tmp_path / name).mkdir()
        return _shards(tmp_path / name, model, n, *args)

    a1, a2 = shards("a", onehot["onnx"], 2, *base)
    b2 = shards("b", onehot["onnx"], 2, *base, "--dead-rate", "0.05")[1]
    c2 = shards("c", onehot["ts"], 2, *base)[1]
    d1, d2, _ = shards("d", onehot["onnx"], 3, *base)
    e2 = shards("e", onehot["onnx"], 2, "--calib", onehot["npy"], "--batch-size", "4")[1]
    f2 = shards("f", onehot["onnx"], 2, *base, "--unit-axis", "act1=0")[1]

    assert "settings" in _refusal(tmp_path, a1, b2)
    assert "model (sha256)" in _refusal(tmp_path, a1, c2)
    assert "given twice" in _refusal(tmp_path, a1, a1, a2)
    assert "2/2 missing" in _refusal(tmp_path, a1)
    assert "number of shards" in _refusal(tmp_path, a1, d2)
    assert "3/3 missing" in _refusal(tmp_path, d1, d2)
    assert "calibration data" in _refusal(tmp_path, a1, e2)
    assert "options" in _refusal(tmp_path, a1, f2)
    plain = tmp_path / "plain.json"
    assert _run("audit", onehot["onnx"], *base, "--format", "json", "-o", plain).exit_code == 0
    assert "carries no counters" in _refusal(tmp_path, plain, a2)
    assert "not JSON" in _refusal(tmp_path, onehot["npy"], a2)


def test_shard_option_errors(tmp_path: Path, onehot: dict[str, Path]) -> None:
    base = (onehot["onnx"], "--calib", onehot["npy"], "--batch-size", "8")
    for bad in ("0/2", "3/2", "1-2", "x/y"):
        r = _run("audit", *base, "--shard", bad, "--format", "json")
        assert r.exit_code == 2 and "--shard" in r.stderr
    r = _run("audit", *base, "--shard", "1/2")
    assert r.exit_code == 2 and "--format json" in r.stderr
    r = _run("audit", *base, "--shard", "7/7", "--format", "json")  # 6 batches
    assert r.exit_code == 2 and "fewer batches than shards" in r.stderr


def test_merge_needs_neither_torch_nor_onnx(tmp_path: Path, onehot: dict[str, Path]) -> None:
    """A merge job on a machine without the model's framework: it reads only the counters."""
    import subprocess
    import sys

    shards = _shards(tmp_path, onehot["ts"], 2, "--calib", onehot["npy"], "--batch-size", "8")
    code = (
        "import sys\nfrom actaudit.cli import main\n"
        "try:\n    main(['merge', *sys.argv[1:], '--format', 'json', '-q'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules), file=sys.stderr)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, *map(str, shards)], capture_output=True, text=True, check=True
    )
    assert json.loads(r.stdout)["summary"]["dead"] == len(som.DEAD)
    assert r.stderr.strip() == "[]"
