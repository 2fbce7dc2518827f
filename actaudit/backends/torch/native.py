"""The compiled one-pass statistics kernel (``stats_kernel.c``), loaded through ctypes.

The C source ships with the package and is compiled with the machine's C compiler on
first use (or by ``make install`` / ``python -m actaudit.backends.torch.native``) into a
per-user cache keyed by the source, the compiler and the CPU, then loaded after torch so
that its OpenMP code runs on the runtime torch already loaded (one thread pool, not two).
When no compiler is found, the build fails, the library does not load or its self-check
disagrees with the known answer, :func:`kernel` returns ``None`` and the statistics take
the pure-torch path; ``ACTAUDIT_NATIVE=0`` forces that path.

``dlopen`` runs a library's constructors, so a file is checked before it is loaded, never
after: only a library this process compiled, or one whose folder and file belong to this
user, are regular, are not writable by group or others and match the SHA-256 digest
written beside it at build time (see :func:`build` and :func:`_verified`). Cache folders
are created 0700 whatever the umask. Nothing here imports torch:
the caller (:mod:`.kernel`) has.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import stat
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
    """Compile the kernel into the cache if no trusted copy is there: (path, how) or (None, why not).

    A cached library is used only when :func:`_verified` accepts it; otherwise (or with
    ``force``) it is compiled again in a fresh private folder and published atomically,
    with its digest beside it. When the cache folder itself cannot be trusted (another
    user's, or writable by group or others) nothing is published: the library is built in
    a private temporary folder for this process alone.
    """
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC)"
    out = library_path(cc)
    unsafe = _make_private_folder(out.parent)
    if unsafe:
        private = Path(tempfile.mkdtemp(prefix="actaudit-native-"))
        _state["private"] = private  # removed once loaded: a mapped library needs no name
        path, how = _compile(cc, private / out.name)
        return path, how if path is None else f"{how}, privately ({unsafe})"
    if not force and _verified(out) is not None:
        return out, "cached"
    return _compile(cc, out)


def _compile(cc: str, out: Path) -> tuple[Path | None, str]:
    """Compile into a fresh 0700 folder beside ``out``, then move the library and its digest into place."""
    errors = []
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))  # mkdtemp: mode 0700, ours alone
    try:
        for flags in _FLAG_SETS:
            tmp = work / "stats.so"
            cmd = [cc, *flags, *_COMMON, str(SOURCE), "-o", str(tmp), "-lm"]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as e:
                errors.append(f"{' '.join(flags)}: {e}")
                continue
            if r.returncode == 0:
                os.chmod(tmp, 0o700)
                digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
                side = work / "stats.sha256"
                side.write_text(digest + "\n")
                os.chmod(side, 0o600)
                os.replace(tmp, out)  # atomic: a concurrent build publishes the same bytes
                os.replace(side, _digest_path(out))
                _built[str(out)] = digest
                return out, f"built with {os.path.basename(cc)} {' '.join(flags)}"
            errors.append(f"{' '.join(flags)}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
            tmp.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return None, "the C compiler failed: " + "; ".join(errors)[:400]


# Digests of the libraries this process compiled, by path.
_built: dict[str, str] = {}
_MAX_LIBRARY_BYTES = 64 << 20


def _digest_path(lib: Path) -> Path:
    return lib.with_suffix(".sha256")


def _make_private_folder(folder: Path) -> str | None:
    """Create ``folder`` (and missing parents) with mode 0700 whatever the umask; why it is unsafe, or None."""
    missing = []
    p = folder
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        else:
            os.chmod(d, 0o700)  # mkdir's mode is masked by the umask; 0700 is never widened by it
    return _unsafe(folder, want_dir=True)


def _unsafe(p: Path, want_dir: bool) -> str | None:
    """Why ``p`` cannot be trusted to hold code this user runs, or None: checked with lstat, never opened."""
    try:
        st = os.lstat(p)
    except OSError as e:
        return f"{p}: {e.strerror or e}"
    kind = stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)
    if not kind:
        return f"{p} is not a {'folder' if want_dir else 'regular file'}"
    if st.st_uid != os.geteuid():
        return f"{p} belongs to another user"
    if st.st_mode & 0o022:
        return f"{p} is writable by group or others"
    return None


def _verified(lib: Path) -> int | None:
    """An open descriptor of ``lib`` whose bytes match the digest recorded when it was built, or None.

    The folder, the library and its digest file must be this user's, regular (checked before
    opening, and opened without following links or blocking) and not writable by others.
    The descriptor is what gets loaded, so the bytes checked are the bytes mapped.
    """
    want = _built.get(str(lib))
    if want is None:
        side = _digest_path(lib)
        if _unsafe(lib.parent, want_dir=True) or _unsafe(side, want_dir=False):
            return None
        try:
            want = side.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
    if _unsafe(lib, want_dir=False):
        return None
    try:
        fd = os.open(lib, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > _MAX_LIBRARY_BYTES:
            raise OSError("not a regular file of this user")
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        if h.hexdigest() != want:
            raise OSError("digest mismatch")
    except OSError:
        os.close(fd)
        return None
    return fd


def _load(lib: Path) -> ctypes.CDLL | None:
    """dlopen ``lib`` only after :func:`_verified` accepted it; through its checked descriptor where possible."""
    fd = _verified(lib)
    if fd is None:
        return None
    try:
        via_fd = f"/proc/self/fd/{fd}"
        return ctypes.CDLL(via_fd if os.path.exists(via_fd) else str(lib))
    finally:
        os.close(fd)


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
                lib = _load(path)
                if lib is None:
                    _state["why"] = f"{path} is not the library built here (its digest, owner or mode differ)"
                else:
                    fn = _bind(lib)
                    if not _self_check(fn):
                        fn, _state["why"] = None, f"{path} failed its self-check"
            except (OSError, AttributeError) as e:
                fn, _state["why"] = None, f"cannot load {path}: {e}"
    private = _state.pop("private", None)
    if isinstance(private, Path):
        shutil.rmtree(private, ignore_errors=True)
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
