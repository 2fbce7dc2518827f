"""The compiled kernel's cache: a planted library is never dlopened, a FIFO never blocks, folders are 0700.

``dlopen`` runs a library's constructors, so each planted ``.so`` here has a constructor
that writes a marker file: the marker's absence proves it was never loaded.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from actaudit.backends.torch import native

ROOT = Path(__file__).resolve().parents[2]
FAST = (("-O1",),)  # the kernel compiled without the slow flag sets: these tests are about files
CC = native._compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")

_EVIL = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("%s", "w");
    if (f) fclose(f);
}
int actaudit_unit_stats(void) { return 0; }
"""


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("ACTAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ACTAUDIT_NATIVE", raising=False)
    monkeypatch.setattr(native, "_FLAG_SETS", FAST)
    monkeypatch.setattr(native, "_built", {})
    native.reset()
    yield tmp_path / "cache"
    native.reset()


def _evil_library(tmp: Path, marker: Path) -> bytes:
    src = tmp / "evil.c"
    src.write_text(_EVIL % marker)
    out = tmp / "evil.so"
    subprocess.run([str(CC), "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
    return out.read_bytes()


def _plant(cache: Path, lib: bytes, digest: str | None = None, folder_mode: int = 0o700) -> Path:
    """The planted library under the cache's name for this source and compiler, with a digest file."""
    target = native.library_path(str(CC))
    assert target.parent == cache
    cache.mkdir(parents=True, exist_ok=True)
    target.write_bytes(lib)
    os.chmod(target, 0o700)
    side = target.with_suffix(".sha256")
    side.write_text((digest or hashlib.sha256(lib).hexdigest()) + "\n")
    os.chmod(side, 0o600)
    os.chmod(cache, folder_mode)
    return target


def _loads_the_real_kernel(marker: Path) -> str:
    fn = native.kernel()
    assert not marker.exists(), "the planted library's constructor ran"
    assert fn is not None, native.status()  # rebuilt, and its self-check passed
    return native.status()


@needs_cc
def test_library_in_a_group_writable_folder_is_never_loaded(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    marker = tmp_path / "marker"
    target = _plant(cache, _evil_library(tmp_path, marker), folder_mode=0o777)
    status = _loads_the_real_kernel(marker)
    assert "privately" in status and "writable by group or others" in status
    assert not list((tmp_path / "tmp").iterdir())  # the private build is gone once loaded
    assert target.read_bytes() == _evil_library(tmp_path, tmp_path / "marker")  # nothing published there


@needs_cc
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_library_owned_by_another_user_is_never_loaded(tmp_path: Path, cache: Path) -> None:
    marker = tmp_path / "marker"
    target = _plant(cache, _evil_library(tmp_path, marker))
    os.chown(target, 12345, 12345)
    os.chown(target.with_suffix(".sha256"), 12345, 12345)
    status = _loads_the_real_kernel(marker)
    assert status.startswith("native kernel (built")
    assert os.lstat(target).st_uid == os.geteuid()  # replaced by this user's own build


@needs_cc
@pytest.mark.parametrize("digest", ["0" * 64, None], ids=["wrong-digest", "no-digest-file"])
def test_library_whose_digest_does_not_match_is_never_loaded(
    tmp_path: Path, cache: Path, digest: str | None
) -> None:
    marker = tmp_path / "marker"
    target = _plant(cache, _evil_library(tmp_path, marker), digest=digest or "x")
    if digest is None:
        target.with_suffix(".sha256").unlink()
    status = _loads_the_real_kernel(marker)
    assert status.startswith("native kernel (built")
    assert (
        hashlib.sha256(target.read_bytes()).hexdigest() == target.with_suffix(".sha256").read_text().strip()
    )


def _in_a_fresh_process(code: str, cache: Path, umask: int | None = None) -> str:
    prelude = (
        "import os, sys\n"
        + (f"os.umask({umask})\n" if umask is not None else "")
        + "from actaudit.backends.torch import native\n"
        + f"native._FLAG_SETS = {FAST!r}\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), ACTAUDIT_CACHE_DIR=str(cache))
    env.pop("ACTAUDIT_NATIVE", None)
    r = subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


@needs_cc
@pytest.mark.parametrize("what", ["library", "digest"])
def test_a_fifo_under_the_cache_name_does_not_block(tmp_path: Path, what: str) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    probe = "print(native.library_path(native._compiler()))\n"
    target = Path(_in_a_fresh_process(probe, cache).strip())
    os.mkfifo(target if what == "library" else target.with_suffix(".sha256"))
    out = _in_a_fresh_process("print(native.status())\n", cache)  # a blocking open would time out
    assert out.startswith("native kernel (built"), out
    assert stat.S_ISREG(os.lstat(target).st_mode)


@needs_cc
def test_cache_folders_are_private_under_umask_000(tmp_path: Path) -> None:
    cache = tmp_path / "a" / "b" / "cache"
    out = _in_a_fresh_process("print(native.build()[1])\n", cache, umask=0)
    assert out.startswith("built"), out
    for d in (tmp_path / "a", tmp_path / "a" / "b", cache):
        assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700, d
    for f in cache.iterdir():
        assert stat.S_ISREG(os.lstat(f).st_mode) and not os.lstat(f).st_mode & 0o077, f


@needs_cc
def test_the_planted_library_is_live(tmp_path: Path) -> None:
    """dlopen alone runs its constructor: the tests above would see the marker had it been loaded."""
    import ctypes

    marker = tmp_path / "marker"
    lib = tmp_path / "planted.so"
    lib.write_bytes(_evil_library(tmp_path, marker))
    ctypes.CDLL(str(lib))
    assert marker.exists()
