"""--config on every command: one file serves them all, and it can never give consent to run code."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from actaudit.cli import cli
from actaudit.cli.config import default_map, load_config

COMMANDS = ["audit", "inspect", "rewrite", "prune", "merge"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_config(name: str) -> None:
    assert any(p.name == "config" for p in cli.commands[name].params)


@pytest.mark.parametrize("name", ["rewrite", "prune"])
@pytest.mark.parametrize("key", ["trust-pickle", "trust-code", "arch", "data-loader"])
def test_rewrite_and_prune_refuse_consent_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, key: str
) -> None:
    value = "true" if key.startswith("trust") else '"evil.py:build"'
    f = _write(tmp_path / "actaudit.toml", f"{key} = {value}\n")
    monkeypatch.chdir(tmp_path)
    # the file is read before anything else: the model need not exist
    r = CliRunner().invoke(cli, [name, "missing.onnx", "-o", "out.onnx"])
    assert r.exit_code == 2
    assert f"key '{key}' cannot be set in a config file" in r.stderr and str(f) in r.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_one_file_serves_every_command(tmp_path: Path) -> None:
    _write(
        tmp_path / "actaudit.toml",
        'format = "json"\nfail-on = ["dead>0"]\nmax-drift = 0.5\nalpha-range = "0.01,0.2"\nbatch-size = 8\n',
    )
    cfg = load_config(tmp_path)  # rewrite's and prune's keys are known, audit's too
    assert default_map(cfg, cli.commands["audit"]) == {"fmt": "json", "fail_on": ["dead>0"], "batch_size": 8}
    assert default_map(cfg, cli.commands["prune"]) == {"fmt": "json", "max_drift": 0.5, "batch_size": 8}
    assert default_map(cfg, cli.commands["rewrite"]) == {
        "fmt": "json",
        "max_drift": 0.5,
        "alpha_range": (0.01, 0.2),
        "batch_size": 8,
    }
    assert default_map(cfg, cli.commands["merge"]) == {"fmt": "json", "fail_on": ["dead>0"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "max-drift = 0\n",
            "key 'max-drift': 0.0 is not in the range x>0",
        ),  # rewrite's and prune's own check
        ('alpha-range = "0.5,0.1"\n', "key 'alpha-range'"),
        ('report = "r.json"\n', "key 'report' is not an option"),  # where this run writes: not policy
        ("sites = 3\n", "key 'sites' must be a string"),
    ],
)
def test_command_keys_are_checked_against_their_own_options(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path / "actaudit.toml", text)
    from actaudit.errors import InputError

    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert message in info.value.one_line()


def test_an_unknown_key_names_every_command(tmp_path: Path) -> None:
    from actaudit.errors import InputError

    _write(tmp_path / "actaudit.toml", "colour = true\n")
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert (
        "is not an option of actaudit audit, inspect, rewrite, prune, merge or history"
        in info.value.one_line()
    )


def test_prune_reads_the_found_file_and_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import shutil

    fix = Path(__file__).resolve().parents[2] / "fixtures"
    shutil.copy(fix / "models" / "cnn_dead.onnx", tmp_path / "m.onnx")
    shutil.copy(fix / "data" / "cnn_images.npy", tmp_path / "x.npy")
    f = _write(tmp_path / "actaudit.toml", 'format = "json"\ncalib = "x.npy"\nsamples = 8\n')
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["prune", "m.onnx", "-o", "small.onnx"])
    assert r.exit_code in (0, 1), r.stderr  # 1: the drift gate; the file's options still applied
    assert f"actaudit: using config file {f}" in r.stderr
    d = json.loads(r.stdout)  # --format json came from the file
    assert d["schema"] == "actaudit.prune/1" and d["calibration"]["samples"] == 8
    assert d["run"]["config_file"] == str(f)
    r = CliRunner().invoke(
        cli, ["prune", "m.onnx", "-o", "small2.onnx", "--config", "", "--calib", "x.npy", "-q"]
    )
    assert not r.stdout.startswith("{")  # --config '' reads nothing: the table again
