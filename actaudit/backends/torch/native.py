"""The compiled one-pass statistics kernel (``stats_kernel.c``), loaded through ctypes.

The C source ships with the package and is compiled with the machine's C compiler on
first use (or by ``make install`` / ``python -m actaudit.backends.torch.native``) into a
per-user cache keyed by the source, the compiler and the CPU, then loaded after torch so
that its OpenMP code runs on the runtime torch already loaded (one thread pool, not two).
When no compiler is found, the build fails, the library does not load or its self-check
disagrees with the known answer, :func:`kernel` returns ``None`` and the statistics take
the pure-torch path; ``ACTAUDIT_NATIVE=0`` forces that path. Nothing here imports torch:
the caller (:mod:`.kernel`) has.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

SOURCE = Path(__file__).with_name("stats_kernel.c")
# Tried in order; the first that compiles wins. OpenMP first (the kernel then splits work over
# torch's threads); without it the kernel runs single-threaded, still one pass.
_FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-fopenmp"),
    ("-O3", "-march=native", "-fopenmp-simd"),
    ("-O3",),
)
_COMMON = ("-shared", "-fPIC", "-std=c99", "-fno-fast-math")
_BUILD_TIMEOUT_S = 120

KernelFn = Callable[..., int]
_state: dict[str, object] = {}


def disabled() -> bool:
    return os.environ.get("ACTAUDIT_NATIVE", "1").strip().lower() in ("0", "off", "no", "false")


def cache_dir() -> Path:
    """``$ACTAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/actaudit/native`` (``~/.cache`` by default)."""
    own = os.environ.get("ACTAUDIT_CACHE_DIR")
    if own:
        return Path(own)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "actaudit" / "native"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cpu_flags() -> str:
    """The CPU's feature list: -march=native builds differ between CPUs sharing one home directory."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def library_path(cc: str) -> Path:
    st = os.stat(cc)
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), repr((*_FLAG_SETS, _COMMON)).encode(), os.path.realpath(cc).encode()):
        key.update(part)
        key.update(b"\0")
    key.update(f"{st.st_size}:{st.st_mtime_ns}:{platform.machine()}:{sys.platform}".encode())
    key.update(_cpu_flags().encode())
    return cache_dir() / f"stats-{key.hexdigest()[:20]}.so"


def build(force: bool = False) -> tuple[Path | None, str]:
    """Compile the kernel into the cache if it is not there: (path, how) or (None, why not)."""
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC)"
    out = library_path(cc)
    if out.exists() and not force:
        return out, "cached"
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    errors = []
    for flags in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(prefix=".stats-", suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, *flags, *_COMMON, str(SOURCE), "-o", tmp, "-lm"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            r = None
            errors.append(f"{' '.join(flags)}: {e}")
        if r is not None and r.returncode == 0:
            os.chmod(tmp, 0o755)
            os.replace(tmp, out)  # atomic: a concurrent build publishes the same bytes
            return out, f"built with {os.path.basename(cc)} {' '.join(flags)}"
        if r is not None:
            errors.append(f"{' '.join(flags)}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
        Path(tmp).unlink(missing_ok=True)
    return None, "the C compiler failed: " + "; ".join(errors)[:400]


def _bind(lib: ctypes.CDLL) -> KernelFn:
    fn = lib.actaudit_unit_stats
    i64, dbl, ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
    fn.argtypes = [ptr, ctypes.c_int, i64, i64, i64, dbl, dbl, ptr, ptr, ptr, ptr, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _self_check(fn: KernelFn) -> bool:
    """One unit of [-1, 2, NaN, 3, -inf, 0] against its known counters, in both precisions."""
    vals = [-1.0, 2.0, math.nan, 3.0, -math.inf, 0.0]
    for dtype, ctype in ((0, ctypes.c_float), (1, ctypes.c_double)):
        for b in (1, len(vals), 16):  # units last, a short row, a long row (padded with zeros)
            data = vals + [0.0] * (b - len(vals)) if b > len(vals) else vals
            x = (ctype * len(data))(*data)
            a = len(data) // b
            sums = (ctypes.c_double * 6)()
            nonfinite = (ctypes.c_int64 * 1)()
            mn, mx = (ctypes.c_double * 1)(math.inf), (ctypes.c_double * 1)(-math.inf)
            if fn(x, dtype, a, 1, b, 0.0, 2.5, sums, nonfinite, mn, mx, 2) != 0:
                return False
            zeros = len(data) - len(vals) + 1
            want = [4.0, -1.0, 14.0, 1.0, 1.0 + zeros, 1.0]
            if list(sums) != want or nonfinite[0] != 2 or mn[0] != -1.0 or mx[0] != 3.0:
                return False
    return True


def kernel() -> KernelFn | None:
    """The loaded kernel function, or ``None`` (the pure-torch path runs); built on first call."""
    if "fn" in _state:
        return _state["fn"]  # type: ignore[return-value]
    fn: KernelFn | None = None
    if disabled():
        _state["why"] = "disabled by ACTAUDIT_NATIVE=0"
    else:
        try:
            path, how = build()
        except OSError as e:
            path, how = None, f"cannot write the kernel cache: {e}"
        _state["why"] = how
        if path is not None:
            try:
                fn = _bind(ctypes.CDLL(str(path)))
                if not _self_check(fn):
                    fn, _state["why"] = None, f"{path} failed its self-check"
            except (OSError, AttributeError) as e:
                fn, _state["why"] = None, f"cannot load {path}: {e}"
    _state["fn"] = fn
    return fn


def status() -> str:
    """One line: which statistics path runs, and why."""
    fn = kernel()
    return f"native kernel ({_state['why']})" if fn is not None else f"pure-torch kernel ({_state['why']})"


def reset() -> None:
    """Forget the loaded state (tests switch paths with ACTAUDIT_NATIVE)."""
    _state.clear()


if __name__ == "__main__":  # make install: build now, so the first audit does not pay for it
    import torch  # noqa: F401  (the library must resolve OpenMP to torch's runtime, as in use)

    print(status())
    sys.exit(0)
