"""Shared pytest fixtures: where the generated fixture models live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``fixtures/``: models/, data/ and expected.json from fixtures/make_fixtures.py."""
    return FIXTURES


@pytest.fixture(scope="session")
def expected_fixtures() -> dict[str, Any]:
    """The generator's catalogue of expected verdicts (fixtures/expected.json)."""
    data: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text())
    return data


@pytest.fixture
def fixtures_on_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put ``fixtures/`` on sys.path: pickled fixture modules refer to ``archs.<Class>``."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    return FIXTURES
