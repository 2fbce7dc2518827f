"""Shared pytest fixtures: where the generated fixture models live."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Tests never read or write the user's cache of TorchScript check verdicts: every archive is checked
# (tests/trust/test_verdict_cache.py turns the cache on in a folder of its own).
os.environ["ACTAUDIT_TRUST_CACHE"] = "0"


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


@pytest.fixture(scope="session")
def screenshot() -> Callable[..., None]:
    """``screenshot(html, png, size=(w, h))`` in headless Chromium, as ``make docs`` takes it.

    Without a browser the test skips, except under ``CI=true``: .ci/run installs Debian's
    chromium, so there a missing browser is a failure.
    """
    spec = importlib.util.spec_from_file_location("_make_docs", FIXTURES.parent / "docs" / "make_docs.py")
    assert spec is not None and spec.loader is not None
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    browser = docs.chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but no chromium on PATH (.ci/run installs it: apt-get install chromium)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")

    def take(html: Path, png: Path, size: tuple[int, int] = (1000, 900)) -> None:
        docs.screenshot(html, png, browser, size)

    return take
