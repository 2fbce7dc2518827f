"""Static checks of checkpoints that carry code, made before anything from them runs.

A TorchScript archive is compiled and its ``__setstate__`` methods run inside
``torch.jit.load``; its code can read and write files (``torch.from_file``,
``torch.save``). :func:`check_torchscript` reads the archive's ``code/*.py`` members
and its pickles *without executing them* and refuses anything that is not on an
allowlist of pure tensor operations, naming the offending call. The serialized code is
Python syntax, so it is parsed with :mod:`ast`; a member that does not parse is
refused too (fail closed).

A ``torch.export`` program unpickles example inputs and constants marked "use pickle"
with ``weights_only=False``, opaque constants with :func:`pickle.loads`, and
dlopens AOTInductor shared libraries. :func:`guarded_export_load` loads one with every
unpickling forced to ``weights_only=True`` and those other paths refused, and
:func:`export_graph_problems` lists graphs that call operators off the allowlist.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import pickle
import pickletools
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError, UntrustedCodeError

# What reading a damaged zip archive raises (a user's broken file, not our bug).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError)

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
    strings: list[str] = []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(str(arg))
        elif op.name == "GLOBAL":
            found.append(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.append(f"{strings[-2]}.{strings[-1]}" if len(strings) >= 2 else "?")
    return found


def torchscript_problems(path: Path) -> list[str]:
    """Every refused construct of a TorchScript archive, as ``member: what``; empty when it passes."""
    problems: list[str] = []
    with zipfile.ZipFile(path) as zf:
        members = zf.namelist()
        code = [n for n in members if "/code/" in f"/{n}" and n.endswith(".py")]
        trees: dict[str, ast.AST] = {}
        for name in code:
            try:
                trees[name] = ast.parse(zf.read(name).decode("utf-8"), filename=name)
            except (SyntaxError, UnicodeDecodeError, ValueError) as e:
                problems.append(f"{_short_member(name)}: code that cannot be checked ({type(e).__name__})")
        defined: set[str] = set()
        for tree in trees.values():
            defined |= _defined_and_assigned(tree)[0]
        for name, tree in trees.items():
            checker = _Checker(defined, _defined_and_assigned(tree)[1])
            checker.visit(tree)
            for what in dict.fromkeys(checker.refused):
                problems.append(f"{_short_member(name)}: {what}")
        for name in members:
            if not name.endswith(".pkl") or name.endswith(".debug_pkl"):
                continue
            try:
                found = pickle_globals_of(zf.read(name))
            except Exception:
                problems.append(f"{_short_member(name)}: a pickle that cannot be read")
                continue
            for g in dict.fromkeys(found):
                if not _PICKLE_GLOBALS.match(g):
                    problems.append(f"{_short_member(name)}: pickled global {g}")
    return problems


def _short_member(name: str) -> str:
    """``archive/code/__torch__/m.py`` → ``code/__torch__/m.py``."""
    return name.split("/", 1)[1] if "/" in name else name


def _scan(problems_of: Callable[[Path], list[str]], path: Path, what: str) -> list[str]:
    """``problems_of(path)``; a damaged zip archive is the user's mistake, said in one line."""
    try:
        return problems_of(path)
    except _ZIP_ERRORS as e:
        raise InputError(f"cannot load {what} {path}: damaged zip archive ({e})") from None


def check_torchscript(path: Path) -> None:
    """Raise :class:`UntrustedCodeError` naming the calls that keep the archive off the allowlist."""
    problems = _scan(torchscript_problems, path, "TorchScript archive")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise UntrustedCodeError(
            f"refusing to load TorchScript archive {path}: its code calls what is not a pure tensor operation ({shown}), "
            "and loading or running it would execute that",
            hint=TRUST_HINT,
        )


# -- torch.export -------------------------------------------------------------------------
class _Refused(Exception):
    """Raised inside torch.export.load where it would unpickle or run something off the allowlist."""


@contextlib.contextmanager
def guarded_unpickling() -> Iterator[list[str]]:
    """While active, ``torch.load`` is forced to ``weights_only=True`` and other object loaders refuse.

    Yields the list of refusals, so that a refusal that torch's own code swallows (it
    retries, or falls back to a legacy format on ``RuntimeError``) is still seen.
    """
    from torch.export.pt2_archive import _package

    refused: list[str] = []
    real_load = torch.load
    real_obj = torch._C._pickle_load_obj
    real_pickle = _package.pickle

    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return real_load(*args, **kwargs)
        except pickle.UnpicklingError as e:
            m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            refused.append(f"pickled global {m.group(1)}" if m else "pickled Python objects")
            raise _Refused(refused[-1]) from None

    def pickle_obj(*_a: Any, **_k: Any) -> Any:
        refused.append("a custom C++ object")
        raise _Refused(refused[-1])

    class _NoPickle:
        def __getattr__(self, name: str) -> Any:
            if name in ("loads", "load", "Unpickler"):
                refused.append("an opaque pickled Python object")
                raise _Refused(refused[-1])
            return getattr(pickle, name)

    torch.load = load
    torch._C._pickle_load_obj = pickle_obj
    _package.pickle = _NoPickle()  # type: ignore[assignment]
    try:
        yield refused
    finally:
        torch.load = real_load
        torch._C._pickle_load_obj = real_obj
        _package.pickle = real_pickle


def export_archive_problems(path: Path) -> list[str]:
    """What a ``.pt2`` archive holds that would run native code on load (AOTInductor libraries)."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    native = [n for n in names if "/aotinductor/" in f"/{n}" or n.endswith((".so", ".dll", ".dylib"))]
    return [f"{_short_member(n)}: compiled native code (AOTInductor)" for n in native[:3]]


def guarded_export_load(path: Path) -> Any:
    """``torch.export.load`` with nothing unpickled outside the ``weights_only`` allowlist."""
    problems = _scan(export_archive_problems, path, "torch.export program")
    if problems:
        raise _export_refusal(path, problems)
    with guarded_unpickling() as refused:
        try:
            ep = torch.export.load(str(path))
        except _Refused:
            ep = None
    if refused or ep is None:
        raise _export_refusal(path, refused or ["pickled Python objects"])
    graph_problems = export_graph_problems(ep.graph_module)
    if graph_problems:
        raise _export_refusal(path, graph_problems)
    return ep


def export_graph_problems(gm: Any) -> list[str]:
    """Operators of an exported graph (and its submodules) that are not on the allowlist."""
    import operator

    bad: list[str] = []
    allowed = allowed_ops()
    for mod in gm.modules():
        graph = getattr(mod, "graph", None)
        if graph is None:
            continue
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            t = node.target
            if t is operator.getitem or isinstance(t, torch._ops.HigherOrderOperator):
                continue
            if getattr(t, "__module__", None) in ("_operator", "operator", "math") or getattr(
                t, "__name__", ""
            ).startswith(("sym_", "_sym_")):
                continue  # arithmetic on symbolic sizes
            name = getattr(t, "name", None)
            qual = name() if callable(name) else None
            if isinstance(t, torch._ops.OpOverload) and qual and qual.split(".", 1)[0] in allowed:
                continue
            bad.append(f"call {qual or getattr(t, '__name__', repr(t))}")
    return list(dict.fromkeys(bad))


def _export_refusal(path: Path, problems: list[str]) -> UntrustedCodeError:
    return UntrustedCodeError(
        f"refusing to load torch.export program {path}: it holds {'; '.join(list(dict.fromkeys(problems))[:3])}, "
        "which loading would unpickle or run",
        hint=EXPORT_HINT,
    )
