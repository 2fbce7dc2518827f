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
        _save(model, source, tmp)
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


def _save(model: Any, source: Path, tmp: Path) -> None:
    config = model.config
    cache = config.use_cache
    try:  # the loader turns the key/value cache off for the audit: the folder keeps the input's setting
        original = json.loads((source / "config.json").read_text(encoding="utf-8"))
        config.use_cache = original.get("use_cache", cache) if isinstance(original, dict) else cache
        model.save_pretrained(tmp, safe_serialization=True)
    finally:
        config.use_cache = cache
    for f in sorted(source.iterdir()):
        name = f.name
        if not f.is_file() or name.startswith(".") or (tmp / name).exists() or name.endswith(_NOT_COPIED):
            continue
        shutil.copyfile(f, tmp / name)


def reload_folder(cls: type, path: Path, device: Any) -> Any:
    """The written folder as a user loads it: the model's own class, local files only."""
    m = cls.from_pretrained(str(path), local_files_only=True)  # type: ignore[attr-defined]
    m.to(device)
    m.eval()
    if getattr(m.config, "use_cache", None):
        m.config.use_cache = False  # the same outputs as the audited model (no cache in them)
    return m
