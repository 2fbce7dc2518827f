"""Whole processes, as a user runs them: ``python -m actaudit audit`` against plain inference.

Each pair starts two fresh interpreters on the same model file and ``.npy`` data, batch
size and thread count: one plain-inference process (this file's ``plain`` command: load
the model, run every batch, nothing else) and one ``python -m actaudit audit`` process
(load, calibrate, capture, classify, write the JSON report). Pairs alternate (plain,
audit, plain, audit …) after one warm-up pair; wall time comes from the parent, CPU time
(user + system) from ``os.wait4`` of the child. Start-up to the first batch is the same
measurement with a single batch of data: import, load, instrumentation and one batch.

    python bench/wholeproc.py plain FORMAT MODEL NPY BATCH SAMPLES [ARCH]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Pairs:
    plain: list[float] = field(default_factory=list)
    audit: list[float] = field(default_factory=list)
    plain_cpu: list[float] = field(default_factory=list)
    audit_cpu: list[float] = field(default_factory=list)
    error: str = ""

    def ratio(self, cpu: bool = False) -> float:
        a, p = (self.audit_cpu, self.plain_cpu) if cpu else (self.audit, self.plain)
        return statistics.median(x / y for x, y in zip(a, p, strict=True))

    def gap(self) -> float:
        """Median over pairs of audit wall minus plain wall (seconds)."""
        return statistics.median(x - y for x, y in zip(self.audit, self.plain, strict=True))


def plain_cmd(fmt: str, model: Path, npy: Path, batch: int, samples: int, arch: str = "") -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "plain",
        fmt,
        str(model),
        str(npy),
        str(batch),
        str(samples),
        arch,
    ]


def audit_cmd(fmt: str, model: Path, npy: Path, batch: int, samples: int, arch: str = "") -> list[str]:
    cmd = [sys.executable, "-m", "actaudit", "audit", str(model), "--calib", str(npy)]
    cmd += ["--batch-size", str(batch), "--samples", str(samples), "--format", "json"]
    return cmd + (["--arch", arch] if fmt == "eager" else [])


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, child CPU s, error) of one fresh process; stdout is discarded."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    assert p.stderr is not None
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    # audit exits 1 when a --fail-on gate trips (none is given here); anything else is a failure.
    bad = p.returncode not in (0, 1)
    tail = (err.decode(errors="replace").strip().splitlines() or [f"exit {p.returncode}"])[-1]
    return wall, ru.ru_utime + ru.ru_stime, (f"exit {p.returncode}: {tail}"[:200] if bad else "")


def alternate(
    fmt: str, model: Path, npy: Path, batch: int, samples: int, pairs: int, arch: str = ""
) -> Pairs:
    out = Pairs()
    plain = plain_cmd(fmt, model, npy, batch, samples, arch)
    audit = audit_cmd(fmt, model, npy, batch, samples, arch)
    for i in range(pairs + 1):  # the first pair warms the page cache and the kernel build cache
        for cmd, wall, cpu in ((plain, out.plain, out.plain_cpu), (audit, out.audit, out.audit_cpu)):
            w, c, err = timed(cmd)
            if err:
                out.error = err
                return out
            if i:
                wall.append(w)
                cpu.append(c)
    return out


# -- the plain-inference child ----------------------------------------------------------------------
def plain_main(fmt: str, model: str, npy: str, batch: int, samples: int, arch: str) -> None:
    import numpy as np

    x = np.load(npy, mmap_mode="r")[:samples]
    starts = range(0, len(x), batch)
    if fmt == "ONNX":
        import onnxruntime as ort

        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for i in starts:
            sess.run(None, {name: np.ascontiguousarray(x[i : i + batch])})
        return
    import torch

    if fmt == "TorchScript":
        m = torch.jit.load(model).eval()
    else:
        from bench import models

        m = getattr(models, arch.rsplit(":", 1)[1])()
        m.load_state_dict(torch.load(model, weights_only=True))
        m.eval()
    with torch.no_grad():
        for i in starts:
            m(torch.from_numpy(np.ascontiguousarray(x[i : i + batch])))


if __name__ == "__main__":
    if len(sys.argv) >= 7 and sys.argv[1] == "plain":
        plain_main(
            sys.argv[2],
            sys.argv[3],
            sys.argv[4],
            int(sys.argv[5]),
            int(sys.argv[6]),
            sys.argv[7] if len(sys.argv) > 7 else "",
        )
        sys.exit(0)
    print(__doc__, file=sys.stderr)
    sys.exit(2)
