"""The load path: what is checked is exactly what torch loads, and parsing it is bounded.

Each hostile archive is built here; its payload would only create ``marker``. Every test
asserts the documented exit code (2), the one-line refusal, that the marker never appears
and that the input file is byte-identical afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from actaudit.backends.torch import export_trust
from actaudit.backends.torch import load as load_mod
from actaudit.backends.torch.archive import MAX_CODE_MEMBER, MAX_INFLATED_TOTAL, ArchiveView
from actaudit.backends.torch.export_trust import expr_problem
from actaudit.cli import cli
from actaudit.errors import InputError
from tests import hostile_models as hm
from tests.trust import hostile_archives as ha

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def x4(tmp_path: Path) -> Path:
    p = tmp_path / "x.npy"
    np.save(p, np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    return p


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def refused(model: Path, x4: Path, marker: Path | None, *words: str, command: str = "audit") -> str:
    """Run the CLI on ``model``; assert exit 2, one error line holding ``words``, no marker, input unchanged."""
    before = _sha(model)
    args = [command, str(model), "--calib", str(x4)] if command == "audit" else [command, str(model)]
    r = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actaudit: error: refusing to load"), r.stderr
    assert "Traceback" not in r.output and r.stdout == ""
    for w in words:
        assert w in lines[0], lines[0]
    assert marker is None or not marker.exists()
    assert _sha(model) == before
    return lines[0]


# -- TorchScript: torch's reader, not zipfile's ----------------------------------------------------
@pytest.mark.parametrize("build", [ha.ts_case_folder, ha.ts_case_suffix], ids=["CODE-folder", "PY-suffix"])
def test_code_under_another_case_is_checked(tmp_path: Path, x4: Path, build) -> None:
    marker = tmp_path / "marker"
    model = build(tmp_path, marker)
    names = zipfile.ZipFile(model).namelist()
    assert not any("/code/" in n and n.endswith(".py") and "hostile_models" in n for n in names)
    refused(model, x4, marker, "torch.save")
    # The file is live: torch itself finds the code whatever its case and runs the payload.
    torch.jit.load(str(model))
    assert marker.exists()


@pytest.mark.parametrize("fold_case", [False, True], ids=["same-name", "other-case"])
def test_repeated_or_colliding_member_names_are_refused(tmp_path: Path, x4: Path, fold_case: bool) -> None:
    marker = tmp_path / "marker"
    model = ha.ts_duplicate(tmp_path, marker, fold_case)
    refused(model, x4, marker, "repeats" if not fold_case else "collides with", "ignoring case")


def test_the_loaded_bytes_are_the_checked_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is swapped for a hostile one right after the check passed: the checked bytes still load."""
    marker = tmp_path / "marker"
    plain = hm.ts_plain(tmp_path)
    hostile = hm.ts_setstate(tmp_path, marker).read_bytes()
    real_check = load_mod.check_torchscript
    swapped = []

    def check_then_swap(data: bytes, path: Path) -> None:
        real_check(data, path)
        path.write_bytes(hostile)  # the attacker wins the race on disk
        swapped.append(path)

    monkeypatch.setattr(load_mod, "check_torchscript", check_then_swap)
    tm = load_mod.load_torch(plain)
    assert swapped == [plain] and plain.read_bytes() == hostile
    assert not marker.exists()
    assert [n for n, _ in tm.module.named_children()] == ["lin"]  # Plain, not SetstateWriter
    torch.manual_seed(0)
    want = torch.relu(torch.nn.Linear(4, 4)(torch.ones(1, 4)))
    torch.testing.assert_close(tm.module(torch.ones(1, 4)), want)


@pytest.mark.parametrize("where", ["prepended", "nul"])
def test_directories_the_two_zip_readers_read_differently_are_refused(
    tmp_path: Path, x4: Path, where: str
) -> None:
    """Bytes before the archive shift Python's offsets but not miniz's; a NUL ends a name for one reader only."""
    plain = hm.ts_plain(tmp_path)
    model = tmp_path / "differ.ts"
    if where == "prepended":
        model.write_bytes(b"PK\x03\x04" + bytes(60) + plain.read_bytes())
    else:
        entries = ha.members(plain)
        name, code = next((n, d) for n, d in entries if n.endswith(".py"))
        ha.write(model, [*entries, (name + "\0.txt", code)])
    r = CliRunner().invoke(cli, ["audit", str(model), "--calib", str(x4)])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("actaudit: error: ") and len(r.stderr.strip().splitlines()) == 1


