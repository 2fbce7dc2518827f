"""The ``actaudit`` command line: a thin layer over :mod:`actaudit.api`.

One module per subcommand (:mod:`.audit`, :mod:`.history`, :mod:`.inspect`, :mod:`.rewrite`, :mod:`.prune`,
:mod:`.merge`), their shared option groups in :mod:`.options`, what they do alike in
:mod:`.common`, ``--config`` in :mod:`.config`. This module holds the group: user errors
become one line and their exit code, bugs exit 3. stdout carries only the report; logs,
warnings and progress go to stderr. No torch import happens on a ``--help`` path.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from .._version import __version__
from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, ActauditError
from ..fileio import Terminated
from . import audit, history, inspect, merge, prune, rewrite
from .common import say
from .config import register_commands
from .interrupts import SigintWatch
from .options import FORMATS


class _Group(click.Group):
    """Turns user errors into one line (exit 2), Ctrl-C into 130 and bugs into exit 3.

    Every line printed here goes through :func:`.common.say`, which escapes control
    characters: messages quote names read from files (node names, member names).
    """

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv
        with SigintWatch() as watch:
            try:
                return super().invoke(ctx)
            except ActauditError as e:
                if watch.interrupted(e):
                    _say_interrupted(ctx)
                if not getattr(e, "silent", False):  # another torchrun rank's failure, shown by rank 0
                    say(f"actaudit: error: {e.one_line()}")
                ctx.exit(e.exit_code)
            except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
                raise
            except KeyboardInterrupt:
                _say_interrupted(ctx)
            except Exception as e:
                if watch.interrupted(e):
                    _say_interrupted(ctx)
                if debug:
                    traceback.print_exc()
                say(
                    f"actaudit: internal error: {type(e).__name__}: {e}"
                    + ("" if debug else " (rerun with --debug for a traceback, and please report it)"),
                )
                ctx.exit(EXIT_INTERNAL)


def _say_interrupted(ctx: click.Context) -> None:
    say("actaudit: interrupted; no output was written")
    ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="actaudit")
def cli() -> None:
    """Audit trained checkpoints for dead and saturated units.

    \b
    Examples:
      actaudit audit model.pt2 --calib images.npy
      actaudit audit model.onnx --calib batch.npz --format json --fail-on 'dead-fraction>0.2'
      actaudit audit weights.pt --arch mynet.py:build --calib images.npy

    Exit codes: 0 ok, 1 a --fail-on gate failed, 2 usage or input error,
    3 internal error, 130 interrupted.
    """


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="actaudit", standalone_mode=True)
    except KeyboardInterrupt:
        say("actaudit: interrupted; no output was written")
        sys.exit(EXIT_INTERRUPTED)
    except Terminated as e:
        say("actaudit: terminated (SIGTERM); no output was written")
        sys.exit(e.code)


for _command in (audit.audit, inspect.inspect, rewrite.rewrite, prune.prune, merge.merge, history.history):
    cli.add_command(_command)
register_commands(cli)  # --config checks a file's keys against the options of every command

__all__ = ["EXIT_USAGE", "FORMATS", "cli", "main"]
