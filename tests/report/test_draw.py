"""The one text renderer: the same cells drawn as table, markdown and CSV agree, cell by cell."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from actaudit.report.draw import Document, Lines, Table, capped, layout, pct, plain, render

HEADERS = ["site", "units", "state"]
ROWS: list[list[Any]] = [["conv1", 8, "dead"], ["layer2.fc", 16, "-"], ["head", 1000, "ok"]]
CELLS = [HEADERS, ["conv1", "8", "dead"], ["layer2.fc", "16", "-"], ["head", "1000", "ok"]]


class _Result:
    def __init__(self, doc: Document, data: dict[str, Any]) -> None:
        self.doc, self.data = doc, data

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def document(self) -> Document:
        return self.doc


def _result(csv_table: Table | None = None) -> _Result:
    doc = Document(
        "model.onnx [onnx]", [Table(HEADERS, ROWS), Lines(["first remark", "second remark"])], csv_table
    )
    return _Result(doc, {"schema": "x/1", "sites": 3})


def _table_cells(text: str) -> list[list[str]]:
    """Cut tabulate's simple grid into cells at the columns its rule line of dashes marks."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-") and set(line) <= {"-", " "})
    spans, start = [], None
    for j, ch in enumerate(lines[rule] + " "):
        if ch == "-" and start is None:
            start = j
        elif ch != "-" and start is not None:
            spans.append((start, j))
            start = None
    grid = [lines[rule - 1], *lines[rule + 1 : rule + 1 + len(ROWS)]]
    return [[line[a:b].strip() for a, b in spans] for line in grid]


def _markdown_cells(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
    return [r for r in cells if not all(set(c) <= {"-", ":"} for c in r)]  # drop the |---| line


def test_table_markdown_and_csv_show_the_same_cells() -> None:
    r = _result()
    assert _table_cells(render(r, "table")) == CELLS
    assert _markdown_cells(render(r, "markdown")) == CELLS
    assert list(csv.reader(io.StringIO(render(r, "csv")))) == CELLS


def test_layout_of_the_text_forms() -> None:
    table = render(_result(), "table")
    assert table.startswith("model.onnx [onnx]\nsite")  # the title, then the grid at once
    assert table.endswith("\nfirst remark\nsecond remark\n")
    md = render(_result(), "markdown")
    assert md.startswith("**model.onnx [onnx]**\n\n| site")  # bold title, a blank line before the table
    assert md.endswith("\n- first remark\n- second remark\n")


def test_the_csv_can_be_its_own_grid() -> None:
    own = Table(["name", "value"], [["conv1", 0.5]])
    assert render(_result(own), "csv") == "name,value\nconv1,0.5\n"


def test_json_is_the_results_dict() -> None:
    out = render(_result(), "json")
    assert out == '{\n  "schema": "x/1",\n  "sites": 3\n}\n'


def test_names_from_the_file_are_neutralised() -> None:
    doc = Document("evil\x1b]0;x\x07", [Table(["name", "v"], [["=HYPERLINK(1)", "-0.5"]]), Lines(["a\nb"])])
    r = _Result(doc, {})
    text = render(r, "table")
    assert "\x1b" not in text and "\\x1b]0;x\\x07" in text and "a\\nb" in text
    assert render(r, "csv") == "name,v\n'=HYPERLINK(1),-0.5\n"  # a formula is quoted; a number is not


def test_an_empty_table_shows_its_message_and_no_remarks_show_nothing() -> None:
    doc = Document("t", [Table(["a"], [], empty="no activation call sites found"), Lines([])])
    assert render(_Result(doc, {}), "table") == "t\nno activation call sites found\n"


def test_compact_layout_by_hand() -> None:
    red = "\x1b[31mab\x1b[0m"  # colour codes take no room
    lines = layout(["#", "name"], [[1, red], [10, "c"]], "  ", right={0})
    assert [plain(x) for x in lines] == [" #  name", "--  ----", " 1  ab", "10  c"]


def test_small_formatters() -> None:
    assert pct(0.125) == "12.5%" and pct(None) == "-" and pct(None, none="–") == "–" and pct(1, 0) == "100%"
    assert capped([1, 2, 3, 4], 2) == "1, 2 … (4 in all)" and capped(["a"], 2) == "a"


def test_every_result_type_draws_every_format() -> None:
    from actaudit.report.prune import PruneReport, SiteRow

    rep = PruneReport(
        model={"path": "m.onnx", "format": "onnx"},
        calibration={"samples": 4, "source": "x.npy"},
        options={"max_drift": 1e-5},
        sites=[SiteRow("relu1", "Relu", "relu", 8, removed=[1, 2], kept={3: "feeds a residual Add"})],
        before={"parameters": 100, "macs": 1000},
        after={"parameters": 90, "macs": 900},
    )
    # 2 of 8 units removed, 1 kept: the table row and the CSV row carry the same counts
    want = [["site", "kind", "units", "removed", "folded", "kept", "why kept"]]
    want += [["relu1", "relu", "8", "2", "0", "1", "feeds a residual Add"]]
    assert list(csv.reader(io.StringIO(rep.render("csv")))) == want
    text = rep.render("table")
    assert "parameters: 100 -> 90 (-10.0%)" in text and "gate --max-drift 1e-05: passed" in text
    assert json.loads(rep.render("json"))["summary"]["parameters_removed"] == 10
