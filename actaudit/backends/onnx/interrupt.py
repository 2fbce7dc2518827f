"""onnxruntime runs that Ctrl-C stops at once.

Python runs signal handlers only between bytecodes of the main thread, and a long
``InferenceSession.run`` keeps the main thread inside C++ for its whole duration: a
Ctrl-C was ignored for 30 s and more. Here the run happens on a worker thread while
the main thread waits on it in short joins, with a SIGINT handler that sets
``RunOptions.terminate`` (onnxruntime checks it between kernels and inside Loop
iterations); once the worker has stopped, KeyboardInterrupt is raised in the main
thread. Raising it from the handler instead, in the middle of a join, made the
process abort at exit ("terminate called without an active exception").
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import numpy as np
import onnxruntime as ort


def run_interruptible(
    sess: ort.InferenceSession, names: list[str] | None, feeds: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """``sess.run(names, feeds)``, stopped promptly by Ctrl-C (raised here as KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        return sess.run(names, feeds)  # signals only reach the main thread anyway
    options = ort.RunOptions()
    options.log_severity_level = 4  # the "terminate flag" error is expected: not printed
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = sess.run(names, feeds, options)
        except BaseException as e:  # handed to the main thread
            result["error"] = e

    interrupted: list[int] = []

    def on_sigint(signum: int, _frame: FrameType | None) -> None:
        interrupted.append(signum)
        options.terminate = True

    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        return sess.run(names, feeds)  # someone else handles Ctrl-C: leave it to them
    worker = threading.Thread(target=work, name="actaudit-onnxruntime", daemon=True)
    signal.signal(signal.SIGINT, on_sigint)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt
    if "error" in result:
        raise result["error"]
    return result["value"]
