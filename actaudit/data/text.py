"""Prompts from a text file (one per line) or JSONL, tokenised with the model folder's own tokenizer.

The tokenizer is the folder's ``tokenizer.json`` (or that of ``--tokenizer DIR``, a local folder:
nothing is fetched by name), read by the ``tokenizers`` library (a data file, no code). Prompts are truncated to ``--max-length`` tokens and never padded: batches
hold sequences of one length (:func:`actaudit.data.streams.by_length`), so every element the
audit counts is a real token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError, InputError
from .batches import Batch, DataSource
from .streams import FileSettings, by_length

TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE = "tokenizer.model"
MAX_LINE_CHARS = 1 << 20  # one prompt; a longer line is not a prompt
MAX_TOKENIZER_BYTES = 1 << 30
DEFAULT_MAX_LENGTH = 512
_JSON_KEYS = ("text", "prompt", "content")


def text_source(path: Path, settings: FileSettings) -> DataSource:
    tokenizer, where = _tokenizer(path, settings.model_folder, settings.tokenizer)
    limit = settings.max_length or _position_limit(settings.model_folder) or DEFAULT_MAX_LENGTH
    if limit < 1:
        raise InputError(f"--max-length must be at least 1, got {limit}")
    tokenizer.no_padding()
    tokenizer.enable_truncation(limit)
    jsonl = path.suffix.lower() == ".jsonl"

    def ids() -> Iterator[np.ndarray]:
        for n, prompt in _prompts(path, jsonl):
            try:
                got = tokenizer.encode(prompt).ids
            except Exception as e:
                raise CalibrationError(f"{path}:{n}: the tokenizer failed: {e}") from None
            if got:
                yield np.asarray(got, dtype=np.int64)

    def batches() -> Iterator[Batch]:
        for arr in by_length(ids(), settings.batch_size):
            yield [], {"input_ids": arr}

    kind = "JSONL" if jsonl else "text"
    return DataSource(
        batches,
        f"{path} ({kind}, tokenised with {where}, at most {limit} tokens, unpadded)",
        details={"kind": "text", "tokenizer": where, "max_length": limit},
    )


def _tokenizer_file(path: Path, folder: Path | None, given: str | None) -> Path:
    """The tokenizer.json to read: ``--tokenizer DIR``'s, else the model folder's; never a hub name."""
    if given is not None:
        d = Path(given)
        if not d.is_dir():
            raise InputError(
                f"--tokenizer {given} is not a folder here (a tokenizer is never downloaded by name)",
                hint=f"give a local folder holding {TOKENIZER_FILE}, e.g. one saved with "
                "AutoTokenizer.from_pretrained(NAME).save_pretrained(DIR)",
            )
        if not (d / TOKENIZER_FILE).is_file():
            raise InputError(f"--tokenizer {given} has no {TOKENIZER_FILE}", hint=_convert_hint(d))
        return d / TOKENIZER_FILE
    file = folder / TOKENIZER_FILE if folder is not None else None
    if folder is None or file is None or not file.is_file():
        where = f"the model folder {folder}" if folder is not None else "the model"
        only = (
            " (only a SentencePiece tokenizer.model)" if folder and (folder / SENTENCEPIECE).is_file() else ""
        )
        raise InputError(
            f"calibration file {path} holds text, and {where} has no {TOKENIZER_FILE}{only} to tokenise it",
            hint=(_convert_hint(folder) + "; or " if folder is not None else "")
            + f"pass --tokenizer DIR (a local folder holding {TOKENIZER_FILE}), give token ids as .npy "
            "(input_ids), or a --data-loader",
        )
    return file


def _convert_hint(d: Path) -> str:
    if (d / SENTENCEPIECE).is_file():
        return (
            f"{d} holds only a SentencePiece {SENTENCEPIECE}: write its {TOKENIZER_FILE} once with "
            f"AutoTokenizer.from_pretrained('{d}').save_pretrained('{d}') (needs sentencepiece), "
            "then run again"
        )
    return f"save the model's tokenizer there with AutoTokenizer.from_pretrained(NAME).save_pretrained('{d}')"


def _tokenizer(path: Path, folder: Path | None, given: str | None = None) -> tuple[Any, str]:
    file = _tokenizer_file(path, folder, given)
    if file.stat().st_size > MAX_TOKENIZER_BYTES:
        raise InputError(f"{file} has {file.stat().st_size} bytes: too large for a tokenizer")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError(
            "text calibration needs the tokenizers package", hint="pip install 'actaudit[hf]'"
        ) from None
    try:
        return Tokenizer.from_file(str(file)), str(file)
    except Exception as e:
        raise InputError(f"cannot read tokenizer {file}: {' '.join(str(e).split())[:200]}") from None


def _position_limit(folder: Path | None) -> int | None:
    """``max_position_embeddings`` of the folder's config.json, when it states one."""
    if folder is None or not (folder / "config.json").is_file():
        return None
    try:
        config = json.loads((folder / "config.json").read_bytes())
    except (ValueError, OSError):
        return None
    n = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return min(n, DEFAULT_MAX_LENGTH) if isinstance(n, int) and n > 0 else None


