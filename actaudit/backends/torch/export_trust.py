"""Static checks of ``torch.export`` programs (``.pt2``), made on the bytes that will be loaded.

``torch.export.load`` unpickles example inputs and constants marked "use pickle" with
``weights_only=False``, opaque constants with :func:`pickle.loads`, dlopens AOTInductor
shared libraries, and parses every symbolic shape expression of the program's JSON with
``sympy.sympify``, which evaluates Python. :func:`guarded_export_load`:

* reads the archive through torch's own zip reader (:class:`.archive.ArchiveView`), so
  names, sizes and duplicates are seen as the loader sees them;
* refuses AOTInductor members;
* checks every expression string in the archive's JSON against a strict grammar (calls of
  the sympy and torch classes the serializer emits, integers, symbol names, arithmetic)
  before the loader sees any of them;
* loads from the same bytes with every unpickling forced to ``weights_only=True``;
* walks every graph, higher-order operators and their operands included, against the
  operator allowlist.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import operator
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError, UntrustedCodeError
from .archive import ArchiveView
from .trust import allowed_ops

EXPORT_HINT = "pass --trust-code only if you trust the file's origin, or save the program with tensors only"

# Classes torch's serializer writes in ``srepr`` form (sympy's core and torch's
# torch.utils._sympy.functions, the table of the deserializer), plus the infix spelling
# of older archives. Every name resolves to a sympy or torch class in sympify's namespace.
_SYMPY_CALLS = frozenset(
    [
        "Symbol",
        "Dummy",
        "Integer",
        "Rational",
        "Float",
        "Half",
        "One",
        "Zero",
        "NegativeOne",
        "Infinity",
        "NegativeInfinity",
        "Add",
        "Mul",
        "Pow",
        "Mod",
        "Max",
        "Min",
        "Abs",
        "floor",
        "ceiling",
        "sign",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "Equality",
        "Unequality",
        "StrictLessThan",
        "StrictGreaterThan",
        "LessThan",
        "GreaterThan",
        "And",
        "Or",
        "Not",
        "Piecewise",
        "ExprCondPair",
        "BooleanTrue",
        "BooleanFalse",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
    ]
)
# A call whose second argument is an exponent or a shift: bounded, or it allocates without bound.
_EXPONENT_CALLS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift", "RShift"})
_MAX_EXPONENT = 64
_MAX_POWERS = 2
_BARE_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "True", "False", "E", "pi"})
_ASSUMPTIONS = frozenset(
    [
        "integer",
        "positive",
        "negative",
        "nonnegative",
        "nonpositive",
        "real",
        "finite",
        "infinite",
        "zero",
        "nonzero",
        "even",
        "odd",
        "rational",
        "extended_real",
        "commutative",
        "precision",
        "evaluate",
    ]
)
_SYMBOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_FLOAT_TEXT = re.compile(r"-?[0-9]{1,40}(\.[0-9]{0,40})?([eE]-?[0-9]{1,3})?\Z")
_CHARSET = re.compile(r"[A-Za-z0-9_ ().,'=+\-*/%<>!&|~]*\Z")
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr)
_MAX_EXPR_CHARS = 20_000
_MAX_EXPR_DEPTH = 48
_MAX_INT = 1 << 64
# JSON of real programs nests ~17 levels; torch's deserializer recurses once per level.
_MAX_JSON_DEPTH = 64


def expr_problem(text: object) -> str | None:
    """Why a symbolic expression string is refused, or None when it is in the grammar."""
    if not isinstance(text, str):
        return "an expression that is not a string"
    if len(text) > _MAX_EXPR_CHARS or not _CHARSET.match(text):
        return f"a symbolic expression outside the grammar ({text[:60]!r})"
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return f"a symbolic expression that does not parse ({text[:60]!r})"
    powers = sum(
        (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow))
        or (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _EXPONENT_CALLS)
        for n in ast.walk(tree)
    )
    if powers > _MAX_POWERS:  # nested powers of small exponents still grow without bound
        return f"a symbolic expression with more than {_MAX_POWERS} powers or shifts"
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_EXPR_DEPTH:
            return f"a symbolic expression nested deeper than {_MAX_EXPR_DEPTH} levels"
        why = _node_problem(node)
        if why:
            return f"a symbolic expression with {why} ({text[:60]!r})"
        if isinstance(node, ast.Call):  # the callee was checked by name; keywords are constants
            children: list[ast.AST] = list(node.args)
        else:
            children = [c for c in ast.iter_child_nodes(node) if not isinstance(c, _SKIP)]
        stack.extend((c, depth + 1) for c in children)
    return None


_SKIP = (ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
# Bare names: torch's symbols (s0, u3, zf1, …) in the infix spelling, and sympy's constants.
_BARE_SYMBOL = re.compile(r"[a-z]{1,4}[0-9]{1,12}\Z")


def _node_problem(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_CALLS:
            return f"a call of {ast.unparse(node.func)[:40]}"
        if node.func.id in _EXPONENT_CALLS and (len(node.args) != 2 or _small_int(node.args[1]) is None):
            return f"an exponent or shift that is not an integer of at most {_MAX_EXPONENT}"
        for kw in node.keywords:
            if kw.arg not in _ASSUMPTIONS or not isinstance(kw.value, ast.Constant):
                return f"the keyword {kw.arg}"
            if kw.arg == "precision" and not (isinstance(kw.value.value, int) and 0 < kw.value.value <= 128):
                return "a float precision over 128 bits"
        return None
    if isinstance(node, ast.Name):
        return None if node.id in _BARE_NAMES or _BARE_SYMBOL.match(node.id) else f"the name {node.id[:40]}"
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or (isinstance(v, int) and abs(v) <= _MAX_INT):
            return None
        if isinstance(v, str) and (_SYMBOL_NAME.match(v) or _FLOAT_TEXT.match(v)):
            return None
        return f"the constant {str(v)[:40]!r}"
    if isinstance(node, ast.BinOp):
        if not isinstance(node.op, _BINOPS):
            return "an operator outside + - * / // % ** & |"
        if isinstance(node.op, ast.Pow) and _small_int(node.right) is None:
            return f"an exponent that is not an integer of at most {_MAX_EXPONENT}"
        return None
    if isinstance(node, ast.UnaryOp):
        return None if isinstance(node.op, (ast.USub, ast.UAdd, ast.Invert)) else "a unary operator"
    if isinstance(node, ast.Compare):
        ok = all(isinstance(o, (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for o in node.ops)
        return None if ok else "a comparison outside == != < <= > >="
    return f"a {type(node).__name__} expression"


def _small_int(node: ast.AST) -> int | None:
    """The value of ``k``, ``-k`` or ``Integer(k)`` when |k| is at most the exponent limit."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer":
        node = node.args[0] if len(node.args) == 1 and not node.keywords else node
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int and node.value <= _MAX_EXPONENT:
        return node.value
    return None


