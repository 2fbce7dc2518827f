"""Terminal concerns of the text renderings: bars, colours, widths, names elided to fit."""

from __future__ import annotations

import re

BAR_WIDTH = 10
MIN_SITE_WIDTH = 12


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A fixed-width bar: '█' for the bad fraction, '·' for the rest."""
    filled = round(fraction * width)
    if fraction > 0 and filled == 0:
        filled = 1
    return "█" * filled + "·" * (width - filled)


def paint(text: str, fraction: float, color: bool) -> str:
    if not color or fraction <= 0:
        return text
    import click

    return click.style(text, fg="red" if fraction >= 0.5 else "yellow", bold=fraction >= 0.5)


def elide(name: str, width: int) -> str:
    """``name`` cut to ``width`` characters, keeping what tells sites apart.

    Module paths first lose the letters of their inner components (``encoder.layers.3.act``
    → ``e.l.3.act``: indices and the last component stay), then the middle of what is left.
    """
    if len(name) <= width:
        return name
    parts = re.split(r"([./])", name)
    words = [i for i in range(0, len(parts) - 1, 2) if parts[i] and not parts[i].isdigit()]
    for i in words:  # left to right: the outer scopes are the least specific
        parts[i] = parts[i][0]
        if len("".join(parts)) <= width:
            return "".join(parts)
    short = "".join(parts)
    prefix = "".join(parts[:-1])
    if len(prefix) + 4 <= width:
        return prefix + cut_middle(parts[-1], width - len(prefix))
    return cut_middle(short if len(short) < len(name) else name, width)


def cut_middle(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def wrap(line: str, width: int) -> list[str]:
    import textwrap

    if len(line) <= width:
        return [line]
    return textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False) or [line]


def table_width(wide: bool, to_file: bool) -> int | None:
    """The width the table must fit: the terminal's (``COLUMNS`` first) when stdout is one, else none."""
    import shutil
    import sys

    if wide or to_file:
        return None
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return None
    return max(shutil.get_terminal_size((80, 24)).columns, 40)