def _prompts(path: Path, jsonl: bool) -> Iterator[tuple[int, str]]:
    """(line number, prompt) for each non-empty line; a line too long to be a prompt is an error."""
    try:
        f = open(path, encoding="utf-8", errors="strict", newline=None)  # noqa: SIM115
    except OSError as e:
        raise InputError(f"cannot read calibration file {path}: {e.strerror}") from None
    with f:
        n = 0
        while True:
            try:
                line = f.readline(MAX_LINE_CHARS + 1)
            except UnicodeDecodeError as e:
                raise CalibrationError(f"{path}: line {n + 1} is not UTF-8 ({e.reason})") from None
            if not line:
                return
            n += 1
            if len(line) > MAX_LINE_CHARS:
                raise CalibrationError(f"{path}:{n}: a line of more than {MAX_LINE_CHARS} characters")
            text = line.strip()
            if not text:
                continue
            yield n, _from_json(path, n, text) if jsonl else text


def _from_json(path: Path, n: int, text: str) -> str:
    try:
        obj = json.loads(text)
    except ValueError:
        raise CalibrationError(f"{path}:{n}: not a JSON value") from None
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        for k in _JSON_KEYS:
            if isinstance(obj.get(k), str):
                return str(obj[k])
    raise CalibrationError(
        f"{path}:{n}: neither a JSON string nor an object with a string under {'/'.join(_JSON_KEYS)}"
    )


MASK = "attention_mask"


def without_padding(source: DataSource, batch_size: int) -> DataSource:
    """Token batches with an ``attention_mask`` (from .npz, .pt or a loader), padding removed.

    Each row keeps the positions its mask marks (left or right padding alike), and rows are
    batched again by length, so padded positions never reach the model and never count as
    elements. Every ``[batch, tokens]`` array beside the mask (``token_type_ids``) is cut
    the same way. Batches without a mask pass unchanged.
    """

    def batches() -> Iterator[Batch]:
        for args, kwargs in source.batches():
            if MASK not in kwargs or args:
                yield args, kwargs
                continue
            names, rows = _unpadded_rows(kwargs)
            for arr in by_length(rows, batch_size):
                yield [], {n: np.ascontiguousarray(arr[:, :, i]) for i, n in enumerate(names)}

    arrays = source.details.get("arrays")
    masked = isinstance(arrays, dict) and MASK in arrays
    return DataSource(
        batches,
        source.description + (" (attention_mask honoured: padding removed)" if masked else ""),
        source.synthetic,
        source.total_samples,
        source.details,
    )


def _unpadded_rows(kwargs: dict[str, object]) -> tuple[list[str], Iterator[np.ndarray]]:
    mask = np.asarray(kwargs[MASK])
    if mask.ndim != 2:
        raise CalibrationError(f"{MASK} has shape {tuple(mask.shape)}; expected [batch, tokens]")
    if not np.isin(mask, (0, 1)).all():
        raise CalibrationError(f"{MASK} holds values other than 0 and 1")
    names = [k for k in kwargs if k != MASK]
    arrays = [np.asarray(kwargs[k]) for k in names]
    for n, a in zip(names, arrays, strict=True):
        if a.shape != mask.shape:
            raise CalibrationError(
                f"{n} has shape {tuple(a.shape)} and {MASK} {tuple(mask.shape)}",
                hint="give the mask of the same [batch, tokens] as the token ids",
            )
    stacked = np.stack(arrays, -1)  # [batch, tokens, inputs]

    def rows() -> Iterator[np.ndarray]:
        for row, keep in zip(stacked, mask.astype(bool), strict=True):
            if keep.any():
                yield row[keep]

    return names, rows()
