"""A rewrite of a Hugging Face folder written back as a folder the same library loads.

Only a rewrite that changes weights and nothing else (``--mode recycle``) can go back: a
``config.json`` names one activation for every layer and cannot hold per-site slopes. The
model is saved with ``save_pretrained`` (``config.json`` + safetensors) into a private
folder beside the output, with the input's tokenizer and preprocessor files copied, and is
reloaded from there with ``from_pretrained(local_files_only=True)`` for the checks; the
folder is renamed to the output only when they pass. An existing folder is never replaced,
and the output is never the input folder or inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError

# Files of the input folder never copied: its weights, its index and its code (the new folder's come from the writer).
_NOT_COPIED = (".safetensors", ".bin", ".py", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".index.json")


@contextlib.contextmanager
def stage_folder(model: Any, source: Path, out: Path, notes: list[str]) -> Iterator[Path]:
    """``model`` saved into a private folder beside ``out``; renamed to ``out`` when the block succeeds."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist", hint="create it first")
    if os.path.lexists(out):
        raise InputError(
            f"-o {out} exists; a folder is never replaced", hint="remove it or write to a new path"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        _save(model, source, tmp, notes)
        notes.append(
            f"written as a Hugging Face folder (save_pretrained: config.json + safetensors; tokenizer files copied "
            f"from {source}): load it with from_pretrained"
        )
        yield tmp
        if os.path.lexists(out):
            raise InputError(
                f"-o {out} appeared during the run; nothing was written", hint="write to a new path"
            )
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save(model: Any, source: Path, tmp: Path, notes: list[str]) -> None:
    config = model.config
    cache = config.use_cache
    stored = stored_dtype(source)
    audited = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    cast = stored is not None and stored != audited
    try:  # the loader turns the key/value cache off for the audit: the folder keeps the input's setting
        original = json.loads((source / "config.json").read_text(encoding="utf-8"))
        config.use_cache = original.get("use_cache", cache) if isinstance(original, dict) else cache
        if cast:
            # Written in the input's dtype; the model in memory is rounded the same way, so the
            # checks that follow compare what the folder holds.
            model.to(stored)
        model.save_pretrained(tmp, safe_serialization=True)
    finally:
        config.use_cache = cache
        if cast:
            model.to(audited)
    if cast:
        notes.append(f"weights written as {str(stored).removeprefix('torch.')}, as the input stored them")
    for f in sorted(source.iterdir()):
        name = f.name
        if not f.is_file() or name.startswith(".") or (tmp / name).exists() or name.endswith(_NOT_COPIED):
            continue
        shutil.copyfile(f, tmp / name)


_SAFE_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}


def stored_dtype(source: Path) -> torch.dtype | None:
    """The one floating dtype of the input folder's safetensors files (read from their headers), or
    None: pickled weights, or several floating dtypes (the written folder then stays as audited)."""
    from safetensors import safe_open

    found: set[str] = set()
    for f in sorted(source.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt", device="cpu") as st:
                found |= {st.get_slice(k).get_dtype() for k in st.keys()}  # noqa: SIM118 (not a dict)
        except Exception:
            return None
    floats = {d for d in found if d.startswith(("F", "BF"))}
    return _SAFE_DTYPES.get(floats.pop()) if len(floats) == 1 else None


def reload_folder(cls: type, path: Path, device: Any) -> Any:
    """The written folder as a user loads it: the model's own class, local files only; in float32, as
    the audit ran, whatever dtype the folder stores."""
    m = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)  # type: ignore[attr-defined]
    m.to(device)
    m.eval()
    if getattr(m.config, "use_cache", None):
        m.config.use_cache = False  # the same outputs as the audited model (no cache in them)
    return m
