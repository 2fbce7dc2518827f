"""Defaults and gates from ``[tool.actaudit]`` in ``pyproject.toml`` or from ``actaudit.toml``.

Keys are the long option names of the ``actaudit`` commands, with dashes or underscores::

    [tool.actaudit]
    fail-on = ["dead-fraction>0.2", "encoder.*:saturated-fraction>0.1"]
    batch-size = 64
    calib = "data/calib.npy"        # relative paths are relative to this file
    unit-axis = ["encoder.*=-1"]

Flags on the command line override the file (the file only supplies click's
``default_map``). The file is the first of ``actaudit.toml`` or a ``pyproject.toml``
with a ``[tool.actaudit]`` table, searched from the working directory upwards, or
the file given with ``--config``. Outputs a file names (``html``, ``junit``) must be
relative paths inside its folder. Types are checked strictly against the option
(``batch-size = "64"`` is an error, not a silent conversion), and every error names
the file and the key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as "tomli" (a dependency there)
    import tomli as tomllib

CONFIG_FILE = "actaudit.toml"
PYPROJECT = "pyproject.toml"
# Options that describe one run rather than a project's policy: not read from a file.
NOT_CONFIGURABLE = frozenset(
    {"model", "reports", "output", "report", "force", "debug", "help", "version", "config"}
)
# Consent to run code from a checkpoint is given per run, on the command line: a file
# checked into a repository must not be able to give it for whoever runs actaudit there.
# The same holds for options that name code to import and run (--arch, --data-loader).
COMMAND_LINE_ONLY = frozenset({"trust_pickle", "trust_code", "arch", "data_loader"})
# Options whose value is a path (or FILE.py:NAME), resolved relative to the config file.
PATH_KEYS = frozenset({"calib", "against", "html", "junit", "data_loader", "arch"})
# Outputs a config file may name: relative paths inside the config file's folder only. A file
# found above the working directory (or checked into a repository) must not be able to point
# the writer at ~/.bashrc or ../other-project; the command line can name any path.
OUTPUT_KEYS = frozenset({"html", "junit"})
MAX_CONFIG_BYTES = 1 << 20
CONFIG_META = "actaudit.config_file"  # click context meta key: the config file a command used
SOURCE_KEY = "__file__"  # where a loaded config came from, kept next to the values

F = TypeVar("F", bound=Callable[..., object])


def find_config(start_dir: str | os.PathLike[str]) -> Path | None:
    """The nearest ``actaudit.toml``, or ``pyproject.toml`` with ``[tool.actaudit]``, at or above ``start_dir``."""
    here = Path(start_dir).resolve()
    for d in (here, *here.parents):
        own = d / CONFIG_FILE
        if own.is_file():
            return own
        pyproject = d / PYPROJECT
        if pyproject.is_file() and "actaudit" in _read_toml(pyproject).get("tool", {}):
            return pyproject
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise InputError(f"cannot read config file {path}: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InputError(f"config file {path} is over {MAX_CONFIG_BYTES >> 10} KiB: not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config file {path} is not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested inline array or table
        raise InputError(f"config file {path} nests arrays or tables too deeply") from None


def _table(path: Path) -> dict[str, Any]:
    data = _read_toml(path)
    if path.name != PYPROJECT:
        return data
    table = data.get("tool", {}).get("actaudit")
    if table is None:
        raise InputError(f"config file {path} has no [tool.actaudit] table")
    if not isinstance(table, dict):
        raise InputError(f"config file {path}: tool.actaudit must be a table")
    return table


_COMMANDS: list[click.Command] = []  # every subcommand, set by actaudit.cli when it builds its group


def register_commands(group: click.Group) -> None:
    """Check config keys against the options of ``group``'s commands (the package's CLI calls this)."""
    _COMMANDS[:] = list(group.commands.values())


def _reference() -> list[click.Command]:
    if not _COMMANDS:  # pragma: no cover - importing this module runs actaudit/cli/__init__.py first
        raise RuntimeError("actaudit.cli has not registered its commands")
    return _COMMANDS


def _options(*commands: click.Command) -> dict[str, click.Parameter]:
    """Long option name with underscores (``batch_size``) → its click parameter (the first command's wins)."""
    out: dict[str, click.Parameter] = {}
    for command in reversed(commands):
        for p in command.params:
            if not isinstance(p, click.Option):
                continue
            for opt in p.opts:
                if opt.startswith("--"):
                    key = opt[2:].replace("-", "_")
                    if key not in NOT_CONFIGURABLE | COMMAND_LINE_ONLY and p.name not in NOT_CONFIGURABLE:
                        out[key] = p
    return out


def _names(commands: list[click.Command]) -> str:
    names = [str(c.name) for c in commands]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def load_config(
    start_dir: str | os.PathLike[str] | None = None,
    explicit_path: str | os.PathLike[str] | None = None,
    *,
    command: click.Command | None = None,
) -> dict[str, Any]:
    """The checked settings, keyed by option name with underscores; ``{}`` when there is no file.

    ``explicit_path`` (``--config``) wins over the search from ``start_dir`` (default:
    the working directory). The result also holds the file's path under ``"__file__"``.
    Values are checked against ``command``'s options (default: those of every ``actaudit``
    command, so that one file serves them all; each command takes the keys it has).
    """
    if explicit_path is not None:
        path = Path(explicit_path)
        if not path.is_file():
            raise InputError(f"config file {path} does not exist", hint="check the --config path")
    else:
        found = find_config(Path.cwd() if start_dir is None else start_dir)
        if found is None:
            return {}
        path = found
    table = _table(path)
    commands = [command] if command is not None else _reference()
    options = _options(*commands)
    out: dict[str, object] = {SOURCE_KEY: str(path)}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        param = options.get(key)
        where = f"config file {path}: key {raw_key!r}"
        if key in COMMAND_LINE_ONLY:
            raise InputError(
                f"{where} cannot be set in a config file",
                hint=f"pass --{key.replace('_', '-')} on the command line",
            )
        if param is None:
            known = ", ".join(sorted(k.replace("_", "-") for k in options))
            raise InputError(
                f"{where} is not an option of actaudit {_names(commands)}", hint=f"known keys: {known}"
            )
        if key in out:
            raise InputError(f"{where} is given twice (with dashes and with underscores)")
        value = _check(where, param, value)
        if key in OUTPUT_KEYS:
            _inside(where, path.parent, value)
        if key in PATH_KEYS:
            value = _resolve(path.parent, value)
        out[key] = value
    return out


def _inside(where: str, base: Path, value: object) -> None:
    """Refuse an output named by a config file outside that file's folder."""
    if not isinstance(value, str) or not value:
        return
    p = Path(value)
    if p.is_absolute() or value.startswith("~") or ".." in p.parts:
        raise InputError(
            f"{where}: {value!r} leaves the config file's folder; a config file names outputs inside its folder only",
            hint="give a relative path without '..', or pass the path on the command line",
        )
    real_base = os.path.realpath(base)
    real = os.path.realpath(base / p)
    if os.path.commonpath([real_base, real]) != real_base:
        raise InputError(
            f"{where}: {value!r} resolves to {real}, outside the config file's folder (a symbolic link?)",
            hint="pass the path on the command line",
        )


def _kind(param: click.Parameter) -> tuple[str, Callable[[object], bool]]:
    t = param.type
    if isinstance(param, click.Option) and param.is_flag:
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(t, (click.types.IntParamType, click.IntRange)):
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(t, (click.types.FloatParamType, click.FloatRange)):
        return "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    return "a string", lambda v: isinstance(v, str)


def _check(where: str, param: click.Parameter, value: object) -> object:
    what, ok = _kind(param)
    if param.multiple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(ok(v) for v in value):
            raise InputError(f"{where} must be a list of {what.split(' ', 1)[1]}s, got {_show(value)}")
        return [_convert(where, param, v) for v in value]
    if not ok(value):
        raise InputError(f"{where} must be {what}, got {_show(value)}")
    return _convert(where, param, value)


def _convert(where: str, param: click.Parameter, value: object) -> object:
    """Let the option's own type check ranges and choices, with the file named in the message."""
    if isinstance(param, click.Option) and param.is_flag:
        return value
    try:
        return param.type.convert(value, param, None)
    except click.BadParameter as e:
        raise InputError(f"{where}: {e.message}") from None


def _show(value: object) -> str:
    return f"{type(value).__name__} {value!r:.60}"


def _resolve(base: Path, value: object) -> object:
    if isinstance(value, list):
        return [_resolve(base, v) for v in value]
    if not isinstance(value, str) or not value:
        return value
    # FILE.py:NAME (--arch, --data-loader): only the file part is a path; MODULE:NAME stays as is.
    head, sep, tail = value.rpartition(":")
    if sep and (head.endswith(".py") or os.sep in head):
        return f"{_resolve(base, head)}{sep}{tail}"
    if sep and not head.endswith(".py"):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def default_map(config: dict[str, Any], command: click.Command) -> dict[str, Any]:
    """click's ``default_map`` for ``command``: parameter names → values, for the options it has.

    Keys that ``command`` lacks are left out, so one file can serve ``audit``, ``inspect``,
    ``rewrite``, ``prune`` and ``merge``, which share some options.
    """
    options = _options(command)
    return {options[k].name: v for k, v in config.items() if k in options and options[k].name}


def _apply(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if ctx.resilient_parsing:  # shell completion: never fail, never read files
        return
    if value == "":  # --config '' turns the search off (a CI job that must ignore a stray file)
        return
    try:
        cfg = load_config(Path.cwd(), value)
    except InputError as e:
        from ..sanitize import lines

        raise click.BadParameter(lines(e.one_line()), ctx=ctx, param_hint="--config") from None
    if cfg:
        ctx.meta[CONFIG_META] = cfg[SOURCE_KEY]  # the JSON run section and stderr name it
        ctx.default_map = {**default_map(cfg, ctx.command), **(ctx.default_map or {})}


def config_option(f: F) -> F:
    """``--config FILE``: an eager option that loads the file before the other options are read."""
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_apply,
        metavar="FILE",
        help="Read defaults and gates from FILE ([tool.actaudit] of a pyproject.toml, or an actaudit.toml). "
        "Default: the nearest such file above the working directory; --config '' reads none. Flags override it.",
    )(f)
