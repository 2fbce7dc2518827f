"""Which kind of checkpoint a file is, from its content (the extension only breaks ties).

No torch import here: detection reads zip member names and the first bytes.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .errors import InputError

TORCHSCRIPT = "torchscript"
EXPORT = "torch.export"
TORCH_SAVE = "torch.save"  # a pickle: state_dict, training checkpoint or whole nn.Module
ONNX = "onnx"
SAFETENSORS = "safetensors"  # a state_dict as raw tensors behind a JSON header; holds no code
# A Hugging Face checkpoint folder: config.json (what to build) beside safetensors weights.
TRANSFORMERS = "transformers"
FORMATS = (TORCHSCRIPT, EXPORT, TORCH_SAVE, ONNX, SAFETENSORS, TRANSFORMERS)
HF_CONFIG = "config.json"

_PICKLE_PROTOCOL_BYTE = 0x80
# torch.save's legacy (non-zip) format begins with a pickled magic number.
_LEGACY_MAGIC_PREFIX = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def check_readable(path: Path, what: str = "model") -> None:
    """An existing, readable, non-empty file, or one clear InputError saying which of these fails."""
    if not path.exists():
        raise InputError(f"{what} {path} does not exist", hint="check the path")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} is not readable", hint="check its permissions")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty")


def detect_format(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if p.is_dir():
        return _detect_folder(p)
    check_readable(p)
    with open(p, "rb") as f:
        head = f.read(64)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise InputError(f"model {p} looks like a zip archive but cannot be read: {e}") from None
        base = {n.split("/", 1)[1] if "/" in n else n for n in names}
        if any(n.endswith("archive_format") or n.startswith("models/") for n in base):
            return EXPORT
        if any(n.startswith("code/") for n in base) and "constants.pkl" in base:
            return TORCHSCRIPT
        if "data.pkl" in base:
            return TORCH_SAVE
        raise InputError(
            f"model {p} is a zip archive but not a PyTorch checkpoint (no data.pkl, code/ or models/ inside)"
        )
    if head[:1] == bytes([_PICKLE_PROTOCOL_BYTE]) or head.startswith(_LEGACY_MAGIC_PREFIX):
        return TORCH_SAVE
    if _looks_like_safetensors(head, p.stat().st_size):
        # Before the ONNX guess: a header length whose low bytes read 0x08 0x0N looks like ir_version.
        return SAFETENSORS
    if p.suffix.lower() == ".onnx" or _looks_like_onnx(head):
        return ONNX
    raise InputError(
        f"cannot tell what kind of checkpoint {p} is",
        hint="supported: TorchScript (.pt/.ts), torch.export (.pt2), torch.save pickles (.pt/.pth), "
        "safetensors state_dicts (.safetensors), ONNX (.onnx)",
    )


def _detect_folder(p: Path) -> str:
    """A folder is a Hugging Face checkpoint when it holds ``config.json``; nothing else is read here."""
    if (p / HF_CONFIG).is_file():
        return TRANSFORMERS
    raise InputError(
        f"model {p} is a directory without {HF_CONFIG}",
        hint="a Hugging Face checkpoint folder holds config.json and model.safetensors; "
        "other checkpoints are single files (.pt, .pt2, .ts, .onnx, .safetensors)",
    )


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto usually starts with field 1 (ir_version, varint): tag byte 0x08, value 3..12.
    return len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= 20


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object (``{"``)."""
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{" and head[9:10] in (b'"', b"}", b" ", b"\n")