def _json_problems(view: ArchiveView) -> list[str]:
    """Expression strings of every JSON member (the programs under models/, configs) off the grammar."""
    problems: list[str] = []
    for name in view.names:
        low = name.lower()
        if not (low.endswith(".json") or low.startswith("models/")):
            continue
        try:
            doc = json.loads(view.read(name, "metadata").decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            problems.append(f"{name}: JSON that cannot be read")
            continue
        except RecursionError:
            raise _limit(view, name, f"nests deeper than {_MAX_JSON_DEPTH} levels") from None
        stack: list[tuple[object, int]] = [(doc, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > _MAX_JSON_DEPTH:
                raise _limit(view, name, f"nests deeper than {_MAX_JSON_DEPTH} levels")
            if isinstance(node, dict):
                if "expr_str" in node:
                    why = expr_problem(node["expr_str"])
                    if why:
                        problems.append(f"{name}: {why}")
                stack.extend((v, depth + 1) for v in node.values())
            elif isinstance(node, list):
                stack.extend((v, depth + 1) for v in node)
    return problems


def _limit(view: ArchiveView, name: str, why: str) -> InputError:
    return InputError(
        f"refusing to load torch.export program {view.path}: {name} {why}, the checker's limit",
        hint="torch.export.save never writes such a program",
    )


# -- loading -------------------------------------------------------------------------------------
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

    def pickle_obj(*_a: object, **_k: object) -> object:
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


def export_archive_problems(view: ArchiveView) -> list[str]:
    """What a ``.pt2`` archive holds that would run native code on load (AOTInductor libraries)."""
    native = [
        n for n in view.names if "aotinductor/" in n.lower() or n.lower().endswith((".so", ".dll", ".dylib"))
    ]
    return [f"{n}: compiled native code (AOTInductor)" for n in native[:3]]


def guarded_export_load(data: bytes | Path, path: Path | None = None) -> torch.export.ExportedProgram:
    """``torch.export.load`` of these bytes, after the archive checks, with nothing unpickled off the allowlist."""
    if isinstance(data, Path):
        path, data = data, data.read_bytes()
    path = path or Path("<bytes>")
    view = ArchiveView(data, path, "torch.export program")
    problems = export_archive_problems(view) + _json_problems(view)
    if problems:
        raise _export_refusal(path, problems)
    with guarded_unpickling() as refused:
        try:
            ep = torch.export.load(io.BytesIO(data))
        except _Refused:
            ep = None
    if refused or ep is None:
        raise _export_refusal(path, refused or ["pickled Python objects"])
    graph_problems = export_graph_problems(ep.graph_module)
    if graph_problems:
        raise _export_refusal(path, graph_problems)
    return ep


# -- graphs --------------------------------------------------------------------------------------
# Higher-order operators whose semantics are control flow or effect ordering around the ops
# and subgraphs they are given; both are checked. Any other (a Triton kernel wrapper, a
# delegate call, torchbind calls) is refused.
ALLOWED_HOPS = frozenset(
    {
        "cond",
        "map_impl",
        "while_loop",
        "scan",
        "associative_scan",
        "invoke_subgraph",
        "with_effects",
        "auto_functionalized",
        "auto_functionalized_v2",
        "wrap_with_set_grad_enabled",
        "wrap_with_autocast",
    }
)


def _target_problem(t: object) -> str | None:
    """Why a call target (or an operator passed to a higher-order operator) is refused."""
    if t is operator.getitem:
        return None
    if isinstance(t, torch._ops.HigherOrderOperator):
        return None if t.name() in ALLOWED_HOPS else f"call higher-order operator {t.name()}"
    if getattr(t, "__module__", None) in ("_operator", "operator", "math") or getattr(
        t, "__name__", ""
    ).startswith(("sym_", "_sym_")):
        return None  # arithmetic on symbolic sizes
    name = getattr(t, "name", None)
    qual = name() if callable(name) else None
    if isinstance(t, torch._ops.OpOverload) and qual and qual.split(".", 1)[0] in allowed_ops():
        return None
    return f"call {qual or getattr(t, '__name__', repr(t))}"


def _operands(value: object) -> Iterator[object]:
    """Operators and callables among a node's arguments, through lists, tuples and dicts."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(
            v, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)
        ) or (callable(v) and not isinstance(v, (torch.fx.Node, torch.nn.Module, type))):
            yield v


def export_graph_problems(gm: torch.nn.Module) -> list[str]:
    """Operators of an exported graph, its submodules and higher-order operators' operands, off the allowlist."""
    bad: list[str] = []
    for mod in gm.modules():
        graph = getattr(mod, "graph", None)
        if graph is None:
            continue
        for node in graph.nodes:
            if node.op in ("call_module", "call_method"):
                bad.append(f"{node.op} {node.target}")
            if node.op != "call_function":
                continue
            why = _target_problem(node.target)
            if why:
                bad.append(why)
            if isinstance(node.target, torch._ops.HigherOrderOperator):
                for op in _operands((node.args, node.kwargs)):
                    why = _target_problem(op)
                    if why:
                        bad.append(f"{why} (inside {node.target.name()})")
    return list(dict.fromkeys(bad))


def _export_refusal(path: Path, problems: list[str]) -> UntrustedCodeError:
    return UntrustedCodeError(
        f"refusing to load torch.export program {path}: it holds {'; '.join(list(dict.fromkeys(problems))[:3])}, "
        "which loading would unpickle or run",
        hint=EXPORT_HINT,
    )
