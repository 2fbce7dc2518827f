"""Was this failure a Ctrl-C? SIGINT seen even where a library swallowed the KeyboardInterrupt.

Python raises KeyboardInterrupt at the next bytecode after SIGINT, but a C extension that is
being imported may catch it and fail with another error: a Ctrl-C during the first import of
onnxruntime ends as ``ImportError: import numpy failed``, with no trace of the interrupt.
:class:`SigintWatch` asks the interpreter to write every signal's number to a private pipe
(``signal.set_wakeup_fd``, which leaves the SIGINT handler itself alone: onnxruntime runs
install their own handler and check that the default one was in place), so that any error
that ends a run during which SIGINT arrived is reported as an interruption (exit 130).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading


class SigintWatch:
    """A context that records whether SIGINT arrived while it was active (main thread only)."""

    def __init__(self) -> None:
        self._pipe: tuple[int, int] | None = None
        self._previous = -1
        self._seen = False

    def __enter__(self) -> SigintWatch:
        if threading.current_thread() is not threading.main_thread():
            return self
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        try:
            self._previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except (ValueError, OSError):
            os.close(r)
            os.close(w)
            return self
        self._pipe = (r, w)
        return self

    def _drain(self) -> None:
        if self._pipe is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self._pipe[0], 4096):
                if signal.SIGINT in chunk:
                    self._seen = True

    def interrupted(self, error: BaseException | None = None) -> bool:
        """SIGINT arrived since :meth:`__enter__`, or ``error`` was caused by a KeyboardInterrupt."""
        seen: set[int] = set()
        e = error
        while e is not None and id(e) not in seen:
            if isinstance(e, KeyboardInterrupt):
                return True
            seen.add(id(e))
            e = e.__cause__ or e.__context__
        self._drain()
        return self._seen

    def __exit__(self, *exc: object) -> None:
        if self._pipe is None:
            return
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(self._previous)
        for fd in self._pipe:
            os.close(fd)
        self._pipe = None
