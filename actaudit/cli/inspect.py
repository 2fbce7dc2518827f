"""``actaudit inspect MODEL``: the activation sites an audit would cover, and the model's inputs.

No calibration data is needed. Sites are found the way the audit finds them, by one
forward pass on a single synthetic sample (``--input-shape`` where the model does not
declare its shapes; a ``torch.export`` program with a fixed batch gets one full
batch), so the names and order match ``actaudit audit`` exactly. Only structure is
shown: the pass's statistics are thrown away.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from ..sanitize import csv_writer, text

INSPECT_SCHEMA = "actaudit.inspect/1"
FORMATS = (
    "table",
    "json",
    "csv",
    "markdown",
)  # the audit's (cli.FORMATS); not imported, to keep the cycle out


@dataclass
class Inspection:
    """What :func:`inspect_model` found; ``to_dict()`` is the JSON output."""

    model: dict[str, Any]
    inputs: list[dict[str, Any]]
    sites: list[dict[str, Any]]
    uncovered: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    probe: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from .._version import __version__

        return {
            "schema": INSPECT_SCHEMA,
            "tool": {"name": "actaudit", "version": __version__},
            "model": self.model,
            "inputs": self.inputs,
            "sites": self.sites,
            "uncovered": self.uncovered,
            "notes": self.notes,
            "probe": self.probe,
            "facts": self.facts,
        }

    def render(self, fmt: str = "table") -> str:
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        if fmt == "csv":
            return _csv(self)
        if fmt in ("table", "markdown"):
            return _tables(self, fmt)
        raise ValueError(f"unknown format {fmt!r}")


def inspect_model(
    model: Any,
    *,
    input_shapes: Sequence[str] = (),
    unit_axis: Sequence[str] = (),
    seed: int = 0,
    val_range: tuple[float, float] | None = None,
    **load_options: Any,
) -> Inspection:
    """Sites and inputs of ``model`` (a path, ``nn.Module`` or ``onnx.ModelProto``).

    ``load_options`` are the loading fields of :class:`actaudit.api.AuditOptions`
    (``arch``, ``state_key``, ``trust_pickle``, ``device``, ``provider``, ``threads``).
    """
    from ..api import AuditOptions, data_source, load_model
    from ..kinds import family

    opts = AuditOptions(
        samples=1,
        batch_size=1,
        input_shapes=tuple(input_shapes),
        unit_axis=tuple(unit_axis),
        seed=seed,
        val_range=val_range,
        **load_options,
    )
    from ..api import _backend_module
    from ..errors import InputError

    loaded = load_model(model, opts)
    facts = _backend_module(loaded.backend).model_facts(loaded.handle)
    fixed = getattr(loaded.handle, "fixed_batch", None)
    if fixed:
        opts.samples = opts.batch_size = int(fixed)
    try:
        source = data_source(None, loaded, opts)
        cap = loaded.capture(source, opts)
    except InputError as e:
        # The shared messages suggest audit's data options; inspect takes only --input-shape / --val-range.
        if e.hint:
            e.hint = e.hint.replace(", or give --calib", "").replace(" or give --calib", "")
            e.hint = e.hint.replace("pass --calib or --data-loader", "pass --input-shape")
        raise
    sites = []
    for i, s in enumerate(cap.sites):
        info = s.info
        sites.append(
            {
                "index": i,
                "name": info.name,
                "op": info.op,
                "kind": info.kind,
                "family": family(info.kind).value,
                "module": info.module,
                "params": {k: float(v) for k, v in sorted(info.params.items())},
                "unit_axis": info.unit_axis,
                "unit_axis_source": info.unit_axis_source,
                "units": info.units,
                "sample_shape": list(info.sample_shape),
            }
        )
    inputs = cap.inputs or [spec.to_dict() for spec in loaded.inputs]
    return Inspection(
        model={"path": loaded.path, "format": loaded.fmt, "sha256": loaded.sha256},
        inputs=inputs,
        sites=sites,
        uncovered=[u.to_dict() for u in cap.uncovered],
        notes=list(loaded.notes) + list(cap.warnings),
        facts=facts,
        probe=f"found by one forward pass of {cap.samples} sample{'' if cap.samples == 1 else 's'} ({source.description})",
    )


def _shape(shape: Any) -> str:
    return "?" if shape is None else "×".join("?" if d is None else str(d) for d in shape) or "scalar"


def _facts_line(f: dict[str, Any]) -> str:
    """One line like Polygraphy's model summary: producer, IR/opsets, node and initializer counts."""
    parts = []
    if f.get("producer"):
        parts.append(f"producer {f['producer']}")
    if f.get("ir_version") is not None:
        parts.append(f"IR {f['ir_version']}")
    if f.get("opsets"):
        parts.append("opset " + ", ".join(f"{d} {v}" for d, v in f["opsets"].items()))
    if f.get("nodes") is not None:
        parts.append(f"{f['nodes']} nodes")
    if f.get("initializers") is not None:
        parts.append(f"{f['initializers']} initializers")
    if f.get("parameters") is not None:
        parts.append(f"{f['parameters']:,} parameters")
    return " · ".join(parts)


