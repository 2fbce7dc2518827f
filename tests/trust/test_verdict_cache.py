"""The cache of TorchScript check verdicts: a pass is remembered for the exact bytes, nothing else gets in.

An entry (an empty file named by the archive's SHA-256 digest) under trusted folders means
"these bytes passed this checker". Every hostile case below plants something in the cache
and loads an archive whose ``__setstate__`` writes a marker file: it must be refused by the
check and the marker must never appear.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import hostile_models as hm
import pytest

from actaudit.backends.torch import load as load_mod
from actaudit.backends.torch import verdicts
from actaudit.errors import UntrustedCodeError


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("ACTAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ACTAUDIT_TRUST_CACHE", "1")
    yield tmp_path / "cache"


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths the static check ran on (the real check runs)."""
    real, seen = load_mod.check_torchscript, []

    def spy(data: bytes, path: Path) -> None:
        seen.append(path)
        real(data, path)

    monkeypatch.setattr(load_mod, "check_torchscript", spy)
    return seen


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _refused(model: Path, marker: Path) -> None:
    with pytest.raises(UntrustedCodeError, match="refusing to load TorchScript archive"):
        load_mod.load_torch(model)
    assert not marker.exists()


def test_a_pass_is_remembered_for_these_bytes_only(tmp_path: Path, cache: Path, checks: list[Path]) -> None:
    plain = hm.ts_plain(tmp_path)
    load_mod.load_torch(plain)
    entry = verdicts.cache_folder() / _sha(plain)
    assert entry.parent.parent.parent == cache
    st = os.lstat(entry)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0 and stat.S_IMODE(st.st_mode) == 0o600
    for folder in (entry.parent, entry.parent.parent, cache):
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700, folder
    load_mod.load_torch(plain)
    assert checks == [plain]  # the second load found the verdict
    other = tmp_path / "other.ts"
    other.write_bytes(
        plain.read_bytes()[:-1] + bytes([plain.read_bytes()[-1] ^ 1])
    )  # one bit: another digest
    with contextlib.suppress(Exception):  # the flipped bit may or may not damage the archive
        load_mod.load_torch(other)
    assert checks == [plain, other]


def test_a_refusal_is_never_recorded(tmp_path: Path, cache: Path, checks: list[Path]) -> None:
    marker = tmp_path / "marker"
    model = hm.ts_setstate(tmp_path, marker)
    _refused(model, marker)
    _refused(model, marker)
    assert checks == [model, model]
    assert not (verdicts.cache_folder() / _sha(model)).exists()


def _plant(folder: Path, digest: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / digest).touch(mode=0o600)
    return folder / digest


@pytest.mark.parametrize("where", ["checker folder", "cache folder"])
def test_an_entry_in_a_folder_others_can_write_is_ignored(tmp_path: Path, cache: Path, where: str) -> None:
    marker = tmp_path / "marker"
    model = hm.ts_setstate(tmp_path, marker)
    entry = _plant(verdicts.cache_folder(), _sha(model))
    os.chmod(entry.parent if where == "checker folder" else entry.parent.parent, 0o777)
    assert not verdicts.passed(_sha(model))
    _refused(model, marker)


def test_an_entry_writable_by_others_or_a_link_is_ignored(tmp_path: Path, cache: Path) -> None:
    marker = tmp_path / "marker"
    model = hm.ts_setstate(tmp_path, marker)
    entry = _plant(verdicts.cache_folder(), _sha(model))
    os.chmod(entry, 0o666)
    _refused(model, marker)
    entry.unlink()
    target = tmp_path / "target"
    target.touch(mode=0o600)
    entry.symlink_to(target)
    assert not verdicts.passed(_sha(model))
    _refused(model, marker)


def test_an_entry_for_another_digest_or_another_checker_has_no_effect(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    model = hm.ts_setstate(tmp_path, marker)
    plain = hm.ts_plain(tmp_path)
    _plant(verdicts.cache_folder(), _sha(plain))  # a real pass, of other bytes
    _refused(model, marker)
    # a verdict of another checker version for these very bytes
    _plant(cache / "torchscript-passed" / ("0" * 32), _sha(model))
    _refused(model, marker)
    for name in ("../" + _sha(model), _sha(model).upper(), ""):
        assert not verdicts.passed(name)


def test_the_checker_digest_covers_its_sources_and_torch() -> None:
    import torch

    from actaudit.backends.torch import archive, trust

    h = hashlib.sha256()
    for m in (trust, archive, verdicts):
        h.update(Path(str(m.__file__)).read_bytes() + b"\0")
    assert verdicts.checker_digest() != h.hexdigest()  # torch's version is part of it too
    h.update(f"torch {torch.__version__}\0python {__import__('sys').version_info[:2]}".encode())
    assert verdicts.checker_digest() == h.hexdigest()
