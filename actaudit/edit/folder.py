"""Where a rewrite of a Hugging Face folder may go back as a folder: the ``-o`` and the mode.

Only ``--mode recycle`` changes weights and nothing else, so only its result fits the input's
``config.json``; every other mode adds slopes, which a config cannot hold, and writes one file.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

FOLDER = "folder"
WEIGHTS_ONLY_MODE = "recycle"
# Suffixes that name a one-file model: an -o without one (a new path) is a folder.
MODEL_SUFFIXES = frozenset({".pt", ".pth", ".ts", ".pt2", ".jit", ".onnx", ".bin", ".safetensors", ".pkl"})


def names_folder(output: str | os.PathLike[str] | None) -> bool:
    """An ``-o`` that names a folder: an existing directory, or a path whose suffix names no model file."""
    if output is None:
        return False
    p = Path(output)
    return p.is_dir() or p.suffix.lower() not in MODEL_SUFFIXES


PRUNE_NOT_A_FOLDER = (
    "prune removes a different number of FFN neurons in each layer, and a Hugging Face config.json holds "
    "one FFN width for every layer"
)


def refuse_prune_folder_output(output: str | os.PathLike[str]) -> None:
    """Before the run: a pruned Hugging Face model goes to one file, never to a folder ``-o``."""
    raise InputError(
        f"-o {output} names a folder, but {PRUNE_NOT_A_FOLDER}",
        hint="name a file (e.g. -o pruned.pt, a pickled nn.Module that torch.load(path, weights_only=False) "
        "reads beside the same transformers)",
    )


def refuse_folder_output(model: str | os.PathLike[str], output: str | os.PathLike[str], mode: str) -> None:
    """Before the run: a folder ``-o`` only for ``--mode recycle``, never the input folder or inside it."""
    if mode != WEIGHTS_ONLY_MODE:
        raise InputError(
            f"-o {output} names a folder, but --mode {mode} adds slopes that a Hugging Face config.json cannot hold",
            hint="use --mode recycle to write a folder, or name a file (e.g. -o model.pt) for other modes",
        )
    src, dst = Path(model).resolve(), Path(output).resolve()
    if dst == src or src in dst.parents:
        raise InputError(
            f"-o {output} is the input folder {model} or inside it",
            hint="inputs are never written into; write the folder elsewhere",
        )
