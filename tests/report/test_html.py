"""The HTML report: well-formed, self-contained, and its numbers are the JSON report's."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from pngread import png_rgb as _png_rgb
from torch import nn

import actaudit
from actaudit.report import Report
from actaudit.report.html import HIST_BINS, render_html

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "source", "track", "wbr"}
DEAD_RGB = (0xD6, 0x27, 0x28)  # --dead in the stylesheet


class Net(nn.Module):
    """Dead ReLU channels, a ReLU6, tanh units pushed into saturation, and a reused module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.cap = nn.ReLU6()
        self.fc = nn.Linear(8, 12)
        self.tanh = nn.Tanh()
        self.out = nn.Linear(12, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        x = self.cap(self.conv2(x))
        x = self.tanh(self.fc(x.mean((2, 3))))
        return self.act(self.out(x))  # the same ReLU module at a second call site


def _net() -> Net:
    torch.manual_seed(0)
    m = Net()
    with torch.no_grad():
        m.conv.bias[:3] = -50.0  # three dead channels
        m.fc.bias[:4] = 40.0  # four tanh units stuck high
        m.out.bias[:2] = -30.0  # two dead units at the second call of `act`
    return m


@pytest.fixture(scope="module")
def report() -> Report:
    x = np.random.default_rng(0).normal(size=(40, 3, 8, 8)).astype(np.float32)
    return actaudit.audit(_net(), x, fail_on=["dead>0", "tanh:saturated-fraction>0.5"], batch_size=16)


@pytest.fixture(scope="module")
def doc(report: Report) -> str:
    return render_html(report)


class _Balance(HTMLParser):
    """Checks that every non-void element is closed in order, as a browser would need no repair."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def test_report_fixture_has_what_the_html_must_show(report: Report) -> None:
    s = report.summary()
    assert s["dead"] >= 5 and s["saturated"] == 4
    assert [v.info.name for v in report.sites] == ["act#0", "cap", "tanh", "act#1"]
    assert not report.passed


def test_html_is_well_formed(doc: str) -> None:
    assert doc.startswith("<!DOCTYPE html>")
    p = _Balance()
    p.feed(doc)
    p.close()
    assert p.errors == [] and p.stack == []
    root = ET.fromstring(doc)  # the whole document is well-formed XML, SVG included
    assert root.tag == "html"
    svgs = list(root.iter("svg"))
    assert len(svgs) == 1 + 4  # the depth chart and one histogram per site
    for svg in svgs:
        ET.fromstring(ET.tostring(svg))


def test_html_is_self_contained(doc: str) -> None:
    assert not re.search(r"https?://", doc)
    assert "<script" not in doc and "<link" not in doc and "<img" not in doc
    assert not re.search(r"\b(src|href)\s*=", doc)
    assert not re.search(r"url\(|@import", doc)


def test_site_rows_match_the_json(report: Report, doc: str) -> None:
    d = report.to_dict()
    root = ET.fromstring(doc)
    rows = root.findall(".//tr[@class]")
    site_rows = [r for r in rows if r.get("class", "").startswith("site")]
    assert [r.get("data-site") for r in site_rows] == [s["name"] for s in d["sites"]]
    for row, s in zip(site_rows, d["sites"], strict=True):
        assert int(row.get("data-index", "")) == s["index"]
        assert int(row.get("data-units", "")) == s["units"]
        assert int(row.get("data-dead", "")) == s["dead"]
        assert int(row.get("data-saturated", "")) == s["saturated"]
        assert int(row.get("data-rarely-firing", "")) == s["rarely_firing"]
        assert float(row.get("data-dead-fraction", "")) == s["dead_fraction"]
        assert float(row.get("data-saturated-fraction", "")) == s["saturated_fraction"]
        assert ("bad" in row.get("class", "")) == bool(s["dead"] or s["saturated"])
    totals = root.find(".//tr[@id='totals']")
    assert totals is not None
    assert int(totals.get("data-dead", "")) == d["summary"]["dead"] == sum(s["dead"] for s in d["sites"])
    assert int(totals.get("data-units", "")) == d["summary"]["units"]


def test_summary_cards_and_gates_match_the_json(report: Report, doc: str) -> None:
    d = report.to_dict()
    root = ET.fromstring(doc)
    cards = {c.get("data-key"): c.get("data-value") for c in root.iter("div") if c.get("data-key")}
    for key in (
        "sites",
        "units",
        "dead",
        "saturated",
        "rarely_firing",
        "never_positive",
        "nonfinite",
        "uncovered",
    ):
        assert int(cards[key] or "") == d["summary"][key], key
    gates = [
        (r.get("data-gate"), r.get("data-passed"), float(r.get("data-value", "")))
        for r in root.iter("tr")
        if r.get("data-gate")
    ]
    assert gates == [(g["gate"], str(g["passed"]).lower(), g["value"]) for g in d["gates"]]
    assert root.find(".//*[@id='gate-status']") is not None
    body = root.find("body")
    assert body is not None and body.get("data-passed") == "false"


def test_depth_chart_bars_carry_the_fractions(report: Report, doc: str) -> None:
    d = report.to_dict()
    chart = ET.fromstring(doc).find(".//svg[@id='depth-chart']")
    assert chart is not None and int(chart.get("data-sites", "")) == len(d["sites"])
    dead = {int(r.get("data-index", "")): r for r in chart.iter("rect") if r.get("class") == "dead"}
    sat = {int(r.get("data-index", "")): r for r in chart.iter("rect") if r.get("class") == "sat"}
    families = [s["family"] for s in d["sites"]]
    assert sorted(dead) == [i for i, f in enumerate(families) if f in ("rectifier", "capped")]
    assert sorted(sat) == [i for i, f in enumerate(families) if f in ("bounded", "capped")]
    for i, r in dead.items():
        assert int(r.get("data-dead", "")) == d["sites"][i]["dead"]
        assert float(r.get("data-value", "")) == d["sites"][i]["dead_fraction"]
    for i, r in sat.items():
        assert int(r.get("data-saturated", "")) == d["sites"][i]["saturated"]
    # bar heights are proportional to the fractions on one scale
    ymax = float(chart.get("data-ymax", ""))
    heights = {i: float(r.get("height", "")) for i, r in dead.items()}
    ratios = {round(h / (d["sites"][i]["dead_fraction"] / ymax), 1) for i, h in heights.items() if h}
    assert len(ratios) == 1


def test_histograms_count_every_unit(report: Report, doc: str) -> None:
    d = report.to_dict()
    shown = [s for s in ET.fromstring(doc).iter("svg") if s.get("class") == "hist"]
    # Shown worst first: by the union of dead and saturated units, counted here from the JSON.
    bad = [len(set(s["dead_units"]) | set(s["saturated_units"])) / s["units"] for s in d["sites"]]
    order = [int(h.get("data-index", "")) for h in shown]
    flagged_first = [bad[i] for i in order if bad[i] > 0]
    assert flagged_first == sorted(flagged_first, reverse=True)
    assert all(bad[i] > 0 for i in order[: len(flagged_first)])
    hists = sorted(shown, key=lambda h: int(h.get("data-index", "")))
    assert [h.get("data-site") for h in hists] == [s["name"] for s in d["sites"]]
    for h, s, v in zip(hists, d["sites"], report.sites, strict=True):
        counts = [int(c) for c in (h.get("data-counts") or "").split()]
        assert len(counts) == HIST_BINS
        flagged = int(h.get("data-flagged", ""))
        assert flagged == (s["dead"] if h.get("data-flag") == "dead" else s["saturated"])
        assert flagged + sum(counts) + int(h.get("data-nodata", "")) == s["units"]
        if h.get("data-flag") == "dead":  # the live units' fire rates, binned
            live = np.delete(v.fire_rate, v.dead_units)
            expected, _ = np.histogram(live, bins=HIST_BINS, range=(0, 1))
            assert counts == expected.tolist()
        assert len(list(h.iter("rect"))) == HIST_BINS + 1


def test_synthetic_data_is_flagged_in_the_header() -> None:
    real = actaudit.audit(_net(), np.zeros((2, 3, 8, 8), np.float32))
    synth = actaudit.audit(_net(), input_shapes=["1x3x8x8"], samples=4)
    assert "synthetic-warning" not in render_html(real)
    page = render_html(synth)
    assert 'id="synthetic-warning"' in page
    root = ET.fromstring(page)
    warnings = [li.text for li in root.iter("li") if li.get("class") == "warning"]
    assert warnings == synth.to_dict()["warnings"]


def test_text_is_escaped_and_empty_models_render() -> None:
    r = actaudit.audit(nn.Linear(3, 2), np.ones((4, 3), np.float32))
    assert r.sites == []
    r.model["path"] = "runs/<a&b>/model's.pt"
    page = render_html(r)
    root = ET.fromstring(page)
    assert "runs/<a&b>/model's.pt" in "".join(root.itertext())
    assert "No activation sites" in page


@pytest.mark.slow
def test_headless_chromium_draws_the_report(
    doc: str, tmp_path: Path, screenshot: Callable[..., None]
) -> None:
    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    page.write_text(doc, encoding="utf-8")
    screenshot(page, shot, (1000, 900))
    w, h, rgb = _png_rgb(shot)
    assert (w, h) == (1000, 900)
    colours = {tuple(p) for p in rgb[::7, ::7].reshape(-1, 3).tolist()}
    assert len(colours) > 20, "the page looks blank"
    non_white = (rgb.min(axis=2) < 240).mean()
    assert non_white > 0.02
    # the depth chart's dead bars and the histograms' dead bins are drawn in the --dead colour
    dead = (np.abs(rgb - np.array(DEAD_RGB)).max(axis=2) <= 3).sum()
    assert dead > 200


def test_baseline_section(report: Report) -> None:
    from actaudit.report.baseline import compare

    before = report.to_dict()
    before["sites"][0]["dead_units"] = before["sites"][0]["dead_units"][1:]  # one unit was alive before
    before["sites"][0]["dead"] -= 1
    before["sites"][0]["dead_fraction"] -= 1 / before["sites"][0]["units"]
    c = compare(report.to_dict(), before, baseline_path="runs/base.json")
    root = ET.fromstring(render_html(report, c))
    section = root.find(".//section[@id='baseline']")
    assert section is not None
    assert int(section.get("data-new-dead", "")) == c.new_dead == 1
    rows = [r for r in section.iter("tr") if r.get("data-site")]
    assert [(r.get("data-site"), r.get("data-new-dead")) for r in rows] == [(report.sites[0].info.name, "1")]
    assert "runs/base.json" in "".join(section.itertext())
    assert ET.fromstring(render_html(report)).find(".//section[@id='baseline']") is None
