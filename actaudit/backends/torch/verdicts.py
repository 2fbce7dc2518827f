"""The TorchScript static check's passing verdicts, remembered by the archive's SHA-256 digest.

:func:`.trust.check_torchscript` parses every code file of an archive, about half of
``torch.jit.load``'s time; its verdict depends only on the archive's bytes, the checker's
own code and torch (whose operator list is the allowlist). A passing verdict is recorded as
an empty file named by the digest of the exact bytes checked, in a folder named by a digest
of the checker (``trust.py``, ``archive.py``, this file) and torch's version: a new checker
or torch never reads an old verdict. Only passes are recorded; a refusal is checked again
each time and says why.

The entry's presence is the whole verdict, so the cache is trusted exactly like the compiled
kernel's (:mod:`.native`): folders created 0700 whatever the umask, and an entry counts only
when the cache folder, the checker's folder and the entry belong to this user, are a folder,
a folder and a regular file (checked with ``lstat``: links are never followed) and are not
writable by group or others. Anything else reads as "not checked": the check runs.
``ACTAUDIT_TRUST_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from . import native

__all__ = ["cache_folder", "check_cached", "disabled", "passed", "record"]

_DIGEST = re.compile(r"[0-9a-f]{64}")


def disabled() -> bool:
    return os.environ.get("ACTAUDIT_TRUST_CACHE", "1").strip().lower() in ("0", "off", "no", "false")


@functools.lru_cache(maxsize=1)
def checker_digest() -> str:
    """What the verdict depends on besides the archive: the checker's source and torch's version."""
    import torch

    from . import archive, trust

    h = hashlib.sha256()
    for module in (trust, archive, sys.modules[__name__]):
        h.update(Path(str(module.__file__)).read_bytes())
        h.update(b"\0")
    h.update(f"torch {torch.__version__}\0python {sys.version_info[:2]}".encode())
    return h.hexdigest()


def cache_folder() -> Path:
    """Beside the kernel's cache (``$ACTAUDIT_CACHE_DIR`` or ``~/.cache/actaudit/native``)."""
    return native.cache_dir() / "torchscript-passed" / checker_digest()[:32]


def _folder_trusted(folder: Path) -> bool:
    return (
        native._unsafe(folder.parent, want_dir=True) is None and native._unsafe(folder, want_dir=True) is None
    )


def passed(digest: str) -> bool:
    """Did an archive with this SHA-256 digest pass this checker before (an entry under trusted folders)?"""
    if disabled() or not _DIGEST.fullmatch(digest):
        return False
    folder = cache_folder()
    if not _folder_trusted(folder):
        return False
    return native._unsafe(folder / digest, want_dir=False) is None


def record(digest: str) -> None:
    """Remember that the archive with ``digest`` passed; silently skipped when the cache cannot be trusted."""
    if disabled() or not _DIGEST.fullmatch(digest):
        return
    folder = cache_folder()
    try:
        if native._make_private_folder(folder) is not None or not _folder_trusted(folder):
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        os.close(os.open(folder / digest, flags, 0o600))
    except OSError:
        return  # already there, or the cache is not writable: the check simply runs next time


def check_cached(data: bytes, path: Path, check: Callable[[bytes, Path], None]) -> None:
    """``check`` (:func:`.trust.check_torchscript`) on ``data`` unless these exact bytes passed it before."""
    digest = hashlib.sha256(data).hexdigest()
    if passed(digest):
        return
    check(data, path)
    record(digest)