def _tables(ins: Inspection, fmt: str) -> str:
    from tabulate import tabulate

    tablefmt = "github" if fmt == "markdown" else "simple"
    m = ins.model
    title = text(f"{m.get('path') or 'in-memory model'} [{m.get('format')}]")
    out = [f"**{title}**" if fmt == "markdown" else title]
    line = _facts_line(ins.facts)
    if line:
        out.append(line)
    out.append("")
    declared = ins.facts.get("inputs")
    # Declared inputs keep their symbolic dims (batch, n); the probe's shapes fill in the rest.
    inputs = declared if declared and any(i.get("shape") for i in declared) else ins.inputs
    for label, items in (("input", inputs), ("output", ins.facts.get("outputs") or [])):
        if not items:
            continue
        out.append(
            tabulate(
                [[text(i["name"]), _shape(i.get("shape")), i.get("dtype")] for i in items],
                headers=[label, "shape", "dtype"],
                tablefmt=tablefmt,
                disable_numparse=True,
            )
        )
        out.append("")
    rows = [
        [
            s["index"],
            text(s["name"]),  # names come from the file: no terminal escapes
            text(s["op"]),
            s["kind"],
            s["unit_axis"],
            s["units"],
            _shape(s["sample_shape"]),
            text(s["module"]),
        ]
        for s in ins.sites
    ]
    out.append(
        tabulate(
            rows,
            headers=["#", "site", "op", "kind", "unit axis", "units", "activation shape", "module"],
            tablefmt=tablefmt,
            disable_numparse=True,
        )
        if rows
        else "no activation call sites found"
    )
    total = sum(s["units"] for s in ins.sites)
    lines = [f"{len(ins.sites)} sites, {total} units; {ins.probe}"]
    lines += [f"not covered: {u['name']} ({u['op']}): {u['reason']}" for u in ins.uncovered]
    lines += [f"note: {n}" for n in ins.notes]
    lines = [text(x) for x in lines]
    out.append("")
    out += [f"- {x}" for x in lines] if fmt == "markdown" else lines
    return "\n".join(out) + "\n"


def _csv(ins: Inspection) -> str:
    buf = io.StringIO()
    w = csv_writer(buf)  # names neutralised: no formulas, no control characters
    cols = ["index", "name", "op", "kind", "family", "unit_axis", "units", "sample_shape", "module"]
    w.writerow(cols)
    for s in ins.sites:
        w.writerow([*(s[c] for c in cols[:-2]), "x".join(map(str, s["sample_shape"])), s["module"]])
    return buf.getvalue()


def inspect_command(model_options: Callable[[Callable[..., Any]], Callable[..., Any]]) -> click.Command:
    """The ``inspect`` click command, given the CLI's model-loading option bundle.

    A factory rather than a module-level command so that ``cli.py`` can register it
    without an import cycle (``cli.py`` imports this module; this module needs its options).
    """

    from . import _val_range as _val_range_option

    @click.command("inspect")
    @click.argument("model", type=click.Path(dir_okay=True))
    @model_options
    @click.option(
        "--input-shape",
        "input_shapes",
        multiple=True,
        metavar="[NAME=]DIMS[:DTYPE]",
        help="Shape (and dtype) of the synthetic probe input, e.g. 1x3x224x224 or input_ids=1x128:int64 "
        "(the leading dim is the batch axis).",
    )
    @click.option(
        "--val-range",
        metavar="LOW,HIGH",
        callback=_val_range_option,
        help="Draw synthetic values uniformly from [LOW, HIGH] (integers for integer inputs: token ids), "
        "e.g. 0,30521. Default: standard normal floats, 0/1 integers.",
    )
    @click.option(
        "--unit-axis",
        multiple=True,
        metavar="SITE_GLOB=AXIS",
        help="Override the unit axis of matching sites, as in audit, to check the override before a run.",
    )
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
    @click.option(
        "-o", "--output", type=click.Path(dir_okay=False), help="Write the listing here (atomically)."
    )
    @click.option("--force", is_flag=True, help="Overwrite an existing output file.")
    @click.option("-q", "--quiet", is_flag=True, help="No notes on stderr.")
    @click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
    def inspect_cmd(**kw: Any) -> None:
        """List MODEL's activation sites (op, kind, unit axis, units) and inputs, without calibration data.

        Site names and order are those of `actaudit audit`: use them in --fail-on site
        globs and --unit-axis overrides before running an audit.

        \b
        Examples:
          actaudit inspect model.pt2
          actaudit inspect model.ts --input-shape 1x3x224x224
          actaudit inspect model.onnx --format json | jq '.sites[].name'
        """
        from . import _check_output, _emit

        _check_output(kw["output"], kw["force"], kw["model"])
        ins = inspect_model(
            kw["model"],
            input_shapes=kw["input_shapes"],
            unit_axis=kw["unit_axis"],
            val_range=kw["val_range"],
            arch=kw["arch"],
            state_key=kw["state_key"],
            trust_pickle=kw["trust_pickle"],
            trust_code=kw["trust_code"],
            strip_prefix=kw["strip_prefix"],
            non_strict=kw["non_strict"],
            device=kw["device"],
            provider=kw["provider"],
            threads=kw["threads"],
        )
        if not kw["quiet"] and kw["fmt"] != "table":
            for n in ins.notes:
                click.echo(f"actaudit: note: {n}", err=True)
        _emit(ins.render(kw["fmt"]), kw["output"], kw["force"])

    return inspect_cmd
