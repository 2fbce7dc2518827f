"""One exception family for user mistakes; everything else is a bug.

Exit codes (documented in docs/ci.md):

* 0 — ran, every gate passed
* 1 — ran, a gate failed (the report says which)
* 2 — usage or input error: bad flag, missing/unreadable/unsupported file, shape
  mismatch, refused pickle
* 3 — internal error (a bug; traceback with ``--debug``)
* 130 — interrupted (Ctrl-C); no partial output is left behind
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class ActauditError(Exception):
    """A user's mistake, shown as one line without a traceback."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class InputError(ActauditError):
    """A file or value the user gave cannot be used."""


class UntrustedPickleError(InputError):
    """The checkpoint needs arbitrary code execution to load and --trust-pickle was not given."""


class UntrustedCodeError(InputError):
    """A checkpoint carries code off the allowlist (TorchScript, torch.export) and --trust-code was not given."""


class CalibrationError(InputError):
    """Calibration data does not fit the model."""


class ModelRunError(InputError):
    """The model raised while running on the user's data."""
