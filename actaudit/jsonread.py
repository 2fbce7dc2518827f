"""JSON files a user hands in (shard reports, baselines), read within bounds.

Python's ``json`` parser recurses once per nesting level: a file of a few thousand ``[``
raises ``RecursionError`` (or, under a raised recursion limit, overflows the C stack), and
a number of a million digits is parsed before anything looks at it. Here the file's size
is checked before it is read, its nesting depth is measured on the raw text before it is
parsed, and every failure (not UTF-8, not JSON, too deep, a number past Python's digit
limit) is one :class:`InputError` naming the file. What the values mean is for the caller
to check, before it sizes anything with them.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, NoReturn

from .errors import InputError

MAX_DEPTH = 32  # an actaudit report is about 6 levels deep
MAX_BYTES = 1 << 30

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_CHUNK = 1 << 20


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (unbalanced text counts as written)."""
    import numpy as np

    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    arr = np.frombuffer(brackets, dtype=np.uint8)
    depth, deepest = 0, 0
    for start in range(0, len(arr), _CHUNK):
        part = arr[start : start + _CHUNK]
        steps = np.where((part == ord("[")) | (part == ord("{")), 1, -1).astype(np.int64)
        run = depth + np.cumsum(steps)
        deepest = max(deepest, int(run.max()))
        depth = int(run[-1])
    return deepest


def read_json(path: str | os.PathLike[str], what: str, *, hint: str | None = None) -> Any:
    """The JSON value in ``path``; :class:`InputError` (naming ``what`` and the file) if it is not one."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                raise InputError(
                    f"{what} {path} is {size / 2**20:.0f} MiB, over the {MAX_BYTES >> 20} MiB limit",
                    hint=hint,
                )
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a directory", hint=hint) from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path} is not JSON (not UTF-8 text at byte {e.start})", hint=hint) from None
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise InputError(
            f"{what} {path} is nested {depth} levels deep, over the limit of {MAX_DEPTH}", hint=hint
        )
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {path} is not JSON: {e}", hint=hint) from None
    except (ValueError, RecursionError) as e:  # a number past the digit limit; NaN/Infinity literals
        raise InputError(f"{what} {path}: {str(e)[:120]}", hint=hint) from None


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")
