"""Names from a model file made safe for a terminal and a spreadsheet.

Node and module names come from the checkpoint, i.e. from whoever made it: an ONNX
node can be named ``"\\x1b]0;pwned\\x07"`` (a terminal escape) or ``"=HYPERLINK(…)"``
(a spreadsheet formula). Text outputs escape every non-printable character
(``\\x1b``, ``\\u202e``, newlines) the way Python's ``repr`` does, and CSV cells that
a spreadsheet would evaluate (starting with ``= + - @``) get a leading ``'``. JSON and
HTML keep names as they are: their encoders already escape them.
"""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

_FORMULA_PREFIXES = ("=", "+", "-", "@")


def text(s: object) -> str:
    """``s`` with every non-printable character written as a Python escape (``\\x1b``, ``\\n``)."""
    s = str(s)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def lines(s: object) -> str:
    """``s`` with each line made safe by :func:`text`; the line breaks themselves are kept."""
    return "\n".join(text(line) for line in str(s).split("\n"))


def csv_cell(value: object) -> object:
    """A CSV cell that no spreadsheet evaluates as a formula; numbers pass unchanged."""
    if not isinstance(value, str):
        return value
    s = text(value)
    if s.startswith(_FORMULA_PREFIXES) and not _is_number(s):
        return "'" + s
    return s


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class _Writer:
    def __init__(self, f: SupportsWrite[str]) -> None:
        self._w = csv.writer(f, lineterminator="\n")

    def writerow(self, row: list[object]) -> object:
        return self._w.writerow([csv_cell(c) for c in row])


def csv_writer(f: SupportsWrite[str]) -> _Writer:
    """``csv.writer(f, lineterminator="\\n")`` whose cells go through :func:`csv_cell`."""
    return _Writer(f)