def test_members_outside_one_folder_are_refused(tmp_path: Path) -> None:
    """torch's reader needs every member under one folder; torch.export.load's legacy path reads such a
    zip with zipfile instead (every member inflated), so the guarded load refuses it outright."""
    flat = ha.write(tmp_path / "flat.pt2", [("version", b"7.0"), ("serialized_exported_program.json", b"{}")])
    with pytest.raises(InputError, match="not in one folder"):
        ArchiveView(flat.read_bytes(), flat, "torch.export program")


def test_a_flatbuffer_module_is_refused(tmp_path: Path, x4: Path) -> None:
    model = ha.flatbuffer_magic(hm.ts_plain(tmp_path), tmp_path / "flat.ts")
    refused(model, x4, None, "flatbuffer")


def test_a_program_that_warns_is_loaded_and_its_text_is_escaped_on_stderr(tmp_path: Path, x4: Path) -> None:
    """warnings.warn in TorchScript (torch.warn; torch's own nn.functional code calls it, so every scripted
    attention layer has it) is not a way out: its text reaches stderr escaped, never stdout."""
    model = hm.ts_warner(tmp_path)
    before = _sha(model)
    r = CliRunner().invoke(cli, ["audit", str(model), "--calib", str(x4), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["summary"]["sites"] == 1  # stdout is the report alone
    assert "the model warned: \\x1b[31mWARNED-BY-THE-PROGRAM" in r.stderr
    assert "\x1b" not in r.stderr and "\x1b" not in r.stdout
    assert _sha(model) == before


def test_what_a_trusted_program_prints_never_reaches_stdout(tmp_path: Path, x4: Path) -> None:
    model = hm.ts_talker(tmp_path)
    r = CliRunner().invoke(cli, ["audit", str(model), "--calib", str(x4), "--format", "json"])
    assert r.exit_code == 2 and "print()" in r.stderr  # refused without consent
    r = CliRunner().invoke(cli, ["audit", str(model), "--calib", str(x4), "--format", "json", "--trust-code"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["summary"]["sites"] == 1  # stdout is the report alone
    assert "\\x1b[2JLOADED" in r.stderr and "\\x1b[2JCALLED" in r.stderr  # on stderr, escaped
    assert "\x1b" not in r.stderr


# -- bounded parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("def f(x: Tensor) -> Tensor:\n  return " + "-" * 150 + "x\n", ("100 levels", "depth limit")),
        ("def f(x: Tensor) -> Tensor:\n  return " + "x+" * 300_000 + "x\n", ("deeper than",)),
        ("def f(x: Tensor) -> Tensor:\n  return " + "-" * 100_000 + "x\n", ("deeper than",)),
    ],
    ids=["depth-150", "recursion", "parser-stack"],
)
def test_code_that_nests_too_deep_is_refused_naming_the_limit(
    tmp_path: Path, x4: Path, code: str, words: tuple[str, ...]
) -> None:
    model = ha.ts_with_member(tmp_path, "code/__torch__/deep.py", code.encode())
    line = refused(model, x4, None, "code/__torch__/deep.py", *words)
    assert "RecursionError" not in line and "MemoryError" not in line


def test_an_oversized_code_member_is_refused_before_it_is_inflated(tmp_path: Path, x4: Path) -> None:
    code = b"# a comment\n" * (MAX_CODE_MEMBER // 12 + 10)
    model = ha.ts_with_member(tmp_path, "code/__torch__/big.py", code)
    refused(model, x4, None, "code/__torch__/big.py", f"over the limit of {MAX_CODE_MEMBER} bytes")


def test_a_3_gib_deflated_member_is_never_inflated(tmp_path: Path, x4: Path) -> None:
    """Refused from the zip directory, in a process whose address space could not hold it."""
    model = ha.ts_bomb(tmp_path)
    assert model.stat().st_size < 8 << 20
    limit = 2 << 30  # torch loads and audits a small model within 2 GiB here

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    args = ["inspect", str(model), "--input-shape", "1x4"]
    r = subprocess.run(
        [sys.executable, "-m", "actaudit", *args],
        capture_output=True,
        text=True,
        preexec_fn=cap,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "decompression bomb" in r.stderr and f"limit of {MAX_INFLATED_TOTAL} bytes" in r.stderr
    assert r.stdout == ""


def test_a_member_that_inflates_past_its_declared_size_is_refused(tmp_path: Path, x4: Path) -> None:
    """The header says 1000 bytes, the stream holds 128 MiB: inflating stops at the declared size."""
    model = ha.ts_bomb(tmp_path, size=128 << 20, declared=1000)
    view = ArchiveView(model.read_bytes(), model, "TorchScript archive")
    assert view.read("code/__torch__/bomb.py", "code") == bytes(1000)
    refused(model, x4, None, "code/__torch__/bomb.py: code that cannot be checked")


# -- torch.export ------------------------------------------------------------------------------------
def test_pt2_expression_strings_never_reach_sympify(tmp_path: Path, x4: Path) -> None:
    marker = tmp_path / "marker"
    model = ha.pt2_sympify_payload(tmp_path, marker)
    refused(model, x4, marker, "symbolic expression", "__import__")
    refused(model, x4, marker, "symbolic expression", command="inspect")


def test_pt2_loaded_bytes_are_the_checked_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .pt2 is swapped for the sympify payload right after its JSON was checked: the checked bytes load."""
    marker = tmp_path / "marker"
    hostile = ha.pt2_sympify_payload(tmp_path, marker).read_bytes()
    model = ha.pt2_dynamic(tmp_path)
    real = export_trust._json_problems

    def check_then_swap(view: ArchiveView) -> list[str]:
        found = real(view)
        model.write_bytes(hostile)
        return found

    monkeypatch.setattr(export_trust, "_json_problems", check_then_swap)
    tm = load_mod.load_torch(model)
    assert model.read_bytes() == hostile and tm.fmt == "torch.export"
    assert not marker.exists()


def test_pt2_sympify_payload_is_live_without_the_check(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    model = ha.pt2_sympify_payload(tmp_path, marker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(Exception):  # the payload has run by the time the expression fails
            torch.export.load(str(model))
    assert marker.exists()


def test_a_denied_op_inside_a_higher_order_op_is_refused(tmp_path: Path, x4: Path) -> None:
    model = ha.pt2_effects_print(tmp_path)
    line = refused(model, x4, None, "call aten::_print (inside with_effects)")
    assert "PRINTED-BY-THE-PROGRAM" not in line


def test_a_program_with_cond_passes_the_walk(tmp_path: Path) -> None:
    ep = export_trust.guarded_export_load(ha.pt2_cond(tmp_path))
    hops = [n.target.name() for n in ep.graph.nodes if isinstance(n.target, torch._ops.HigherOrderOperator)]
    assert hops == ["cond"]
    assert export_trust.export_graph_problems(ep.graph_module) == []


def test_native_prints_of_a_trusted_program_never_reach_stdout(tmp_path: Path, x4: Path) -> None:
    """aten._print writes to file descriptor 1 from C++: a real process, so the descriptor is real."""
    model = ha.pt2_effects_print(tmp_path)
    args = ["audit", str(model), "--calib", str(x4), "--format", "json", "--trust-code", "-q"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "ACTAUDIT_NATIVE": "0"}
    r = subprocess.run(
        [sys.executable, "-m", "actaudit", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["sites"] == 1
    assert "PRINTED-BY-THE-PROGRAM" in r.stderr


def test_pt2_with_a_repeated_program_member_is_refused(tmp_path: Path, x4: Path) -> None:
    refused(ha.pt2_duplicate_program(tmp_path), x4, None, "collides with")


@pytest.mark.parametrize("depth", [100, 100_000])
def test_pt2_json_nested_past_the_limit_is_refused(tmp_path: Path, x4: Path, depth: int) -> None:
    refused(ha.pt2_nested_json(tmp_path, depth), x4, None, "models/model.json nests deeper than 64 levels")


@pytest.mark.parametrize(
    "text",
    [
        "Symbol('s77', positive=True, integer=True)",
        "FloorDiv(Symbol('s77', positive=True, integer=True), Integer(2))",
        "Mul(Integer(2), Symbol('s77', positive=True, integer=True))",
        "Pow(Symbol('s0', integer=True), Integer(2))",
        "Float('2.5', precision=53)",
        "2*s0 + 1",
        "Max(1, s0) // 2",
        "Eq(Mod(s0, 4), 0)",
    ],
    ids=lambda t: "".join(c if c.isalnum() else "_" for c in t)[:40],
)
def test_expressions_torch_writes_are_in_the_grammar(text: str) -> None:
    assert expr_problem(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "Symbol('s0').__class__",
        "open('/etc/passwd')",
        "eval",
        "Symbol('s0')\n",
        "[Symbol('s0')]",
        "lambda: 0",
        "Symbol(name='a b')",
        "sympify('1')",
        "Integer(10)**Integer(10**9)",
        "LShift(1, 100000000)",
        "Pow(Pow(Pow(Integer(99), 64), 64), 64)",
        "Float('1', precision=100000000)",
        "-" * 60 + "s0",
    ],
    ids=lambda t: "".join(c if c.isalnum() else "_" for c in t)[:40],
)
def test_expressions_off_the_grammar_are_refused(text: str) -> None:
    assert expr_problem(text) is not None


def test_dynamic_program_still_loads(tmp_path: Path) -> None:
    tm = load_mod.load_torch(ha.pt2_dynamic(tmp_path))
    assert tm.fmt == "torch.export" and tm.fixed_batch is None
