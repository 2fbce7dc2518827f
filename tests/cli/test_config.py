"""Configuration files: discovery, strict checking with the file and key named, and flag precedence."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from actaudit.cli import cli
from actaudit.cli.config import SOURCE_KEY, config_option, default_map, find_config, load_config
from actaudit.errors import InputError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _values(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k != SOURCE_KEY}


def test_no_file_means_no_config(tmp_path: Path) -> None:
    # pytest's tmp_path lies outside any project, so the upward search finds nothing
    assert find_config(tmp_path) is None
    assert load_config(tmp_path) == {}


def test_pyproject_table_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    py = _write(
        tmp_path / "pyproject.toml",
        """
        [project]
        name = "x"

        [tool.actaudit]
        fail-on = ["dead-fraction>0.2", "encoder.*:saturated-fraction>0.1"]
        batch_size = 64
        dead-rate = 0          # an integer is a fine number
        saturation-rate = 0.95
        unit-axis = ["encoder.*=-1"]
        per-unit = true
        format = "json"
        """,
    )
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_config(deep) == py
    cfg = load_config(deep)
    assert cfg[SOURCE_KEY] == str(py)
    assert _values(cfg) == {
        "fail_on": ["dead-fraction>0.2", "encoder.*:saturated-fraction>0.1"],
        "batch_size": 64,
        "dead_rate": 0,
        "saturation_rate": 0.95,
        "unit_axis": ["encoder.*=-1"],
        "per_unit": True,
        "format": "json",
    }


def test_actaudit_toml_wins_and_the_nearest_file_wins(tmp_path: Path) -> None:
    _write(tmp_path / "pyproject.toml", "[tool.actaudit]\nbatch-size = 8\n")
    own = _write(tmp_path / "actaudit.toml", "batch-size = 16\n")
    assert load_config(tmp_path)["batch_size"] == 16
    nearer = _write(tmp_path / "sub" / "pyproject.toml", "[tool.actaudit]\nbatch-size = 4\n")
    assert find_config(tmp_path / "sub") == nearer
    assert find_config(tmp_path) == own


def test_a_pyproject_without_the_table_is_passed_over(tmp_path: Path) -> None:
    _write(tmp_path / "actaudit.toml", "seed = 7\n")
    _write(tmp_path / "sub" / "pyproject.toml", "[tool.ruff]\nline-length = 100\n")
    assert load_config(tmp_path / "sub")["seed"] == 7


def test_explicit_path_wins_over_the_search(tmp_path: Path) -> None:
    _write(tmp_path / "actaudit.toml", "seed = 1\n")
    other = _write(tmp_path / "ci" / "strict.toml", 'fail-on = "dead>0"\n')
    cfg = load_config(tmp_path, other)
    assert _values(cfg) == {"fail_on": ["dead>0"]}  # a single string for a repeatable option is a list of one


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    cfg_file = _write(
        tmp_path / "proj" / "actaudit.toml",
        """
        calib = "data/calib.npy"
        against = "base.json"
        """,
    )
    cfg = load_config(tmp_path, cfg_file)
    base = cfg_file.parent
    assert cfg["calib"] == str(base / "data" / "calib.npy")
    assert cfg["against"] == str(base / "base.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch-size = 64\nbatchsize = 3\n", "key 'batchsize' is not an option of actaudit audit"),
        ('batch-size = "64"\n', "key 'batch-size' must be an integer, got str '64'"),
        ("batch-size = 0\n", "key 'batch-size': 0 is not in the range x>=1"),
        ("batch-size = true\n", "key 'batch-size' must be an integer, got bool"),
        ("dead-rate = 1.5\n", "key 'dead-rate': 1.5 is not in the range 0<=x<=1"),
        ('dead-rate = "0.1"\n', "key 'dead-rate' must be a number"),
        ("fail-on = [1, 2]\n", "key 'fail-on' must be a list of strings"),
        ('format = "xml"\n', "key 'format': 'xml' is not one of"),
        ('per-unit = "yes"\n', "key 'per-unit' must be true or false"),
        ("output = 'r.json'\n", "key 'output' is not an option"),  # a per-run option, not policy
        ("trust-pickle = true\n", "key 'trust-pickle' cannot be set in a config file (pass --trust-pickle"),
        ("trust-code = true\n", "key 'trust-code' cannot be set in a config file (pass --trust-code"),
        # options that import and run code are consent too
        ('arch = "evil.py:build"\n', "key 'arch' cannot be set in a config file (pass --arch"),
        ('data-loader = "evil.py:batches"\n', "key 'data-loader' cannot be set in a config file"),
        ('data_loader = "evil.py:batches"\n', "key 'data_loader' cannot be set in a config file"),
        ("seed = 1\nseed_ = 2\n", "is not an option"),
        ("batch-size = 8\nbatch_size = 8\n", "is given twice"),
        ("batch-size = \n", "is not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    f = _write(tmp_path / "actaudit.toml", text)
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert message in info.value.one_line()
    assert str(f) in info.value.one_line()


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    _write(tmp_path / "actaudit.toml", "fail_on_dead = true\n")
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert info.value.hint is not None and "fail-on" in info.value.hint and "batch-size" in info.value.hint


def test_missing_explicit_file_and_missing_table(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path, tmp_path / "nope.toml")
    py = _write(tmp_path / "pyproject.toml", "[project]\nname = 'x'\n")
    with pytest.raises(InputError, match=r"has no \[tool.actaudit\] table"):
        load_config(tmp_path, py)


def test_default_map_uses_parameter_names_and_drops_foreign_keys(tmp_path: Path) -> None:
    _write(
        tmp_path / "actaudit.toml",
        'format = "json"\nfail-on = ["dead>0"]\nbatch-size = 4\nunit-axis = ["x=1"]\n',
    )
    cfg = load_config(tmp_path)
    assert default_map(cfg, cli.commands["audit"]) == {
        "fmt": "json",
        "fail_on": ["dead>0"],
        "batch_size": 4,
        "unit_axis": ["x=1"],
    }
    # inspect shares --format and --unit-axis, not the gates or the batch size
    assert default_map(cfg, cli.commands["inspect"]) == {"fmt": "json", "unit_axis": ["x=1"]}


# A stand-in command with the same decorator the real one gets; it echoes what it received.
@click.command()
@config_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32)
@click.option("--fail-on", multiple=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def _probe(batch_size: int, fail_on: tuple[str, ...], fmt: str) -> None:
    click.echo(f"{batch_size} {list(fail_on)} {fmt}")


def test_config_option_supplies_defaults_and_flags_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "actaudit.toml", 'batch-size = 64\nfail-on = ["dead>0"]\nformat = "json"\n')
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    runner = CliRunner()
    assert runner.invoke(_probe, []).stdout == "64 ['dead>0'] json\n"
    # flags override, and a repeated option given on the command line replaces the file's list
    r = runner.invoke(_probe, ["--batch-size", "8", "--fail-on", "dead>3", "--format", "table"])
    assert r.stdout == "8 ['dead>3'] table\n"
    # --config '' reads nothing
    assert runner.invoke(_probe, ["--config", ""]).stdout == "32 [] table\n"
    other = _write(tmp_path / "strict.toml", "batch-size = 2\n")
    assert runner.invoke(_probe, ["--config", str(other)]).stdout == "2 [] table\n"


def test_config_option_reports_a_bad_file_as_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _write(tmp_path / "actaudit.toml", "batch-size = -1\n")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(_probe, [])
    assert r.exit_code == 2
    assert str(bad) in r.stderr and "batch-size" in r.stderr and "--config" in r.stderr


@pytest.mark.skipif(
    not any(p.name == "config" for p in cli.commands["audit"].params),
    reason="cli.py does not wire config_option into `audit` yet",
)
def test_audit_command_reads_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    with torch.no_grad():
        m[0].bias[:] = -100.0
    ep = torch.export.export(m, (torch.randn(2, 3),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    _write(tmp_path / "actaudit.toml", 'fail-on = ["dead>0"]\nformat = "csv"\nsamples = 4\n')
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli, ["audit", "m.pt2", "-q"])
    assert r.exit_code == 1, r.stderr  # the file's gate trips
    assert r.stdout.startswith("index,name,")
    r = runner.invoke(cli, ["audit", "m.pt2", "-q", "--fail-on", "dead>4"])
    assert r.exit_code == 0, r.stderr
