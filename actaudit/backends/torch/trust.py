"""Static checks of TorchScript archives, made on the bytes that will be loaded, before anything runs.

A TorchScript archive is compiled and its ``__setstate__`` methods run inside
``torch.jit.load``; its code can read and write files (``torch.from_file``,
``torch.save``) and print. :func:`check_torchscript` reads the archive's code members
and its pickles *without executing them*, through torch's own zip reader and from the
bytes the loader will be given (:mod:`.archive`), and refuses anything that is not on an
allowlist of pure tensor operations, naming the offending call. The serialized code is
Python syntax, so it is parsed with :mod:`ast` under a size and a depth limit; a member
that does not parse is refused too (fail closed). ``torch.export`` programs are checked
in :mod:`.export_trust`.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import os
import pickletools
import re
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ...errors import InputError, UntrustedCodeError
from .archive import ArchiveView, read_once

# Real archives nest 13 to 23 levels (fixtures, silero-vad); the checker's visitor recurses.
MAX_CODE_DEPTH = 100

# Operator namespaces whose operators compute on tensors, lists, strings and numbers.
# Anything else (custom C++ ops, profiler, distributed, debug loaders) is refused.
ALLOWED_NAMESPACES = ("aten", "prim", "quantized")
# Operators of those namespaces that touch files, the process's stdout, Python objects
# or other machines. Found by scanning the pinned torch's schemas for I/O-ish names.
DENIED_OPS = frozenset(
    {
        "aten::from_file",  # reads any file into a tensor
        "aten::save",  # writes any file
        "aten::_print",
        "prim::Print",  # writes into stdout, where the report goes
        "prim::PythonOp",  # calls a Python function
        "prim::IgnoredPythonOp",
        "prim::rpc_async",  # remote calls
        "prim::rpc_sync",
        "prim::rpc_remote",
    }
)
# Names TorchScript's serializer emits as bare calls: casts, type helpers, builtins.
_BUILTIN_CALLS = frozenset(
    {
        "annotate",
        "uninitialized",
        "unchecked_cast",
        "isinstance",
        "getattr",
        "hasattr",
        "len",
        "range",
        "enumerate",
        "zip",
        "int",
        "float",
        "bool",
        "str",
        "complex",
        "list",
        "tuple",
        "dict",
        "min",
        "max",
        "abs",
        "round",
        "sum",
        "any",
        "all",
        "divmod",
        "ord",
        "chr",
        "hex",
        "oct",
        "bin",
        "sorted",
        "reversed",
        "Tensor",
        "Future",
        "Await",
    }
)
# Which positional argument of these builtins is a type, not a value.
_TYPE_ARGUMENT = {"annotate": 0, "uninitialized": 0, "unchecked_cast": 0, "isinstance": 1}
# torch.<sub>.<name> spellings of aten operators.
_SUBMODULE_PREFIX = {
    "linalg": "linalg_",
    "fft": "fft_",
    "special": "special_",
    "nn.functional": "",
    "_C._nn": "",
    "_C._fft": "",
    "_C._linalg": "",
    "_C._special": "",
    "_C._nested": "",
}
# Globals the TorchScript unpickler meets in data.pkl/constants.pkl of real archives.
_PICKLE_GLOBALS = re.compile(
    r"^(__torch__\.(?!torch\.classes\.).+"
    r"|__torch__\.torch\.classes\.quantized\..+"
    r"|torch\._utils\._rebuild_(tensor|tensor_v2|qtensor|parameter|sparse_tensor)"
    r"|torch\.jit\._pickle\..+"
    r"|torch\.[A-Za-z]*Storage"
    r"|collections\.OrderedDict|builtins\.set|torch\.device|torch\.Size)$"
)
TRUST_HINT = "pass --trust-code only if you trust the file's origin, or export it to ONNX or torch.export"
EXPORT_HINT = "pass --trust-code only if you trust the file's origin, or save the program with tensors only"


@functools.lru_cache(maxsize=1)
def allowed_ops() -> frozenset[str]:
    """``ns::name`` of every operator the checks accept (the pinned torch's schemas, filtered)."""
    names = {s.name for s in torch._C._jit_get_all_schemas()}
    return frozenset(n for n in names if n.split("::", 1)[0] in ALLOWED_NAMESPACES and n not in DENIED_OPS)


def _op_names(namespace: str) -> frozenset[str]:
    return frozenset(n.split("::", 1)[1] for n in allowed_ops() if n.startswith(namespace + "::"))


def _chain(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


class _Checker(ast.NodeVisitor):
    """Collects the first refused construct of one code member."""

    def __init__(self, defined: set[str], assigned: set[str]) -> None:
        self.defined = defined  # functions, methods and classes of the archive
        self.assigned = assigned  # local variables and parameters of the member
        self.refused: list[str] = []
        self.aten = _op_names("aten") | _op_names("prim")
        self.method_ok = self.aten

    def _refuse(self, what: str) -> None:
        self.refused.append(what)

    def _torch_name(self, chain: list[str]) -> str | None:
        """Why ``torch.…`` is refused, or None when it names an allowed operator."""
        rest = chain[1:]
        if len(rest) == 1:
            return None if rest[0] in self.aten else f"torch.{rest[0]}"
        sub, name = ".".join(rest[:-1]), rest[-1]
        prefix = _SUBMODULE_PREFIX.get(sub)
        if prefix is not None and f"{prefix}{name}" in self.aten:
            return None
        return ".".join(chain)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        if chain is None:
            self.generic_visit(node)
            return
        root = chain[0]
        if root == "torch":
            bad = self._torch_name(chain)
            if bad:
                self._refuse(bad)
        elif root == "ops":
            if len(chain) != 3:
                self._refuse(".".join(chain))
            else:
                ns, name = chain[1], chain[2]
                if f"{ns}::{name}" not in allowed_ops():
                    kind = (
                        ""
                        if ns in ALLOWED_NAMESPACES
                        else " (an operator namespace outside aten/prim/quantized)"
                    )
                    self._refuse(f"ops.{ns}.{name}{kind}")
        elif root == "__torch__" and chain[1:3] == ["torch", "classes"] and chain[3:4] != ["quantized"]:
            self._refuse(".".join(chain) + " (a custom C++ class)")
        # other roots (self, locals, CONSTANTS) hold values; their methods are checked at the call

    # Type expressions (annotations, the type argument of annotate/isinstance) are never
    # executed, and name types such as torch.dtype that are not operators: not checked.
    def visit_arg(self, node: ast.arg) -> None:
        return None

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for child in [*node.args.defaults, *node.args.kw_defaults, *node.body, *node.decorator_list]:
            if child is not None:
                self.visit(child)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in ("torch", "ops") and isinstance(node.ctx, ast.Load):
            self._refuse(f"{node.id} used as a value")

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name):
            if f.id not in _BUILTIN_CALLS and f.id not in self.defined and f.id not in self.assigned:
                self._refuse(f"{f.id}()")
            if f.id in ("getattr", "hasattr") and node.args and _chain(node.args[0]) in (["torch"], ["ops"]):
                self._refuse(f"{f.id}({_chain(node.args[0])[0]}, …)")  # type: ignore[index]
            type_arg = _TYPE_ARGUMENT.get(f.id)
            if type_arg is not None:
                for i, a in enumerate(node.args):
                    if i != type_arg:
                        self.visit(a)
                for k in node.keywords:
                    self.visit(k)
                return
        elif isinstance(f, ast.Attribute):
            chain = _chain(f)
            if chain is None or chain[0] not in ("torch", "ops", "__torch__"):
                # a method call on a value: a tensor/list/str method (an aten operator) or the archive's own
                # (a denied operator is refused even where the archive defines a method of that name)
                name = f.attr
                denied = f"aten::{name}" in DENIED_OPS or f"prim::{name}" in DENIED_OPS
                if denied or (name not in self.method_ok and name not in self.defined):
                    self._refuse(f".{name}()")
        self.generic_visit(node)


def _defined_and_assigned(tree: ast.AST) -> tuple[set[str], set[str]]:
    defined: set[str] = set()
    assigned: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None:
                    assigned.add(arg.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            assigned.add(node.id)
    return defined, assigned


def pickle_globals_of(data: bytes) -> list[str]:
    """``module.name`` of every GLOBAL a pickle refers to, read from its opcodes (not executed)."""
    found: list[str] = []
    strings: deque[str] = deque(maxlen=2)  # STACK_GLOBAL takes the last two strings pushed
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(str(arg))
        elif op.name == "GLOBAL":
            found.append(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.append(f"{strings[0]}.{strings[1]}" if len(strings) == 2 else "?")
    return found


def _is_code(name: str) -> bool:
    """A member torch's importer could compile: it asks for ``code/<qualified path>.py``, case ignored.

    Every other member under ``code/`` (any case, any suffix but the debug pickles) is
    treated as code too, so nothing there escapes the check by its name.
    """
    low = name.lower()
    return low.startswith("code/") and not low.endswith(".debug_pkl")


def _is_pickle(name: str) -> bool:
    return name.lower().endswith((".pkl", ".debug_pkl"))


def _parse(view: ArchiveView, name: str, path: Path) -> ast.AST | str:
    """The member's syntax tree, a reason it cannot be checked, or a refusal past a limit."""
    try:
        text = view.read(name, "code").decode("utf-8")
        tree = ast.parse(text, filename=name)
    except (SyntaxError, UnicodeDecodeError, ValueError) as e:
        return f"code that cannot be checked ({type(e).__name__})"
    except (RecursionError, MemoryError):
        raise _limit(path, name, "nests deeper than Python's parser allows") from None
    if _depth(tree) > MAX_CODE_DEPTH:
        raise _limit(
            path, name, f"nests deeper than {MAX_CODE_DEPTH} levels, the checker's parse depth limit"
        )
    return tree


def _depth(tree: ast.AST) -> int:
    """How deep the syntax tree goes, found without recursion (a deep tree would overflow the stack)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d <= MAX_CODE_DEPTH:
            stack.extend((c, d + 1) for c in ast.iter_child_nodes(node))
    return deepest


def _limit(path: Path, name: str, why: str) -> InputError:
    return InputError(
        f"refusing to load TorchScript archive {path}: {name} {why}",
        hint="TorchScript's own serializer never writes such code; pass --trust-code only if you trust the file's origin",
    )


def torchscript_problems(source: Path | bytes, path: Path | None = None) -> list[str]:
    """Every refused construct of a TorchScript archive, as ``member: what``; empty when it passes.

    ``source`` is the archive's bytes (what the loader will be given) or a path read once.
    Members are read through torch's own zip reader (:class:`.archive.ArchiveView`), so the
    code checked is the code ``torch.jit.load`` would compile.
    """
    if isinstance(source, Path):
        path, source = source, read_once(source)
    path = path or Path("<bytes>")
    view = ArchiveView(source, path, "TorchScript archive")
    problems: list[str] = []
    defined: set[str] = set()
    code = [n for n in view.names if _is_code(n)]
    for name in code:  # first pass: the archive's own functions and classes, trees dropped
        tree = _parse(view, name, path)
        if isinstance(tree, str):
            problems.append(f"{name}: {tree}")
        else:
            defined |= _defined_and_assigned(tree)[0]
    for name in code:
        tree = _parse(view, name, path)
        if isinstance(tree, str):
            continue
        checker = _Checker(defined, _defined_and_assigned(tree)[1])
        checker.visit(tree)
        problems.extend(f"{name}: {what}" for what in dict.fromkeys(checker.refused))
    for name in view.names:
        if not _is_pickle(name):
            continue
        try:
            found = pickle_globals_of(view.read(name, "pickle"))
        except InputError:
            raise
        except Exception:
            problems.append(f"{name}: a pickle that cannot be read")
            continue
        problems.extend(
            f"{name}: pickled global {g}" for g in dict.fromkeys(found) if not _PICKLE_GLOBALS.match(g)
        )
    return problems


def check_torchscript(data: bytes, path: Path) -> None:
    """Raise :class:`UntrustedCodeError` naming the calls that keep the archive off the allowlist."""
    problems = torchscript_problems(data, path)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise UntrustedCodeError(
            f"refusing to load TorchScript archive {path}: its code calls what is not a pure tensor operation ({shown}), "
            "and loading or running it would execute that",
            hint=TRUST_HINT,
        )


# -- what a trusted program prints ---------------------------------------------------------------
class _EscapedStderr(io.TextIOBase):
    """Where a loaded program's ``print`` goes: stderr, control characters escaped; never stdout."""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        sys.stderr.write(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s))
        return len(s)

    def flush(self) -> None:
        sys.stderr.flush()


def _show_warning(
    shown: Callable[..., None], message: Warning | str, category: type[Warning], *rest: object
) -> None:
    if issubclass(category, UserWarning):
        _EscapedStderr().write(f"actaudit: the model warned: {message}\n")
    else:
        shown(message, category, *rest)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@contextlib.contextmanager
def program_output() -> Iterator[None]:
    """While active, text a loaded program prints lands on stderr: stdout carries only the report.

    TorchScript's ``print`` writes to ``sys.stdout`` (redirected, control characters
    escaped); native code such as ``aten::_print`` writes to file descriptor 1, which points
    at stderr meanwhile (unescaped: it never passes through Python).
    """
    saved = _point_stdout_at_stderr()
    try:
        with contextlib.redirect_stdout(_EscapedStderr()), warnings.catch_warnings():
            # TorchScript's warnings.warn (aten::warn; torch's own nn.functional code calls it)
            # arrives as a UserWarning: shown once per text, escaped, on stderr. Other warnings keep
            # the filters and the display the caller had.
            warnings.filterwarnings("default", category=UserWarning)
            warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
            yield
    finally:
        if saved is not None:
            _flush_c_stdio()  # what native code buffered for stdout still goes to stderr
            with contextlib.suppress(OSError):
                os.dup2(saved, 1)
            os.close(saved)


def _flush_c_stdio() -> None:
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def _point_stdout_at_stderr() -> int | None:
    """Make fd 1 a copy of fd 2; the saved original, or None where the descriptors cannot be used."""
    for stream in (sys.stdout, sys.__stdout__):  # what is buffered for stdout goes there first
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    _flush_c_stdio()
    try:
        saved = os.dup(1)
    except (OSError, ValueError):
        return None
    try:
        os.dup2(2, 1)
    except OSError:
        os.close(saved)
        return None
    return saved
