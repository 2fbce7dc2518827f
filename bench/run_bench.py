"""Benchmark: what an audit costs next to plain inference, its peers, memory and start-up.

    python bench/run_bench.py --out bench/RESULTS.md           # full, ~15 min on 2 idle cores
    python bench/run_bench.py --out /tmp/r.md --quick          # a few minutes, smaller data

Plain inference and the audit run alternately (A B A B …) on the same seeded batches,
batch size and thread count; each row gives medians and the median of the per-round
ratios. Whole-process rows (bench/wholeproc.py) time a fresh ``python -m actaudit audit``
against a fresh plain-inference process, alternated, and start-up to the first batch the
same way with one batch. Wall-clock ratios suffer when other processes share the machine, so the
process-CPU-time ratio is reported next to them, with the load average. The ONNX rows
need ``actaudit.backends.onnx``; without it they read "n/a". This is not a test: nothing
here asserts on timings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SEED = 0
STUCK = 0.01
# Audit time / plain inference time, in-process (steady state) and whole process.
TARGETS = {"resnet18": 1.10, "mlp": 1.15, "transformer": 1.15, "deep": 1.5}
STARTUP_GAP_S = 0.3  # start-up to the first batch: at most this much more than plain inference


@dataclass(frozen=True)
class Config:
    samples: int  # per timed pass
    batch: int
    rounds: int
    peer_rounds: int
    mem_samples: tuple[int, int]
    mem_hw: int  # input side of the ResNet in the memory test
    startup_runs: int
    whole_samples: dict[str, int]  # samples of a whole-process run, per model
    whole_pairs: int
    deep_samples: int  # the 1,000-site model's in-process pass (its per-call cost needs many batches)
    models: tuple[str, ...] = ("resnet18", "mlp", "transformer", "deep")


FULL = Config(
    samples=128,
    batch=32,
    rounds=5,
    peer_rounds=2,
    mem_samples=(256, 4096),
    mem_hw=112,
    startup_runs=7,
    whole_samples={"resnet18": 768, "mlp": 4096, "transformer": 512, "deep": 4096},
    whole_pairs=3,
    deep_samples=4096,
)
QUICK = Config(
    samples=64,
    batch=32,
    rounds=3,
    peer_rounds=1,
    mem_samples=(256, 4096),
    mem_hw=32,
    startup_runs=3,
    whole_samples={"resnet18": 64, "mlp": 256, "transformer": 64, "deep": 128},
    whole_pairs=1,
    deep_samples=256,
)


@dataclass
class Timing:
    plain: list[float] = field(default_factory=list)
    audit: list[float] = field(default_factory=list)
    plain_cpu: list[float] = field(default_factory=list)
    audit_cpu: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [a / p for a, p in zip(self.audit, self.plain, strict=True)]

    @property
    def cpu_ratios(self) -> list[float]:
        return [a / p for a, p in zip(self.audit_cpu, self.plain_cpu, strict=True)]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def alternate(plain: Callable[[], Any], audit: Callable[[], Any], rounds: int) -> Timing:
    """A B A B …: each round times plain then audit; one warm-up of each first."""
    plain()
    audit()
    t = Timing()
    for _ in range(rounds):
        for fn, wall, cpu in ((plain, t.plain, t.plain_cpu), (audit, t.audit, t.audit_cpu)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    return t


# -- model files and data ------------------------------------------------------------------------
@dataclass
class Prepared:
    name: str
    description: str
    module: Any
    x: np.ndarray
    ts_path: Path
    onnx_path: Path | None
    sd_path: Path
    onnx_error: str | None = None


def prepare(name: str, cfg: Config, tmp: Path) -> Prepared:
    import torch

    from bench.models import SPECS

    spec = SPECS[name]
    m = spec.build()
    rng = np.random.default_rng(SEED)
    n = cfg.deep_samples if name == "deep" else cfg.samples
    x = rng.standard_normal((n, *spec.sample_shape), dtype=np.float32)
    ts_path = tmp / f"{name}.ts"
    torch.jit.save(torch.jit.script(m), str(ts_path))
    sd_path = tmp / f"{name}_sd.pt"
    torch.save(m.state_dict(), sd_path)
    onnx_path: Path | None = tmp / f"{name}.onnx"
    err = None
    try:
        export_onnx(m, torch.from_numpy(x[:2]), onnx_path)  # type: ignore[arg-type]
    except Exception as e:  # the ONNX rows say why they are missing
        onnx_path, err = None, f"export failed: {type(e).__name__}: {e}"[:200]
    return Prepared(name, spec.description, m, x, ts_path, onnx_path, sd_path, err)


def export_onnx(m: Any, example: Any, path: Path) -> None:
    import torch

    logging.getLogger("torch").setLevel(logging.ERROR)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        batch = torch.export.Dim("batch")
        torch.onnx.export(m, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},), verbose=False)


def batches(x: np.ndarray, bs: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(x[i : i + bs]) for i in range(0, len(x), bs)]


def source(x: np.ndarray, bs: int) -> Any:
    from actaudit.data import from_arrays

    return from_arrays([x], bs, "bench")


# -- rows -----------------------------------------------------------------------------------------
@dataclass
class Row:
    model: str
    fmt: str
    sites: int | str = ""
    timing: Timing | None = None
    note: str = ""
    target: float | None = None


def torch_rows(p: Prepared, cfg: Config) -> list[Row]:
    import torch

    from actaudit.backends.torch import backend as tb

    rows = []
    eager = tb.from_module(p.module)
    script = tb.load(p.ts_path)
    for fmt, tm, call in (("eager", eager, p.module), ("TorchScript", script, script.module)):
        xs = batches(p.x, cfg.batch)

        def plain(call: Any = call, xs: list[np.ndarray] = xs) -> None:
            with torch.no_grad():
                for b in xs:
                    call(torch.from_numpy(b))

        sites: list[int] = []

        def audit(tm: Any = tm, sites: list[int] = sites) -> None:
            cap = tb.capture(
                tm, source(p.x, cfg.batch), samples=None, stuck_fraction=STUCK, axis_overrides=[]
            )
            sites[:] = [len(cap.sites)]

        log(f"{p.name} {fmt}")
        t = alternate(plain, audit, cfg.rounds)
        rows.append(Row(p.name, fmt, sites[0], t, target=TARGETS[p.name]))
    return rows


def onnx_session_pair(p: Prepared, threads: int) -> tuple[Any, Any, Any]:
    """(backend module, handle, plain session with the backend's own session options)."""
    from actaudit.backends.onnx import backend as ob

    h = ob.load(p.onnx_path, threads=threads)
    plain_session = getattr(ob, "plain_session", None)
    if plain_session is not None:
        sess = plain_session(h)
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(p.onnx_path), so, providers=["CPUExecutionProvider"])
    return ob, h, sess


