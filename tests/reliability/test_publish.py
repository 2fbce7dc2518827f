"""Publishing outputs: umask modes, only regular files replaced, the later of two writers fails, SIGTERM
leaves no temporary file, a full disk or read-only folder is a one-line exit 2 with the old file intact."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from actaudit.cli import cli
from actaudit.errors import InputError
from actaudit.fileio import atomic_path, write_text_atomic

ACTAUDIT = [sys.executable, "-m", "actaudit"]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> dict[str, Path]:
    """x[N,4] @ W + b -> Relu with two dead units, and its data: subprocesses start fast without torch."""
    d = tmp_path_factory.mktemp("publish")
    rng = np.random.default_rng(0)
    b = np.zeros(6, np.float32)
    b[[1, 4]] = -1e3
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "W"),
            numpy_helper.from_array(b, "b"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(d / "tiny.onnx"))
    np.save(d / "x.npy", rng.standard_normal((64, 4)).astype(np.float32))
    return {"model": d / "tiny.onnx", "calib": d / "x.npy"}


def _run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _err(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actaudit: error: "), r.output
    return lines[0]


def _temps(d: Path) -> list[str]:
    return sorted(f.name for f in d.iterdir() if f.name.startswith(".") and f.name.endswith(".tmp"))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_new_outputs_take_their_mode_from_the_umask(small, tmp_path, umask, mode) -> None:
    old = os.umask(umask)
    try:
        r = _run(
            "audit",
            small["ts"],
            "--calib",
            small["calib"],
            "-o",
            tmp_path / "r.txt",
            "--html",
            tmp_path / "r.html",
        )
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE((tmp_path / "r.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == mode


def test_a_replaced_file_keeps_its_mode(tmp_path) -> None:
    p = tmp_path / "r.txt"
    p.write_text("old")
    p.chmod(0o604)
    write_text_atomic(p, "new", force=True)
    assert p.read_text() == "new" and stat.S_IMODE(p.stat().st_mode) == 0o604


def _special_files(d: Path) -> dict[str, Path]:
    out = {}
    fifo = d / "fifo"
    os.mkfifo(fifo)
    out["a FIFO"] = fifo
    link = d / "link"
    (d / "real").write_text("x")
    link.symlink_to(d / "real")
    out["a symbolic link"] = link
    with contextlib.suppress(PermissionError):  # a /dev/null twin, where we may make device nodes
        os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        out["a character device"] = d / "null"
    return out


def test_never_replaces_what_is_not_a_regular_file(small, tmp_path) -> None:
    for kind, p in _special_files(tmp_path).items():
        before = p.lstat()
        for cmd in (
            ["audit", small["ts"], "--calib", small["calib"], "-o", p, "--force"],
            ["audit", small["ts"], "--calib", small["calib"], "--html", p, "--force"],
            ["rewrite", small["ts"], "--calib", small["calib"], "-o", p, "--force"],
        ):
            r = _run(*cmd)
            assert r.exit_code == 2, (kind, r.output)
            assert f"is {kind}, not a regular file" in _err(r)
            after = p.lstat()
            assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert _temps(tmp_path) == []


def test_a_file_that_appears_during_the_run_makes_this_writer_fail(tmp_path) -> None:
    target = tmp_path / "r.json"
    with pytest.raises(InputError, match="appeared while actaudit was running"), atomic_path(target) as tmp:
        tmp.write_text("mine")
        target.write_text("theirs")  # another writer published first
    assert target.read_text() == "theirs"
    assert _temps(tmp_path) == []


def test_two_concurrent_writers_one_wins_one_fails(tiny_onnx, tmp_path) -> None:
    """Both pass the up-front check (a barrier in the data loader), then race to publish."""
    loader = tmp_path / "barrier.py"
    loader.write_text(
        "import os, pathlib, sys, time\n"
        "def batches():\n"
        "    d = pathlib.Path(os.environ['BARRIER'])\n"
        "    (d / f'ready-{os.getpid()}').touch()\n"
        "    t = time.monotonic()\n"
        "    while len(list(d.glob('ready-*'))) < 2 and time.monotonic() - t < 60:\n"
        "        time.sleep(0.02)\n"
        "    import numpy as np\n"
        "    yield np.load(os.environ['CALIB'])\n"
    )
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    out = tmp_path / "same.json"
    env = {**os.environ, "BARRIER": str(barrier), "CALIB": str(tiny_onnx["calib"])}
    cmd = [
        *ACTAUDIT,
        "audit",
        str(tiny_onnx["model"]),
        "--data-loader",
        f"{loader}:batches",
        "--format",
        "json",
        "-o",
        str(out),
        "-q",
    ]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.returncode, p.communicate(timeout=120)[1]) for p in procs]
    results = [(p.returncode, err) for p, (_, err) in zip(procs, results, strict=True)]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    # the later writer fails at its publish (link) or, if it starts writing after the first one
    # published, when it opens its output
    assert "appeared while actaudit was running" in loser or "already exists" in loser
    assert len(loser.strip().splitlines()) == 1
    assert out.read_text().startswith("{") and out.read_text().rstrip().endswith("}")
    assert _temps(tmp_path) == []


def test_sigterm_while_writing_removes_the_temporary_file(tiny_onnx, tmp_path) -> None:
    """rewrite re-measures the written file inside the atomic write; SIGTERM arrives then."""
    out = tmp_path / "out.onnx"
    inside = tmp_path / "inside"
    loader = tmp_path / "slow.py"
    loader.write_text(
        "import os, pathlib, time\nimport numpy as np\n"
        "def batches():\n"
        f"    d = pathlib.Path({str(tmp_path)!r})\n"
        "    if list(d.glob('.out.onnx.*.tmp')):\n"
        f"        pathlib.Path({str(inside)!r}).touch()\n"
        "        time.sleep(60)\n"
        f"    yield np.load({str(tiny_onnx['calib'])!r})\n"
    )
    cmd = [
        *ACTAUDIT,
        "rewrite",
        str(tiny_onnx["model"]),
        "-o",
        str(out),
        "--data-loader",
        f"{loader}:batches",
        "--alpha",
        "0.01",
        "--max-drift",
        "100",
        "-q",
    ]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not inside.exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(_temps(tmp_path)) == 1  # the temporary file exists right now
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1] == "actaudit: terminated (SIGTERM); no output was written"
    assert _temps(tmp_path) == [] and not out.exists()


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the RLIMIT_FSIZE test covers it"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def _fill(d: Path) -> None:
    with contextlib.suppress(OSError), open(d / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


def test_full_disk_is_exit_2_and_the_old_file_survives(small, tmp_path) -> None:
    with _tmpfs(tmp_path / "full", "size=256k") as d:
        old = d / "r.json"
        old.write_text("old report\n")
        _fill(d)
        r = _run(
            "audit",
            small["ts"],
            "--calib",
            small["calib"],
            "--format",
            "json",
            "--per-unit",
            "-o",
            old,
            "--force",
            "-q",
        )
        assert r.exit_code == 2, r.output
        assert "cannot write output" in _err(r) and "No space left on device" in _err(r)
        assert old.read_text() == "old report\n"
        assert _temps(d) == []


def test_read_only_folder_is_exit_2(small, tmp_path) -> None:
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as d:
        r = _run("audit", small["ts"], "--calib", small["calib"], "-o", d / "r.txt", "-q")
        assert r.exit_code == 2, r.output
        assert "cannot write output" in _err(r) and "Read-only file system" in _err(r)


def test_file_size_limit_is_exit_2_and_the_old_file_survives(tiny_onnx, tmp_path) -> None:
    """The same fault without root: RLIMIT_FSIZE makes the write fail (EFBIG) in a child process."""
    old = tmp_path / "r.json"
    old.write_text("old report\n")
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))\n"
        "from actaudit.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "audit",
            str(tiny_onnx["model"]),
            "--calib",
            str(tiny_onnx["calib"]),
            "--format",
            "json",
            "--per-unit",
            "-o",
            str(old),
            "--force",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write output" in lines[0] and "File too large" in lines[0]
    assert old.read_text() == "old report\n"
    assert _temps(tmp_path) == []
