"""Memory of hostile calibration files, as peak RSS of a child process: a compressed .npz that inflates
to 256 MiB, and a Fortran-order .npy of 256 MiB, must not be held in memory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

ROW = (3, 64, 64)  # 48 KiB per sample
ROWS = 256 * 2**20 // (4 * 3 * 64 * 64)  # 256 MiB of float32

# VmHWM, not getrusage: ru_maxrss survives exec, so a child forked from a big pytest process
# would report the parent's size.
_CHILD = """
import sys
from actaudit.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
print("RC", code, "PEAK_KB", hwm)
"""


def _peak_mb(*args: object) -> tuple[int, float]:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True, timeout=300
    )
    line = r.stdout.strip().splitlines()[-1].split()
    assert line[0] == "RC", r.stdout + r.stderr
    return int(line[1]), int(line[3]) / 1024


@pytest.fixture(scope="module")
def pooled(tmp_path_factory) -> Path:
    """x[N,3,64,64] -> ReduceMean over H, W -> Relu: a site whose cost is reading the data."""
    g = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
            helper.make_node("Relu", ["m"], ["y"]),
        ],
        "pooled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *ROW])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    p = tmp_path_factory.mktemp("memory") / "pooled.onnx"
    onnx.save(m, str(p))
    return p


def _write_compressed_zeros(path: Path, rows: int) -> None:
    """An .npz whose one member inflates to rows x 48 KiB of zeros, written without holding it."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, *ROW)}
    chunk = np.zeros((256, *ROW), np.float32).tobytes()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("x.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        left = rows
        while left:
            n = min(left, 256)
            f.write(chunk[: n * len(chunk) // 256])
            left -= n


@pytest.mark.slow
def test_compressed_npz_is_streamed(pooled, tmp_path) -> None:
    big = tmp_path / "bomb.npz"
    _write_compressed_zeros(big, ROWS)
    assert big.stat().st_size < 2 * 2**20  # a few hundred KiB on disk
    tiny = tmp_path / "tiny.npz"
    _write_compressed_zeros(tiny, 64)
    rc_tiny, tiny_mb = _peak_mb("audit", pooled, "--calib", tiny, "--samples", "64", "-q")
    rc_big, big_mb = _peak_mb("audit", pooled, "--calib", big, "--samples", "64", "-q")
    assert rc_tiny == rc_big == 0
    print(f"peak RSS, --samples 64: 256 MiB compressed member {big_mb:.0f} MB, 3 MiB member {tiny_mb:.0f} MB")
    assert big_mb - tiny_mb < 48  # it was the whole 256 MiB member


@pytest.mark.slow
def test_fortran_npy_is_read_in_row_blocks(pooled, tmp_path) -> None:
    paths = {}
    for order in ("C", "F"):
        p = tmp_path / f"x_{order}.npy"
        a = np.lib.format.open_memmap(
            p, mode="w+", dtype=np.float32, shape=(ROWS, *ROW), fortran_order=order == "F"
        )
        a[:] = 0.5
        a.flush()
        del a
        paths[order] = p
    rc_c, c_mb = _peak_mb("audit", pooled, "--calib", paths["C"], "-q")
    rc_f, f_mb = _peak_mb("audit", pooled, "--calib", paths["F"], "-q")
    assert rc_c == rc_f == 0
    print(f"peak RSS, full pass over 256 MiB: C order {c_mb:.0f} MB, Fortran order {f_mb:.0f} MB")
    assert f_mb - c_mb < 96  # one 32 MiB block and its C-order copy, not the 256 MiB file