def onnx_rows(p: Prepared, cfg: Config, threads: int, peers: bool = True) -> list[Row]:
    if p.onnx_path is None:
        return [Row(p.name, "ONNX", note=f"n/a ({p.onnx_error})", target=TARGETS[p.name])]
    try:
        ob, h, sess = onnx_session_pair(p, threads)
    except ImportError:
        return [Row(p.name, "ONNX", note="n/a (ONNX backend not present)", target=TARGETS[p.name])]
    except Exception as e:
        return [Row(p.name, "ONNX", note=f"n/a (backend failed to load: {type(e).__name__}: {e})"[:200])]
    name = sess.get_inputs()[0].name
    xs = batches(p.x, cfg.batch)

    def plain() -> None:
        for b in xs:
            sess.run(None, {name: b})

    sites: list[int] = []

    def audit() -> None:
        cap = ob.capture(h, source(p.x, cfg.batch), samples=None, stuck_fraction=STUCK, axis_overrides=[])
        sites[:] = [len(cap.sites)]

    log(f"{p.name} ONNX")
    try:
        t = alternate(plain, audit, cfg.rounds)
    except Exception as e:
        return [Row(p.name, "ONNX", note=f"n/a (audit failed: {type(e).__name__}: {e})"[:200])]
    rows = [Row(p.name, "ONNX", sites[0], t, target=TARGETS[p.name])]
    if peers:
        rows.append(minmax_row(p, cfg, plain, name))
    return rows


