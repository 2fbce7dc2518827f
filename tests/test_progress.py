"""The progress line: drawn on a terminal only, silent when quiet or piped, driven by the audit."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch

import actaudit
from actaudit.progress import BAR_WIDTH, Progress, progress_for


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_draws_a_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    tty, clock = FakeTTY(), Clock()
    with Progress(100, stream=tty, clock=clock, min_interval=0) as p:
        clock.t += 1.0
        p(25)
        assert tty.getvalue() == "\rcalibrating [#####---------------] 25/100 samples  25% 1.0s, 3.0s left"
        clock.t += 3.0
        p(75)
    out = tty.getvalue()
    last = out.rsplit("\r", 1)[1]
    assert last.rstrip(" \n") == "calibrating [" + "#" * BAR_WIDTH + "] 100/100 samples 100% 4.0s"
    assert out.count("\r") == 2 and out.endswith("\n") and out.count("\n") == 1


def test_silent_when_quiet_or_not_a_terminal() -> None:
    for stream, quiet in ((FakeTTY(), True), (io.StringIO(), False)):
        with Progress(10, stream=stream, quiet=quiet, min_interval=0) as p:
            p(5)
            p(5)
        assert stream.getvalue() == ""
        assert p.done == 10 and p.steps == 2  # it still counts


def test_unknown_total_shows_a_count() -> None:
    tty, clock = FakeTTY(), Clock()
    p = Progress(None, stream=tty, clock=clock, min_interval=0)
    p(32)
    p(32)
    assert tty.getvalue().endswith("\rcalibrating: 64 samples, 2 batches, 0.0s")
    p.set_total(128)
    p(64)
    assert "128/128" in tty.getvalue()


def test_redraws_are_throttled_but_the_last_state_is_drawn() -> None:
    tty, clock = FakeTTY(), Clock()
    p = Progress(1000, stream=tty, clock=clock, min_interval=0.5)
    for _ in range(9):
        clock.t += 0.1
        p(100)
    assert tty.getvalue().count("\r") == 2  # the first call, then once 0.5 s had passed
    p(100)  # the total is reached: always drawn
    assert tty.getvalue().count("\r") == 3
    p.close()
    p.close()
    assert tty.getvalue().count("\n") == 1


def test_a_shorter_line_blanks_the_rest_of_the_longer_one() -> None:
    tty, clock = FakeTTY(), Clock()
    p = Progress(10, stream=tty, clock=clock, min_interval=0)
    clock.t += 1
    p(1)  # ", … left" makes this line longer than the final one
    long_line = tty.getvalue()
    p(9)
    last = tty.getvalue()[len(long_line) :]
    assert len(last) == len(long_line)


def test_close_without_drawing_writes_nothing() -> None:
    tty = FakeTTY()
    Progress(10, stream=tty).close()
    assert tty.getvalue() == ""


def test_progress_for_uses_stderr() -> None:
    p = progress_for(5, quiet=False)
    assert p.stream is sys.stderr and p.total == 5


def test_the_audit_calls_it_once_per_batch() -> None:
    tty = FakeTTY()
    p = Progress(None, stream=tty, min_interval=0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    actaudit.audit(m, np.zeros((10, 3), np.float32), batch_size=4, progress=p)
    p.close()
    assert (p.done, p.steps) == (10, 3)
    # the audit tells the reporter its total up front, so it draws a bar
    assert "\rcalibrating [####################] 10/10 samples 100%" in tty.getvalue()


def test_stages_share_one_line_and_restart_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    tty, clock = FakeTTY(), Clock()
    with Progress(None, stream=tty, clock=clock, min_interval=0) as p:
        p.stage("loading the model")
        assert tty.getvalue() == "\rloading the model… 0.0s"  # drawn at once: a slow load shows
        clock.t += 2.0
        p.stage("calibrating", 10)
        p(10)
    out = tty.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")
    last = out.rsplit("\r", 1)[1].rstrip(" \n")
    assert last == "calibrating [" + "#" * BAR_WIDTH + "] 10/10 samples 100% 0.0s"  # timed from its stage
