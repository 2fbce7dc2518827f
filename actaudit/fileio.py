"""Atomic writes and file hashing. An output either appears whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .errors import InputError


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike[str]) -> str:
    """Hash of a file, or of a directory's files in sorted order (for directory checkpoints)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On any exception (Ctrl-C included) the temporary file is removed and ``target`` is
    left as it was.
    """
    target = Path(target)
    if target.exists() and not force:
        raise InputError(f"output {target} already exists", hint="pass --force to overwrite it")
    if target.is_dir():
        raise InputError(f"output {target} is a directory", hint="give a file path")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist", hint="create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text_atomic(target: str | os.PathLike[str], text: str, *, force: bool = True) -> None:
    with atomic_path(target, force=force) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_atomic(
    target: str | os.PathLike[str], writer: Callable[[Path], None], *, force: bool = False
) -> None:
    with atomic_path(target, force=force) as tmp:
        writer(tmp)


def _code_file(spec: str | None) -> str | None:
    """The file part of ``FILE.py:NAME`` (``--arch``, ``--data-loader``); None for ``MODULE:NAME``."""
    if not spec:
        return None
    head, sep, _ = spec.rpartition(":")
    return head if sep and (head.endswith(".py") or os.sep in head) else None


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def refuse_collisions(
    outputs: Sequence[tuple[str, str | None]],
    inputs: Sequence[tuple[str, str | None]],
    code: Sequence[tuple[str, str | None]] = (),
) -> None:
    """Refuse, before the run, an output path that is an input or another output.

    ``outputs`` and ``inputs`` are (option, path) pairs; ``code`` pairs are
    ``FILE.py:NAME`` specs whose file is an input. Paths are compared after resolving
    symbolic links, and by inode where both exist, so ``./a`` and a link to it collide.
    """
    ins = [(label, p) for label, p in inputs if p] + [
        (label, f) for label, spec in code if (f := _code_file(spec)) is not None
    ]
    outs = [(label, p) for label, p in outputs if p]
    for i, (label, out) in enumerate(outs):
        for other_label, other in ins:
            if _same(out, other):
                raise InputError(
                    f"{label} {out} is the {other_label} input {other}",
                    hint="inputs are never overwritten; write to another path",
                )
        for other_label, other in outs[:i]:
            if _same(out, other):
                raise InputError(
                    f"{label} {out} and {other_label} {other} are the same file",
                    hint="give each output its own path",
                )
