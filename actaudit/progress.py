"""A progress line on stderr for calibration and the α search.

It draws only when its stream is a terminal and ``quiet`` is off, so a pipeline, a CI
log or ``2>file`` never receives carriage returns. It is a callable that takes the
number of samples (or steps) just finished: pass it as ``AuditOptions.progress``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

BAR_WIDTH = 20


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or exotic stream
        return False


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{seconds:.1f}s"


class Progress:
    """Counts finished samples and redraws one line, at most every ``min_interval`` seconds.

    ``total`` may be unknown (``None``): the line then shows a count, not a bar.
    Use it as a context manager, or call :meth:`close`, to end the line.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        label: str = "calibrating",
        unit: str = "samples",
        stream: TextIO | None = None,
        quiet: bool = False,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total if total and total > 0 else None
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not quiet and _is_tty(self.stream)
        self.min_interval = min_interval
        self.done = 0
        self.steps = 0
        self._clock = clock
        self._start = clock()
        self._last_draw: float | None = None
        self._drawn_done = -1
        self._width = 0  # characters of the last line drawn, to blank a shorter one
        self._closed = False

    def stage(self, label: str, total: int | None = None, unit: str | None = None) -> None:
        """Start a new step on the same line (``loading``, then ``calibrating``): counts restart.

        Drawn at once, so that a slow step without counts (loading a large model, building an
        onnxruntime session) still shows what is happening. Every long step of a command
        (audit's loading and calibration, rewrite's passes) can share one reporter this way.
        """
        self.label = label
        self.unit = unit or self.unit
        self.total = total if total and total > 0 else None
        self.done = 0
        self.steps = 0
        self._start = self._clock()
        if self.enabled and not self._closed:
            self._draw(self._start)

    def set_total(self, total: int | None) -> None:
        """Set the total once it is known (the data source knows it after the model is loaded)."""
        self.total = total if total and total > 0 else None

    def __call__(self, n: int) -> None:
        self.done += int(n)
        self.steps += 1
        if not self.enabled or self._closed:
            return
        now = self._clock()
        finished = self.total is not None and self.done >= self.total
        if finished or self._last_draw is None or now - self._last_draw >= self.min_interval:
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The text of the progress line (without the carriage return)."""
        elapsed = (self._clock() if now is None else now) - self._start
        if self.total is None and self.steps == 0:
            return f"{self.label}… {_duration(elapsed)}"
        if self.total is None:
            return f"{self.label}: {self.done} {self.unit}, {self.steps} batches, {_duration(elapsed)}"
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        text = f"{self.label} [{bar}] {self.done}/{self.total} {self.unit} {100 * frac:3.0f}% {_duration(elapsed)}"
        if 0 < frac < 1 and elapsed > 0:
            text += f", {_duration(elapsed * (1 - frac) / frac)} left"
        return text

    def _draw(self, now: float) -> None:
        cols = shutil.get_terminal_size((80, 24)).columns
        text = self.line(now)[: max(cols - 1, 10)]
        pad = " " * max(self._width - len(text), 0)
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._width = len(text)
        self._last_draw = now
        self._drawn_done = self.done

    def close(self) -> None:
        """Draw the final state and end the line; nothing if nothing was ever drawn."""
        if self._closed:
            return
        self._closed = True
        if self.enabled and self._last_draw is not None:
            if self._drawn_done != self.done:  # throttling skipped the last update
                self._draw(self._clock())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def progress_for(
    total: int | None, *, quiet: bool, label: str = "calibrating", unit: str = "samples"
) -> Progress:
    """The reporter the CLI hands to ``AuditOptions.progress``: live on a terminal, silent otherwise."""
    return Progress(total, label=label, unit=unit, quiet=quiet)
