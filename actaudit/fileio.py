"""Atomic writes and file hashing. An output either appears whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# errno values that mean "this place cannot take the file": the user's disk or folder, not our bug.
_PLACE_ERRORS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENAMETOOLONG}
)
_MIN_FREE = 1 << 20  # a write that failed with less free space than this failed for lack of space


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str | None:
    """What a non-regular file is, for the refusal; None for a regular file."""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def _existing(target: Path, force: bool) -> os.stat_result | None:
    """The regular file at ``target`` that ``--force`` may replace, or None; refuses anything else."""
    try:
        st = target.lstat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise InputError(
            f"output {target}: {_file_above(target)} is a file, not a directory",
            hint="give a path inside an existing directory",
        ) from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise InputError(
            f"output {target} is {kind}, not a regular file: it is never replaced",
            hint="give the path of a regular file",
        )
    if not force:
        raise InputError(f"output {target} already exists", hint="pass --force to overwrite it")
    return st


def _file_above(target: Path) -> Path:
    """The first component of ``target``'s folder that exists and is not a directory."""
    for parent in reversed(target.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return target.parent


def _place_error(target: Path, parent: Path, e: BaseException) -> InputError | None:
    """A one-line user error for a write that failed because of the disk or the folder."""
    if isinstance(e, OSError) and e.errno in _PLACE_ERRORS:
        return InputError(
            f"cannot write output {target}: {e.strerror or e}",
            hint="free some space or choose a writable folder; an existing file there was left as it was",
        )
    if isinstance(e, (OSError, RuntimeError)):  # torch's writers report a full disk as RuntimeError
        try:
            st = os.statvfs(parent)
        except OSError:
            return None
        if st.f_bavail * st.f_frsize < _MIN_FREE:
            return InputError(
                f"cannot write output {target}: no space left on the device ({type(e).__name__}: {e})",
                hint="free some space; an existing file there was left as it was",
            )
    return None


class Terminated(SystemExit):
    """SIGTERM while an output was being written: the temporary file is removed, exit 143."""


@contextlib.contextmanager
def _cleanup_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into an exception for the duration, so that ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(_signum: int, _frame: object) -> None:
        raise Terminated(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_target(target: str | os.PathLike[str], force: bool) -> None:
    """Refuse, before a slow run, an output that is not a regular file, or exists without ``force``."""
    t = Path(target)
    _existing(t, force)
    parent = t.parent if str(t.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist", hint="create it first")


def _publish(tmp: Path, target: Path, replace: bool) -> None:
    """Move ``tmp`` to ``target``; without ``replace``, fail if ``target`` appeared meanwhile.

    ``os.link`` refuses an existing name atomically, so of two writers racing for one
    new path exactly one wins; ``os.replace`` would let the later one silently win.
    """
    if replace:
        _existing(target, True)  # still a regular file (or gone) just before the swap
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise InputError(
            f"output {target} appeared while actaudit was running (another writer?); it was left as it is",
            hint="pass --force to overwrite it",
        ) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # No hard links here (some network and FAT file systems): claim the name exclusively.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.replace(tmp, target)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; publish it as ``target`` on success.

    On any exception (Ctrl-C and SIGTERM included) the temporary file is removed and
    ``target`` is left as it was. Only a regular file is ever replaced (and only with
    ``force``); a new file gets the mode the umask gives, a replaced one keeps its mode.
    A ``target`` that appears during the run makes this writer fail, not the earlier one.
    A full disk or an unwritable folder is a one-line :class:`InputError`.
    """
    target = Path(target)
    old = _existing(target, force)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist", hint="create it first")
    mode = stat.S_IMODE(old.st_mode) if old is not None else 0o666 & ~_current_umask()
    with _cleanup_on_sigterm():
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        except OSError as e:
            raise _place_error(target, parent, e) or e from None
        tmp_path = Path(tmp)
        try:
            os.fchmod(fd, mode)
            os.close(fd)
            yield tmp_path
            _publish(tmp_path, target, replace=old is not None)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
            err = _place_error(target, parent, e) if isinstance(e, Exception) else None
            if err is not None:
                raise err from None
            raise


@contextlib.contextmanager
def atomic_pair(target: str | os.PathLike[str], companion: str, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path for ``target`` in a private folder beside it; publish it with ``companion``.

    The writer puts the file named ``companion`` (external weights) next to the yielded
    path, so a model that names it relatively loads and verifies where it lies, with the
    very bytes that get published. On success the companion is moved first and ``target``
    last: a failure in between puts the previous companion back (or removes the new one),
    so no half-written pair is left; any failure before removes the folder and nothing is
    published. With ``force`` an old pair is replaced file by file, not in one step.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    side = parent / companion
    old = _existing(target, force)
    old_side = _existing(side, force)
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist", hint="create it first")
    mode = stat.S_IMODE(old.st_mode) if old is not None else 0o666 & ~_current_umask()
    with _cleanup_on_sigterm():
        try:
            folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
        except OSError as e:
            raise _place_error(target, parent, e) or e from None
        staged, staged_side = folder / target.name, folder / companion
        try:
            yield staged
            if not staged_side.is_file():
                raise RuntimeError(f"the writer did not write {companion} beside {target.name}")
            for f in (staged, staged_side):
                os.chmod(f, mode)
            backup = None
            if old_side is not None:  # a hard link keeps the previous companion for the roll-back
                backup = folder / f".{companion}.previous"
                os.link(side, backup)
            _publish(staged_side, side, replace=old_side is not None)
            try:
                _publish(staged, target, replace=old is not None)
            except BaseException:
                if backup is not None:
                    os.replace(backup, side)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        side.unlink()
                raise
        except BaseException as e:
            shutil.rmtree(folder, ignore_errors=True)
            err = _place_error(target, parent, e) if isinstance(e, Exception) else None
            if err is not None:
                raise err from None
            raise
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_bytes(blob: bytes, target: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """``blob`` in a temporary file beside ``target`` (see :func:`atomic_path`), published when the block succeeds."""
    with atomic_path(target, force=force) as tmp:
        tmp.write_bytes(blob)
        yield tmp


def write_text_atomic(target: str | os.PathLike[str], text: str, *, force: bool = True) -> None:
    with atomic_path(target, force=force) as tmp:
        tmp.write_text(text, encoding="utf-8")


def code_file(spec: str | None) -> str | None:
    """The file part of ``FILE.py:NAME`` (``--arch``, ``--data-loader``); None for ``MODULE:NAME``."""
    if not spec:
        return None
    head, sep, _ = spec.rpartition(":")
    return head if sep and (head.endswith(".py") or os.sep in head) else None


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """One file under two names: the same path after resolving links, or the same inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


_same = same_file  # the name the ONNX writer imports
