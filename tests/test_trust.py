"""The trust model: hostile TorchScript, torch.export and config files fail closed, and the payload never runs.

Every hostile file here would only create a marker file under tmp_path; each test
asserts the exit code, the one-line message and that the marker does not exist.
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import textwrap
import zipfile
from pathlib import Path

import hostile_models as hm
import numpy as np
import pytest
from click.testing import CliRunner

from actaudit.backends.torch import export_trust, trust
from actaudit.backends.torch.load import load_torch
from actaudit.cli import cli


def _run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("actaudit: error: ")
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture
def x4(tmp_path: Path) -> Path:
    p = tmp_path / "x.npy"
    np.save(p, np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    return p


@pytest.mark.parametrize("command", ["audit", "inspect"])
def test_torchscript_setstate_that_writes_a_file_is_refused(tmp_path: Path, x4: Path, command: str) -> None:
    marker = tmp_path / "marker"
    model = hm.ts_setstate(tmp_path, marker)
    args = (
        [command, model, "--input-shape", "1x4"] if command == "inspect" else [command, model, "--calib", x4]
    )
    r = _run(*args)
    assert r.exit_code == 2
    line = _one_line_error(r)
    assert "refusing to load TorchScript archive" in line
    assert "code/__torch__/hostile_models.py: torch.save" in line
    assert "--trust-code" in line
    assert not marker.exists()


def test_trust_code_is_the_consent_that_lets_it_run(tmp_path: Path, x4: Path) -> None:
    """The same file with --trust-code loads, and its payload does run: the refusal above is not vacuous."""
    marker = tmp_path / "marker"
    model = hm.ts_setstate(tmp_path, marker)
    r = _run("audit", model, "--calib", x4, "--trust-code", "-q")
    assert r.exit_code == 0, r.output
    assert marker.exists()


def test_torchscript_reading_a_file_renamed_pt_is_refused_with_or_without_arch(
    tmp_path: Path, x4: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"\x01\x02\x03\x04")
    model = hm.ts_from_file(tmp_path, secret)
    assert model.suffix == ".pt"
    r = _run("audit", model, "--calib", x4, "--per-unit", "--format", "json")
    assert r.exit_code == 2
    assert "torch.from_file" in _one_line_error(r)
    assert r.stdout == ""  # no report with the file's bytes in it
    arch = tmp_path / "arch.py"
    arch.write_text(f"open({str(tmp_path / 'arch_ran')!r}, 'w')\ndef build():\n    raise SystemExit\n")
    r = _run("audit", model, "--arch", f"{arch}:build", "--calib", x4)
    assert r.exit_code == 2
    line = _one_line_error(r)
    assert "--arch" in line and "applies to state_dict checkpoints" in line and "torchscript" in line
    assert not (tmp_path / "arch_ran").exists()  # refused before the --arch code is imported


def test_operator_of_an_unknown_namespace_is_refused(tmp_path: Path, x4: Path) -> None:
    model = hm.ts_custom_namespace(tmp_path)
    r = _run("audit", model, "--calib", x4)
    assert r.exit_code == 2
    assert "ops.evil.run (an operator namespace outside aten/prim/quantized)" in _one_line_error(r)


def test_pt2_example_inputs_are_never_unpickled_outside_the_allowlist(tmp_path: Path, x4: Path) -> None:
    marker = tmp_path / "marker"
    model = hm.pt2_pickled_example(tmp_path, marker)
    r = _run("audit", model, "--calib", x4)
    assert r.exit_code == 2
    line = _one_line_error(r)
    assert "refusing to load torch.export program" in line and "pickled global " in line
    assert not marker.exists()
    r = _run("inspect", model)
    assert r.exit_code == 2
    assert not marker.exists()


def test_pt2_payload_is_live_without_the_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.export.load itself runs the example-input payload: the test file is really hostile."""
    import logging

    import torch

    marker = tmp_path / "marker"
    model = hm.pt2_pickled_example(tmp_path, marker)
    # torch's own warning about the fallback has a broken format string
    monkeypatch.setattr(logging.getLogger("torch._export.serde.serialize"), "disabled", True)
    torch.export.load(str(model))
    assert marker.exists()


def test_pt2_with_aotinductor_library_is_refused(tmp_path: Path, x4: Path) -> None:
    r = _run("audit", hm.pt2_aoti(tmp_path), "--calib", x4)
    assert r.exit_code == 2
    assert "compiled native code (AOTInductor)" in _one_line_error(r)


