"""Gate results for CI: JUnit XML (one testcase per gate) and one-line summaries on stderr.

JUnit is what GitLab, Jenkins, Azure and GitHub test-report actions all read. A gate
that failed is a ``<failure>``; the report's warnings go to ``<system-out>``. On
GitHub Actions (``GITHUB_ACTIONS=true``) failing gates also become ``::error::``
workflow commands, which the web page shows as annotations.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from .gates import GateResult
    from .report import Report

BASELINE_PREFIX = "against:"  # baseline comparisons are gates named like this (see baseline.py)


def _classname(g: GateResult) -> str:
    return "actaudit.baseline" if g.gate.text.startswith(BASELINE_PREFIX) else "actaudit.gates"


def _message(g: GateResult) -> str:
    where = f" at {', '.join(g.failing_sites[:10])}" if g.failing_sites else ""
    return f"{g.gate.text}: value {g.value:g}{where}"


def render_junit(report: Report) -> str:
    """A JUnit XML document with one testsuite (the model) and one testcase per gate."""
    model = str(report.model.get("path") or "in-memory model")
    failures = sum(1 for g in report.gates if g.failed)
    timings = cast(dict[str, float], report.run.get("timings_s", {})) if report.run else {}
    seconds = sum(float(v) for v in timings.values()) if timings else 0.0
    suites = ET.Element("testsuites", name="actaudit", tests=str(len(report.gates)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"actaudit audit {model}",
        tests=str(len(report.gates)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{seconds:.3f}",
    )
    for g in report.gates:
        case = ET.SubElement(suite, "testcase", classname=_classname(g), name=g.gate.text, time="0")
        if g.failed:
            failure = ET.SubElement(case, "failure", message=_message(g), type="GateFailed")
            failure.text = _message(g)
    if report.warnings:
        out = ET.SubElement(suite, "system-out")
        out.text = "\n".join(f"warning: {w}" for w in report.warnings)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _escape(text: str, *, prop: bool = False) -> str:
    """GitHub's workflow-command encoding: a message ends at a newline; a property also at ':' or ','."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def ci_summary(report: Report, environ: dict[str, str] | None = None) -> list[str]:
    """Lines for stderr: one summary line, plus ``::error::`` per failing gate on GitHub Actions."""
    env = os.environ if environ is None else environ
    failed = [g for g in report.gates if g.failed]
    passed = len(report.gates) - len(failed)
    model = report.model.get("path") or "in-memory model"
    head = f"actaudit: {model}: {passed} of {len(report.gates)} gates passed"
    if failed:
        head += "; failed: " + "; ".join(_message(g) for g in failed)
    lines = [head]
    if env.get("GITHUB_ACTIONS") == "true":
        for g in failed:
            title = _escape(f"actaudit gate {g.gate.text}", prop=True)
            lines.append(f"::error title={title}::{_escape(f'{model}: {_message(g)}')}")
    return lines
