"""``actaudit history CKPT... --calib DATA``: dead and saturated units over a training run."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from .common import audit_options, config_file, emit, inventory, say, write_file
from .config import config_option
from .options import (
    data_options,
    debug_option,
    force_option,
    format_option,
    html_option,
    model_options,
    output_option,
    quiet_option,
    threshold_options,
)


@click.command("history")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=True, readable=False))
@click.option(
    "--order",
    type=click.Choice(["name", "mtime"]),
    default="name",
    show_default=True,
    help="Training order of the checkpoints: file name with numbers compared as numbers "
    "(step-9 before step-10), or modification time.",
)
@model_options
@data_options
@threshold_options
@html_option("Also write an HTML page with the dead and saturated fractions plotted over training to FILE.")
@format_option
@output_option()
@force_option()
@quiet_option()
@debug_option
@config_option
def history(**kw: Any) -> None:
    """Audit each checkpoint of a training run on the same data: when units died, and whether they came back.

    Every checkpoint is loaded (with every trust check) and audited in turn; only the
    fractions per site and each unit's state are kept, so memory stays that of one audit.

    \b
    Examples:
      actaudit history runs/step-*.pt --arch net.py:build --calib val.npy
      actaudit history ckpt/*.onnx --calib val.npz --format csv -o history.csv
      actaudit history ckpt/*.pt2 --calib val.npy --html history.html --order mtime
    """
    from ..api import audit as run_audit
    from ..history import History, order_checkpoints

    paths = order_checkpoints(list(kw["checkpoints"]), kw["order"])
    inv = inventory({**kw, "model": None})
    for p in paths:
        inv.add_model("checkpoint", p)
    inv.check(bool(kw["force"]))
    config_file(kw["quiet"])
    opts = audit_options(kw)
    hist = History()
    with _reuse(kw):
        for i, p in enumerate(paths):
            if not kw["quiet"]:
                say(f"actaudit: [{i + 1}/{len(paths)}] {p}")
            report = run_audit(p, options=opts)
            hist.add(_label(p, paths), report, path=str(p))
            del report  # one report alive at a time
    if not kw["quiet"] and kw["fmt"] != "table":
        for w in hist.warnings:
            say(f"actaudit: warning: {w}")
    emit(hist.render(kw["fmt"]), kw["output"], kw["force"])
    if kw["html"]:
        from ..report.history import render_html

        write_file("html", render_html(hist.to_dict()), kw)


def _reuse(kw: dict[str, Any]) -> Any:
    """With --arch, one module built once takes every state_dict's weights in turn."""
    if not kw["arch"]:
        return contextlib.nullcontext()
    from ..backends.torch.load import reusing_arch_models

    return reusing_arch_models()


def _label(p: str, paths: list[str]) -> str:
    """The checkpoint's file name, or its path where two checkpoints share a name."""
    name = Path(p).name
    return name if sum(Path(q).name == name for q in paths) == 1 else str(p)
