"""Builders of hostile zip archives aimed at the load path: what torch's zip reader (miniz) and
Python's :mod:`zipfile` read differently, decompression bombs, parser bombs, sympify payloads.

Each payload, if it ever ran, would only create a marker file.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

from tests import hostile_models as hm

Member = tuple[str, bytes]


def members(src: Path) -> list[Member]:
    with zipfile.ZipFile(src) as zf:
        return [(i.filename, zf.read(i.filename)) for i in zf.infolist()]


def write(dst: Path, entries: list[Member], deflate: tuple[str, ...] = ()) -> Path:
    """A zip of ``entries`` in order (duplicates kept); names ending with a ``deflate`` suffix compressed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we want
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zf:
            for name, data in entries:
                kind = zipfile.ZIP_DEFLATED if name.endswith(deflate) else zipfile.ZIP_STORED
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=kind)
    return dst


def renamed(src: Path, dst: Path, rename: Callable[[str], str]) -> Path:
    return write(dst, [(rename(n), d) for n, d in members(src)], deflate=(".py", ".PY"))


def setstate_code(entries: list[Member]) -> tuple[str, bytes]:
    """The code member of SetstateWriter: the one whose __setstate__ writes the marker."""
    return next((n, d) for n, d in entries if n.endswith("hostile_models.py"))


def ts_case_folder(tmp: Path, marker: Path) -> Path:
    """SetstateWriter with its code under ``CODE/``: torch finds it, an exact-case checker does not."""
    return renamed(hm.ts_setstate(tmp, marker), tmp / "case.ts", lambda n: n.replace("/code/", "/CODE/"))


def ts_case_suffix(tmp: Path, marker: Path) -> Path:
    return renamed(
        hm.ts_setstate(tmp, marker), tmp / "suffix.ts", lambda n: n[:-3] + ".PY" if n.endswith(".py") else n
    )


def _benign(code: bytes) -> bytes:
    lines = [ln for ln in code.decode().splitlines() if "torch.save" not in ln]
    return ("\n".join(lines) + "\n").encode()


def ts_duplicate(tmp: Path, marker: Path, fold_case: bool) -> Path:
    """The payload's code member first, a benign copy of the same name (or another case) after it:
    Python's zipfile reads the last copy, miniz's binary search may return either."""
    entries = members(hm.ts_setstate(tmp, marker))
    name, code = setstate_code(entries)
    other = name.replace("/code/", "/Code/") if fold_case else name
    at = entries.index((name, code))
    entries.insert(at + 1, (other, _benign(code)))
    return write(tmp / f"dup{int(fold_case)}.ts", entries)


def ts_with_member(tmp: Path, name: str, data: bytes, deflate: bool = True) -> Path:
    """The plain archive plus one member (under its folder)."""
    entries = members(hm.ts_plain(tmp))
    root = entries[0][0].split("/", 1)[0]
    entries.append((f"{root}/{name}", data))
    return write(tmp / "extra.ts", entries, deflate=(name,) if deflate else ())


def flatbuffer_magic(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    data[4:8] = b"PTMF"
    dst.write_bytes(bytes(data))
    return dst


# -- a decompression bomb, built without compressing gigabytes ---------------------------------
def _zero_stream(total: int) -> bytes:
    """A raw deflate stream of ``total`` zero bytes: identical fully flushed blocks, repeated."""
    chunk = 8 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    assert total % chunk == 0 and total // chunk >= 2
    return first + again * (total // chunk - 1) + c.flush()


def append_deflated(src: bytes, name: str, raw: bytes, size: int) -> bytes:
    """``src`` (a zip without comment) with one more deflated member whose stream is ``raw``."""
    eocd = src.rindex(b"PK\x05\x06")
    count, cd_size, cd_offset = struct.unpack("<HII", src[eocd + 10 : eocd + 20])
    body, central = src[:cd_offset], src[cd_offset : cd_offset + cd_size]
    fname = name.encode()
    crc = 0  # never checked: nothing may inflate it
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(raw), size, len(fname), 0)
    entry = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02",
        20,
        20,
        0,
        8,
        0,
        0,
        crc,
        len(raw),
        size,
        len(fname),
        0,
        0,
        0,
        0,
        0,
        len(body),
    )
    new_body = body + local + fname + raw
    new_central = central + entry + fname
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, count + 1, count + 1, len(new_central), len(new_body), 0
    )
    return new_body + new_central + end


def ts_bomb(tmp: Path, size: int = 3 << 30, declared: int | None = None) -> Path:
    """The plain archive plus an unreferenced deflated code member of ``size`` zero bytes
    (whose header may declare another size)."""
    plain = hm.ts_plain(tmp)
    root = members(plain)[0][0].split("/", 1)[0]
    out = tmp / "bomb.ts"
    stream = _zero_stream(size)
    out.write_bytes(
        append_deflated(plain.read_bytes(), f"{root}/code/__torch__/bomb.py", stream, declared or size)
    )
    return out


# -- torch.export --------------------------------------------------------------------------------
def pt2_dynamic(tmp: Path) -> Path:
    """Plain exported with a dynamic batch: its JSON carries symbolic expressions."""
    torch.manual_seed(0)
    ep = torch.export.export(
        hm.Plain().eval(), (torch.zeros(4, 4),), dynamic_shapes=({0: torch.export.Dim("batch", min=2)},)
    )
    out = tmp / "dynamic.pt2"
    torch.export.save(ep, str(out))
    return out


def pt2_sympify_payload(tmp: Path, marker: Path) -> Path:
    """Every symbolic expression string of the program becomes one that touches ``marker`` when sympified."""
    entries = members(pt2_dynamic(tmp))
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() or "

    def poison(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr_str"), str):
                node["expr_str"] = payload + node["expr_str"]
            for v in node.values():
                poison(v)
        elif isinstance(node, list):
            for v in node:
                poison(v)

    out = []
    for name, data in entries:
        if name.endswith("models/model.json"):
            doc = json.loads(data)
            poison(doc)
            assert payload in json.dumps(doc)
            data = json.dumps(doc).encode()
        out.append((name, data))
    return write(tmp / "sympify.pt2", out)


class Printer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.ops.aten._print("PRINTED-BY-THE-PROGRAM")
        return torch.relu(self.lin(x))


def pt2_effects_print(tmp: Path) -> Path:
    """A program whose denied op (aten._print) sits inside the with_effects higher-order operator."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(Printer().eval(), (torch.zeros(2, 4),)).run_decompositions()
    assert "with_effects" in str(ep.graph)
    out = tmp / "effects.pt2"
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    out.write_bytes(buf.getvalue())
    return out


def pt2_duplicate_program(tmp: Path) -> Path:
    entries = members(pt2_dynamic(tmp))
    name, data = next((n, d) for n, d in entries if n.endswith("models/model.json"))
    entries.append((name.replace("models/", "MODELS/"), data))
    return write(tmp / "dup.pt2", entries)


def pt2_nested_json(tmp: Path, depth: int) -> Path:
    """The program's JSON replaced by lists nested ``depth`` deep."""
    entries = [
        (n, b"[" * depth + b"]" * depth if n.endswith("models/model.json") else d)
        for n, d in members(pt2_dynamic(tmp))
    ]
    return write(tmp / f"nested{depth}.pt2", entries)


class CondNet(torch.nn.Module):
    """A benign program with a higher-order operator (cond) and two subgraphs."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, torch.relu, torch.sigmoid, (self.lin(x),))


def pt2_cond(tmp: Path) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(CondNet().eval(), (torch.zeros(3, 4),))
    out = tmp / "cond.pt2"
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    out.write_bytes(buf.getvalue())
    return out
