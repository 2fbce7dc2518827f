"""A checkpoint's zip archive, seen exactly as torch's loaders see it, from bytes held in memory.

``torch.jit.load`` and ``torch.export.load`` read archives with torch's own zip reader
(miniz), which looks member names up *case-insensitively* and, for two members of one
name, returns whichever its binary search meets first. Python's :mod:`zipfile` sees
another archive: exact names, the last of two copies, offsets shifted when bytes are
prepended. A checker that reads through :mod:`zipfile` therefore checks something else
than what the loader runs.

:class:`ArchiveView` reads through torch's reader itself (``torch._C.PyTorchFileReader``
over the same bytes the loader will get) and refuses archives on which the two readers
could disagree: member names that repeat or collide case-insensitively, names holding a
NUL byte or too long for the reader's name buffer, and directories whose names, sizes or
offsets read differently. Every member it hands out is bounded: its size is checked from
the directory before anything is inflated, and torch's reader inflates at most the size
the directory declares (a longer stream fails, it does not grow).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import NoReturn

import torch

from ...errors import InputError

# A code member the checks parse: real ones are tens of KiB (a long traced forward, a few
# hundred), and Python's parser costs up to ~200 bytes of memory per byte of adversarial code.
MAX_CODE_MEMBER = 4 << 20
# A pickle or JSON member the checks read (pickles are scanned as a stream of opcodes; a large
# exported program's JSON runs to a few MiB).
MAX_METADATA_MEMBER = 64 << 20
# All members the checks read, together.
MAX_PARSED_TOTAL = 256 << 20
# Declared sizes of all deflated members: torch writes tensors uncompressed, so only code and
# metadata are ever inflated; a member that expands past this is a decompression bomb.
MAX_INFLATED_TOTAL = 256 << 20
# miniz copies member names into a 512-byte buffer (MZ_ZIP_MAX_ARCHIVE_FILENAME_SIZE).
MAX_NAME_BYTES = 500
# A flatbuffer ("mobile") module: torch.jit.load runs it without reading it as a zip.
_FLATBUFFER_MAGIC = b"PTMF"


def read_once(path: Path) -> bytes:
    """The file's bytes, read with one open: what is checked and what is loaded are these bytes."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None


def _folded(name: bytes) -> bytes:
    """The key miniz compares names by (``MZ_TOLOWER``: ASCII letters only)."""
    return name.lower()


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    return info.orig_filename.encode(encoding)


class ArchiveView:
    """The members of one archive as torch's reader resolves them; see the module's docstring."""

    def __init__(self, data: bytes, path: Path, what: str) -> None:
        self.path, self.what = path, what
        if data[4:8] == _FLATBUFFER_MAGIC:
            self._refuse("it is a flatbuffer module, which torch runs without reading it as a zip archive")
        try:
            self._reader = torch._C.PyTorchFileReader(io.BytesIO(data))
            names = list(self._reader.get_all_records())
        except Exception as e:  # torch's reader raises RuntimeError for every damaged archive
            if "not in a subdirectory" in str(e):
                self._refuse(
                    "its members are not in one folder, as torch's own writer puts them "
                    "(an archive of another layout, e.g. a torch.export file from before torch 2.8)"
                )
            raise InputError(f"cannot load {what} {path}: damaged zip archive ({_first_line(e)})") from None
        try:
            infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
        except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, UnicodeDecodeError) as e:
            raise InputError(f"cannot load {what} {path}: damaged zip archive ({e})") from None
        self.names = names
        self.compressed: dict[str, bool] = {}
        self._agree(names, infos)
        self._spent: dict[str, int] = {}

    def _refuse(self, why: str) -> NoReturn:
        raise InputError(
            f"refusing to load {self.what} {self.path}: {why}",
            hint="re-save it with torch, or pass --trust-code only if you trust its origin",
        )

    def _agree(self, names: list[str], infos: list[zipfile.ZipInfo]) -> None:
        """Refuse unless Python's view of the directory is torch's, name by name, with no collisions."""
        if len(names) != len(infos):
            self._refuse("its zip directory lists a different number of members to each zip reader")
        seen: dict[bytes, str] = {}
        for name, info in zip(names, infos, strict=True):
            raw = _raw_name(info)
            if b"\0" in raw or len(raw) > MAX_NAME_BYTES:
                self._refuse(f"member name {raw[:60]!r}… holds a NUL byte or is over {MAX_NAME_BYTES} bytes")
            if not raw.endswith(name.encode("utf-8", "surrogateescape")):
                self._refuse(f"member {name!r} reads differently to each zip reader")
            key = _folded(raw)
            if key in seen:
                same = "repeats" if seen[key] == info.orig_filename else "collides with " + repr(seen[key])
                self._refuse(
                    f"member name {info.orig_filename!r} {same} (torch's reader looks names up "
                    "ignoring case, so either copy could be the one that runs)"
                )
            seen[key] = info.orig_filename
        inflated = 0
        for name, info in zip(names, infos, strict=True):  # names are unique now: lookups are exact
            size = self._reader.get_record_size(name)
            header = self._reader.get_record_header_offset(name)  # type: ignore[attr-defined]
            if size != info.file_size or header != info.header_offset:
                self._refuse(f"member {name!r} has a different size or offset to each zip reader")
            self.compressed[name] = info.compress_type != zipfile.ZIP_STORED
            if self.compressed[name]:
                inflated += size
            elif size > info.compress_size:
                self._refuse(f"stored member {name!r} claims more bytes than it holds")
        if inflated > MAX_INFLATED_TOTAL:
            self._refuse(
                f"its compressed members would inflate to {inflated} bytes, over the limit of "
                f"{MAX_INFLATED_TOTAL} bytes (a decompression bomb)"
            )

    def size(self, name: str) -> int:
        return int(self._reader.get_record_size(name))

    def read(self, name: str, role: str) -> bytes:
        """One member, as the loader would get it; its size checked before it is inflated."""
        size = self.size(name)
        limit = MAX_CODE_MEMBER if role == "code" else MAX_METADATA_MEMBER
        if size > limit:
            self._refuse(f"{role} member {name!r} holds {size} bytes, over the limit of {limit} bytes")
        self._spent[name] = size
        if sum(self._spent.values()) > MAX_PARSED_TOTAL:
            self._refuse(f"its code and metadata members exceed the limit of {MAX_PARSED_TOTAL} bytes in all")
        try:
            data = bytes(self._reader.get_record(name))
        except Exception as e:
            self._refuse(f"member {name!r} cannot be inflated to its declared size ({_first_line(e)})")
        if len(data) != size:
            self._refuse(f"member {name!r} inflates to another size than its header declares")
        return data


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= 200 else text[:200] + " …"
