"""The README's command reference must list exactly the options that --help shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actaudit.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _sections() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    parts = re.split(r"^### `actaudit (\w+)", text, flags=re.M)
    return {parts[i]: parts[i + 1].split("\n## ", 1)[0] for i in range(1, len(parts), 2)}


def test_every_command_has_a_section() -> None:
    assert set(_sections()) == set(cli.commands)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_options_match_help(name: str) -> None:
    section = _sections()[name]
    documented = set(re.findall(r"`[^`]*?(--[a-z][a-z0-9-]*)", section))
    documented |= {
        m for chunk in re.findall(r"`([^`]+)`", section) for m in re.findall(r"(--[a-z][a-z0-9-]*)", chunk)
    }
    opts = {o for p in cli.commands[name].params for o in p.opts + p.secondary_opts if o.startswith("--")}
    opts.discard("--help")
    assert sorted(opts - documented) == [], f"options of `actaudit {name}` missing from the README"
    assert sorted(documented - opts) == [], f"README documents options `actaudit {name}` does not have"


def test_readme_names_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