def test_arch_with_a_pt2_or_a_pickled_module_is_an_error(tmp_path: Path, x4: Path) -> None:
    arch = tmp_path / "arch.py"
    arch.write_text("def build():\n    raise SystemExit\n")
    r = _run("audit", hm.pt2_plain(tmp_path), "--arch", f"{arch}:build", "--calib", x4)
    assert r.exit_code == 2
    assert "applies to state_dict checkpoints" in _one_line_error(r)


def test_config_in_a_parent_folder_cannot_run_a_data_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    (tmp_path / "loader.py").write_text(f"open({str(marker)!r}, 'w')\ndef batches():\n    return []\n")
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.actaudit]
            data-loader = "loader.py:batches"
            """
        )
    )
    sub = tmp_path / "work"
    sub.mkdir()
    model = hm.ts_plain(sub)
    monkeypatch.chdir(sub)
    r = _run("audit", model.name)
    assert r.exit_code == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "key 'data-loader' cannot be set in a config file" in line
    assert not marker.exists()


def _silero_jit() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    assert spec is not None and spec.origin, "silero-vad is installed by the Makefile"
    return Path(spec.origin).parent / "data" / "silero_vad.jit"


def test_real_archives_pass_the_static_check(fixtures_dir: Path) -> None:
    """Every committed TorchScript fixture and silero-vad's archive (with __setstate__ and many ops) passes."""
    archives = sorted((fixtures_dir / "models").glob("*.ts"))
    assert len(archives) >= 10
    for p in [*archives, _silero_jit()]:
        assert trust.torchscript_problems(p) == [], p


@pytest.mark.realmodel
def test_silero_vad_jit_loads_without_a_flag() -> None:
    with zipfile.ZipFile(_silero_jit()) as zf:
        code = "".join(zf.read(n).decode() for n in zf.namelist() if n.endswith(".py"))
    assert len(set(re.findall(r"torch\.(\w+)\(", code))) > 30  # many distinct operators
    tm = load_torch(_silero_jit())
    assert tm.fmt == "torchscript"


def test_real_programs_pass_the_export_guard(fixtures_dir: Path) -> None:
    programs = sorted((fixtures_dir / "models").glob("*.pt2"))
    assert len(programs) >= 5
    for p in programs:
        ep = export_trust.guarded_export_load(p)
        assert export_trust.export_graph_problems(ep.graph_module) == []


def _archive(tmp_path: Path, code: str, constants: bytes | None = None) -> Path:
    """A zip laid out like a TorchScript archive; the checker reads it without loading it."""
    p = tmp_path / "a.ts"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a/code/__torch__/m.py", textwrap.dedent(code))
        zf.writestr("a/constants.pkl", constants if constants is not None else pickle.dumps(()))
        zf.writestr("a/data.pkl", pickle.dumps(()))
        zf.writestr("a/version", b"3\n")  # torch's zip reader requires it
    return p


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("_0 = torch.from_file\n", "torch.from_file"),  # an alias is checked where it is taken
        ("def f(x: Tensor) -> Tensor:\n  return x.save('p')\n", ".save()"),  # aten::save as a method
        ("def f(x: Tensor):\n  return getattr(torch, 'save')\n", "torch used as a value"),
        ("def f(x: Tensor):\n  return __torch__.torch.classes.evil.Foo()\n", "a custom C++ class"),
        ("def f(x: Tensor):\n  print(x)\n", "print()"),
        ("def f(x: Tensor):\n  return ops.aten.from_file('p')\n", "ops.aten.from_file"),
        ("def f(x: Tensor, y: Tensor=torch.save(x, 'p')):\n  return x\n", "torch.save"),  # a default
        ("def f(x):\n  return x +\n", "code that cannot be checked"),
    ],
)
def test_static_check_refuses(tmp_path: Path, code: str, refused: str) -> None:
    problems = trust.torchscript_problems(_archive(tmp_path, code))
    assert any(refused in p for p in problems), problems


def test_static_check_passes_pure_code_and_names_a_pickled_global(tmp_path: Path) -> None:
    pure = """
    def f(x: Tensor, w: Optional[Tensor]) -> Tensor:
      _0 = annotate(List[Tensor], [])
      if isinstance(w, Tensor):
        w0 = unchecked_cast(Tensor, w)
      else:
        w0 = torch.zeros([1])
      _1 = torch.append(_0, torch.relu(torch.linear(x, w0)))
      return torch.cat(_0, -1).view([-1])
    """
    assert trust.torchscript_problems(_archive(tmp_path, pure)) == []
    evil = b"cposix\nsystem\n(S'true'\ntR."  # protocol 0: GLOBAL posix.system
    problems = trust.torchscript_problems(_archive(tmp_path, pure, constants=evil))
    assert problems == ["constants.pkl: pickled global posix.system"]