def minmax_row(p: Prepared, cfg: Config, plain: Callable[[], None], input_name: str) -> Row:
    """onnxruntime's own calibrator (per-tensor min/max of every tensor) on the same data."""
    try:
        from onnxruntime.quantization.calibrate import (
            CalibrationDataReader,
            CalibrationMethod,
            create_calibrator,
        )
    except ImportError as e:
        return Row(p.name, "peer: onnxruntime MinMaxCalibrater", note=f"n/a ({e})")

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it: Iterator[np.ndarray] = iter(batches(p.x, cfg.batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.it, None)
            return None if b is None else {input_name: b}

    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-minmax-") as d:
            cal = create_calibrator(
                str(p.onnx_path),
                augmented_model_path=str(Path(d) / "aug.onnx"),
                calibrate_method=CalibrationMethod.MinMax,
            )
            cal.collect_data(Reader())
            cal.compute_data()

    log(f"{p.name} MinMaxCalibrater")
    try:
        t = alternate(plain, run, cfg.peer_rounds)
    except Exception as e:
        return Row(
            p.name, "peer: onnxruntime MinMaxCalibrater", note=f"failed: {type(e).__name__}: {e}"[:200]
        )
    return Row(p.name, "peer: onnxruntime MinMaxCalibrater", "every tensor", t, note="vs plain onnxruntime")


def hooks_row(p: Prepared, cfg: Config) -> Row:
    """The naive way: forward hooks on every leaf module keep a copy of each output, reduced at the end."""
    import torch

    m = p.module
    xs = batches(p.x, cfg.batch)
    leaves = [mod for mod in m.modules() if not list(mod.children())]

    def plain() -> None:
        with torch.no_grad():
            for b in xs:
                m(torch.from_numpy(b))

    def naive() -> None:
        store: dict[int, list[torch.Tensor]] = {}

        def hook(mod: Any, args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                store.setdefault(id(mod), []).append(out.detach().clone())

        hs = [mod.register_forward_hook(hook) for mod in leaves]
        try:
            with torch.no_grad():
                for b in xs:
                    m(torch.from_numpy(b))
        finally:
            for h in hs:
                h.remove()
        for outs in store.values():
            z = torch.cat(outs)
            axis = 1 if z.ndim == 4 else z.ndim - 1
            dims = [d for d in range(z.ndim) if d != axis]
            (z > 0).float().mean(dims)
            z.amin(dims)
            z.amax(dims)

    log(f"{p.name} naive hooks")
    t = alternate(plain, naive, cfg.peer_rounds)
    return Row(
        p.name,
        "peer: forward hooks, store every output",
        len(leaves),
        t,
        note="vs plain eager; misses functional calls",
    )


# -- whole processes -------------------------------------------------------------------------------
@dataclass
class WholeRow:
    model: str
    fmt: str
    samples: int
    pairs: Any  # wholeproc.Pairs
    target: float | None
    startup: bool = False


def whole_rows(p: Prepared, cfg: Config, tmp: Path, skip: set[str]) -> list[WholeRow]:
    """Fresh audit processes against fresh plain-inference processes, then start-up to the first batch."""
    from bench import wholeproc

    n = cfg.whole_samples[p.name]
    spec_shape = p.x.shape[1:]
    npy = tmp / f"{p.name}_whole.npy"
    write_npy(npy, n, tuple(int(d) for d in spec_shape))
    files: list[tuple[str, Path | None, str]] = [
        ("eager", p.sd_path, f"bench/models.py:{p.name}"),
        ("TorchScript", p.ts_path, ""),
    ]
    if "onnx" not in skip:
        files.append(("ONNX", p.onnx_path, ""))
    rows = []
    for fmt, model, arch in files:
        if model is None:
            continue
        log(f"{p.name} {fmt} whole process ({n} samples, {cfg.whole_pairs} pairs)")
        pr = wholeproc.alternate(fmt, model, npy, cfg.batch, n, cfg.whole_pairs, arch)
        rows.append(WholeRow(p.name, fmt, n, pr, TARGETS[p.name]))
        log(f"{p.name} {fmt} start-up to the first batch")
        pr = wholeproc.alternate(fmt, model, npy, cfg.batch, cfg.batch, cfg.whole_pairs, arch)
        rows.append(WholeRow(p.name, fmt, cfg.batch, pr, STARTUP_GAP_S, startup=True))
        if fmt == "TorchScript":  # the rows above reuse the check's verdict cached by the warm-up pair
            log(f"{p.name} {fmt} start-up, first audit of the archive (verdict cache off)")
            with _env("ACTAUDIT_TRUST_CACHE", "0"):
                pr = wholeproc.alternate(fmt, model, npy, cfg.batch, cfg.batch, cfg.whole_pairs, arch)
            rows.append(WholeRow(p.name, f"{fmt}, first audit", cfg.batch, pr, STARTUP_GAP_S, startup=True))
    return rows


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[key]
        else:
            os.environ[key] = old


def render_whole(rows: list[WholeRow], cfg: Config) -> list[str]:
    out = [
        "## Whole process, as a user runs it",
        "",
        "A fresh `python -m actaudit audit MODEL --calib data.npy --batch-size "
        f"{cfg.batch} --format json` process against a fresh plain-inference process "
        "(`bench/wholeproc.py plain`: load the model, run every batch) on the same file, data and "
        f"thread count; {cfg.whole_pairs} alternated pairs after one warm-up pair, medians of the "
        "per-pair ratios. Eager models are a state_dict with `--arch bench/models.py:NAME`. CPU time "
        "is the child's user + system time.",
        "",
        "| Model | Format | Samples | Plain (s) | Audit (s) | Ratio | CPU ratio | Target | Met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.startup:
            continue
        pr = r.pairs
        if pr.error or not pr.plain:
            out.append(f"| {r.model} | {r.fmt} | {r.samples} | | | failed: {pr.error} | | | |")
            continue
        ratio, cratio = pr.ratio(), pr.ratio(cpu=True)
        met = "yes" if ratio <= r.target else ("CPU only" if cratio <= r.target else "no")
        out.append(
            f"| {r.model} | {r.fmt} | {r.samples} | {statistics.median(pr.plain):.2f} | "
            f"{statistics.median(pr.audit):.2f} | **{ratio:.2f}×** | {cratio:.2f}× | ≤ {r.target:.2f}× | {met} |"
        )
    out += [
        "",
        "### Start-up to the first batch",
        "",
        f"The same pairs with one batch ({cfg.batch} samples): interpreter start, imports, loading, "
        "instrumentation and one batch. *Gap* is the median over pairs of audit minus plain wall time.",
        "",
        "| Model | Format | Plain (s) | Audit (s) | Gap (s) | CPU plain / audit (s) | Target | Met |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if not r.startup:
            continue
        pr = r.pairs
        if pr.error or not pr.plain:
            out.append(f"| {r.model} | {r.fmt} | | | failed: {pr.error} | | | |")
            continue
        gap = pr.gap()
        cgap = statistics.median(a - b for a, b in zip(pr.audit_cpu, pr.plain_cpu, strict=True))
        met = "yes" if gap <= r.target else ("CPU only" if cgap <= r.target else "no")
        out.append(
            f"| {r.model} | {r.fmt} | {statistics.median(pr.plain):.2f} | {statistics.median(pr.audit):.2f} | "
            f"**{gap:+.2f}** | {statistics.median(pr.plain_cpu):.2f} / {statistics.median(pr.audit_cpu):.2f} | "
            f"≤ +{r.target:.1f} s | {met} |"
        )
    return [*out, ""]


# -- memory ---------------------------------------------------------------------------------------
def write_npy(path: Path, n: int, shape: tuple[int, ...]) -> None:
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *shape))
    rng = np.random.default_rng(SEED)
    for i in range(0, n, 256):
        k = min(256, n - i)
        arr[i : i + k] = rng.standard_normal((k, *shape), dtype=np.float32)
    arr.flush()
    del arr


def child_memory(model: str, calib: str, samples: int) -> None:
    """Run in a subprocess: one audit through the public API, then report peak RSS."""
    import actaudit

    t0 = time.perf_counter()
    rep = actaudit.audit(model, calib=calib, samples=samples, batch_size=32)
    wall = time.perf_counter() - t0
    # ru_maxrss survives exec on Linux: a child forked from a big parent reports the parent's
    # peak. VmHWM belongs to the process image and starts afresh at exec.
    rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    hwm = rusage
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    print(
        json.dumps(
            {"peak_rss": hwm, "rusage_maxrss": rusage, "samples": rep.calibration["samples"], "wall": wall}
        )
    )


def onnx_available() -> bool:
    try:
        from actaudit.backends.onnx import backend  # noqa: F401
    except ImportError:
        return False
    return True


def memory_rows(cfg: Config, tmp: Path, onnx_ok: bool) -> list[dict[str, Any]]:
    import torch

    from bench.models import SPECS

    m = SPECS["resnet18"].build()
    shape = (3, cfg.mem_hw, cfg.mem_hw)
    ts = tmp / "mem_resnet.ts"
    torch.jit.save(torch.jit.script(m), str(ts))
    models = [("TorchScript", ts)]
    if onnx_ok:
        try:
            ox = tmp / "mem_resnet.onnx"
            export_onnx(m, torch.randn(2, *shape), ox)
            models.append(("ONNX", ox))
        except Exception as e:
            log(f"memory: no ONNX model ({e})")
    npy = tmp / "calib.npy"
    write_npy(npy, max(cfg.mem_samples), shape)
    out = []
    for fmt, path in models:
        for n in cfg.mem_samples:
            log(f"memory {fmt} {n} samples")
            res = subprocess.run(
                [sys.executable, __file__, "--child-memory", str(path), str(npy), str(n)],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if res.returncode != 0:
                out.append({"format": fmt, "samples": n, "error": res.stderr.strip().splitlines()[-1:]})
                continue
            d = json.loads(res.stdout.strip().splitlines()[-1])
            d.update(format=fmt, file_mb=npy.stat().st_size / 2**20 * n / max(cfg.mem_samples))
            out.append(d)
    return out


# -- start-up and rewrite -------------------------------------------------------------------------
def actaudit_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "actaudit"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "actaudit"]


def startup_rows(cfg: Config) -> list[dict[str, Any]]:
    rows = []
    for args in (["--help"], ["audit", "--help"]):
        times = []
        for _ in range(cfg.startup_runs):
            t0 = time.perf_counter()
            r = subprocess.run([*actaudit_cmd(), *args], capture_output=True)
            times.append(time.perf_counter() - t0)
        probe = (
            f"import sys\nfrom actaudit.cli import main\nsys.argv = ['actaudit', *{args!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)"
        )
        p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        rows.append(
            {
                "command": "actaudit " + " ".join(args),
                "median": statistics.median(times),
                "rc": r.returncode,
                "torch": p.stderr.strip().splitlines()[-1:] == ["True"],
            }
        )
    return rows


def rewrite_row(tmp: Path) -> str:
    probe = subprocess.run([*actaudit_cmd(), "rewrite", "--help"], capture_output=True)
    if probe.returncode != 0:
        return "n/a (rewrite not yet built)"
    import torch

    from bench.models import SPECS

    m = SPECS["resnet18"].build()
    ts = tmp / "rw_resnet.ts"
    torch.jit.save(torch.jit.script(m), str(ts))
    npy = tmp / "rw_calib.npy"
    write_npy(npy, 128, (3, 32, 32))
    log("rewrite --alpha auto")
    r = subprocess.run(
        [
            *actaudit_cmd(),
            "rewrite",
            str(ts),
            "-o",
            str(tmp / "rw_out.ts"),
            "--calib",
            str(npy),
            "--alpha",
            "auto",
            "--format",
            "json",
            "--force",
        ],
        capture_output=True,
        text=True,
    )
    try:
        rep = json.loads(r.stdout)
        passes = rep["search"]["passes"]
        return f"{passes} passes over the calibration data (budget 10; exit {r.returncode})"
    except Exception:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return f"n/a (rewrite exit {r.returncode}: {tail[:160]})"


# -- report ---------------------------------------------------------------------------------------
def machine(threads: int) -> list[tuple[str, str]]:
    import onnxruntime
    import torch

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [
        ("CPU", cpu),
        ("cores (os.cpu_count)", str(os.cpu_count())),
        ("threads (torch intra-op = onnxruntime intra-op)", str(threads)),
        ("PyTorch statistics kernel", kernel_status()),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("onnxruntime", onnxruntime.__version__),
        ("platform", platform.platform()),
    ]


def kernel_status() -> str:
    from actaudit.backends.torch import native

    return native.status()


def fmt_s(x: float) -> str:
    return f"{x:.3f}"


def render(
    cfg: Config,
    quick: bool,
    mach: list[tuple[str, str]],
    rows: list[Row],
    whole: list[WholeRow],
    mem: list[dict[str, Any]],
    start: list[dict[str, Any]],
    rewrite: str,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    took: float,
) -> str:
    out = ["# actaudit benchmark", ""]
    cmd = "python bench/run_bench.py --out bench/RESULTS.md" + (" --quick" if quick else "")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out += [f"Written by `{cmd}` ({'quick' if quick else 'full'} mode, {took:.0f} s) on {stamp}.", ""]
    out += ["## Machine", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in mach]
    out += [f"| load average (1 min) at start / end | {load[0][0]:.2f} / {load[1][0]:.2f} |", ""]
    out += [
        "## Audit time against plain inference",
        "",
        f"{cfg.samples} seeded samples per pass, batch size {cfg.batch}, the same thread count for both; "
        f"plain and audit alternate (A B A B …) for {cfg.rounds} rounds after one warm-up each "
        f"(peers: {cfg.peer_rounds}). Times are medians of one pass over the data; *ratio* is the median "
        "of the per-round ratios audit/plain; *CPU ratio* is the same with process CPU time, which "
        "other processes on the machine disturb less. The audit times the capture loop (data "
        "conversion included), not model loading. The 1,000-site model runs "
        f"{cfg.deep_samples} samples per pass.",
        "",
        "| Model | Format / tool | Sites | Plain (s) | Audit (s) | Ratio | CPU ratio | Ratio range | Target | Met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.timing is None:
            out.append(
                f"| {r.model} | {r.fmt} | | | | {r.note} | | | {f'≤ {r.target:.2f}×' if r.target else ''} | |"
            )
            continue
        t = r.timing
        ratio, cratio = statistics.median(t.ratios), statistics.median(t.cpu_ratios)
        met = ""
        if r.target is not None:
            met = "yes" if ratio <= r.target else ("CPU only" if cratio <= r.target else "no")
        tgt = f"≤ {r.target:.2f}×" if r.target else (r.note or "")
        out.append(
            f"| {r.model} | {r.fmt} | {r.sites} | {fmt_s(statistics.median(t.plain))} | "
            f"{fmt_s(statistics.median(t.audit))} | **{ratio:.2f}×** | {cratio:.2f}× | "
            f"{min(t.ratios):.2f}–{max(t.ratios):.2f} | {tgt} | {met} |"
        )
    out += ["", *render_whole(whole, cfg)] if whole else []
    out += ["", "## Peak memory against calibration-set size", ""]
    out += [
        "Each audit runs in its own process through `actaudit.audit(model, calib=file.npy, samples=N)` "
        f"on the ResNet-like model (3×{cfg.mem_hw}×{cfg.mem_hw} inputs, batch 32) with a memory-mapped "
        "`.npy`; peak RSS of the child (`VmHWM`, which unlike `getrusage`'s `ru_maxrss` does not inherit "
        "the parent's peak across `exec`), the mapped file's resident pages included. "
        "Target: growth < max(10 %, 50 MB).",
        "",
        "| Format | Samples | Calibration data (MB) | Peak RSS (MB) | Audit wall (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    by_fmt: dict[str, list[dict[str, Any]]] = {}
    for d in mem:
        if "error" in d:
            out.append(f"| {d['format']} | {d['samples']} | | failed: {' '.join(d['error'])[:120]} | |")
            continue
        by_fmt.setdefault(d["format"], []).append(d)
        out.append(
            f"| {d['format']} | {d['samples']} | {d['file_mb']:.0f} | {d['peak_rss'] / 2**20:.0f} | {d['wall']:.1f} |"
        )
    out.append("")
    for f, ds in by_fmt.items():
        if len(ds) == 2:
            a, b = ds[0]["peak_rss"], ds[1]["peak_rss"]
            growth = b - a
            limit = max(0.10 * a, 50 * 2**20)
            out.append(
                f"- {f}: growth {growth / 2**20:+.0f} MB ({100 * growth / a:+.1f} %), limit {limit / 2**20:.0f} MB: "
                f"**{'met' if growth < limit else 'not met'}**"
            )
    out += [
        "",
        "## Start-up",
        "",
        "| Command | Median wall (s) | Exit | torch imported | Target | Met |",
        "|---|---:|---:|---|---:|---|",
    ]
    for s in start:
        met = "yes" if s["median"] < 0.3 and not s["torch"] else "no"
        out.append(
            f"| `{s['command']}` | {s['median']:.3f} | {s['rc']} | {'yes' if s['torch'] else 'no'} | < 0.3 s | {met} |"
        )
    out += [
        "",
        "## Rewrite",
        "",
        "| Check | Result |",
        "|---|---|",
        f"| `rewrite --alpha auto` passes (ResNet-like, 128 samples of 3×32×32) | {rewrite} |",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--quick", action="store_true", help="small data and few rounds (~1-2 minutes)")
    ap.add_argument("--models", default=None, help="comma-separated subset of resnet18,mlp,transformer,deep")
    ap.add_argument(
        "--skip", default="", help="comma-separated sections to skip: onnx,peers,memory,startup,rewrite,whole"
    )
    ap.add_argument("--child-memory", nargs=3, metavar=("MODEL", "NPY", "SAMPLES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        child_memory(args.child_memory[0], args.child_memory[1], int(args.child_memory[2]))
        return 0
    cfg = QUICK if args.quick else FULL
    models = tuple(args.models.split(",")) if args.models else cfg.models
    skip = set(filter(None, args.skip.split(",")))

    import torch

    threads = torch.get_num_threads()
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    rows: list[Row] = []
    whole: list[WholeRow] = []
    with tempfile.TemporaryDirectory(prefix="actaudit-bench-") as d:
        tmp = Path(d)
        # Memory first, while this process is small (see child_memory).
        mem = [] if "memory" in skip else memory_rows(cfg, tmp, "onnx" not in skip and onnx_available())
        for name in models:
            log(f"preparing {name}")
            p = prepare(name, cfg, tmp)
            rows += torch_rows(p, cfg)
            if "onnx" not in skip:
                rows += onnx_rows(p, cfg, threads, peers="peers" not in skip and name != "deep")
            if "peers" not in skip and name != "deep":  # peers on 1,000 sites would take minutes
                rows.append(hooks_row(p, cfg))
            if "whole" not in skip:
                whole += whole_rows(p, cfg, tmp, skip)
        start = [] if "startup" in skip else startup_rows(cfg)
        try:
            rewrite = "skipped" if "rewrite" in skip else rewrite_row(tmp)
        except Exception as e:
            traceback.print_exc()
            rewrite = f"n/a ({type(e).__name__}: {e})"[:200]
    took = time.perf_counter() - t_start
    text = render(
        cfg,
        args.quick,
        machine(threads),
        rows,
        whole,
        mem,
        start,
        rewrite,
        (load_start, os.getloadavg()),
        took,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    log(f"wrote {args.out} in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
