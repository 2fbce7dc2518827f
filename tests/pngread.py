"""Decode the PNG screenshots headless Chromium writes, without Pillow (shared by the browser tests)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def png_rgb(path: Path) -> tuple[int, int, np.ndarray]:
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG (what chromium writes) without Pillow."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    out = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f, line = (
            raw[y * (stride + 1)],
            np.frombuffer(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)], np.uint8),
        )
        cur = line.astype(np.int32)
        if f == 2:
            cur = (cur + prev) & 0xFF
        elif f in (1, 3, 4):
            cur = cur.copy()
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b = prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (cur[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return w, h, out.reshape(h, w, bpp)[:, :, :3]
