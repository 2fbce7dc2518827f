"""The package's shape stays readable: imports run down the floors of the pipeline and never in a
cycle, no file is over 600 lines, no function over 80.

These limits were reached by splitting modules by job; the test keeps a later change from
quietly undoing that. It reads the source with :mod:`ast` and imports nothing of the package.
Every import counts: module level, function-local (lazy) and ``if TYPE_CHECKING:`` alike.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "actaudit"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80

# The floors of the pipeline, bottom first. A module may import modules of its own floor or below,
# never above: data flows load → calibrate → capture → classify → report / rewrite / prune, and the
# vocabulary those stages share sits underneath all of them. A module belongs to the floor of the
# longest prefix listed here (``actaudit.edit`` covers ``actaudit.edit.cuts``).
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    # leaf utilities: import nothing of the package but each other
    (
        "leaf",
        (
            "actaudit._version",
            "actaudit.errors",
            "actaudit.jsonform",
            "actaudit.sanitize",
            "actaudit.naming",
            "actaudit.kinds",
            "actaudit.hints",
            "actaudit.progress",
            "actaudit.unitaxis",
            "actaudit.fileio",
            "actaudit.detect",
            "actaudit.distributed",
            # the input-file inventory and the ONNX external-data reader (checked before a run starts)
            "actaudit.inventory",
            "actaudit.onnxrefs",
            # JSON read with bounds on size, depth and numbers
            "actaudit.jsonread",
        ),
    ),
    # the vocabulary every backend, stage and report shares: counters, verdicts, gates, edit plans
    (
        "vocabulary",
        (
            "actaudit.stats",
            "actaudit.counters",
            "actaudit.verdicts",
            "actaudit.gates",
            "actaudit.edit",
            # the shard-report schema check, read by merge before it sizes anything
            "actaudit.shardcheck",
        ),
    ),
    ("data", ("actaudit.data",)),
    # the only floor that imports torch, onnx or onnxruntime; backends.base holds its protocols
    ("backends", ("actaudit.backends",)),
    # load and calibrate: the options a run is given, the model and data it binds, a shard's share
    ("load", ("actaudit.options", "actaudit.loading", "actaudit.calibration", "actaudit.shard")),
    # classify and report: a capture becomes a Report (assemble), shard reports add up (merge)
    (
        "report",
        (
            "actaudit.report",
            "actaudit.assemble",
            "actaudit.merge",
            "actaudit.junit",
            "actaudit.inspection",
            # reports over a training run, folded in one at a time
            "actaudit.history",
        ),
    ),
    # the stages that change models, and what they share
    ("stages", ("actaudit.variants", "actaudit.rewrite", "actaudit.prune")),
    # the library entry point, and the training callback that calls it
    ("api", ("actaudit.api", "actaudit", "actaudit.callbacks")),
    ("cli", ("actaudit.cli", "actaudit.__main__")),
]

# Upward imports that exist today and are still to be removed, each named by its module pair and
# why it is there. This list must only shrink; a new upward import fails the test.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package's modules that ``mod`` imports anywhere (function-local imports included)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            subs = [f"{name}.{a.name}" for a in node.names]
            # `from pkg import module` depends on that module; `from pkg import name` on pkg
            names = [s for s in subs if s in mods] + ([name] if any(s not in mods for s in subs) else [])
        else:
            continue
        for n in names:
            while n and n not in mods:
                n = n.rpartition(".")[0]
            if n and n != mod:
                out.add(n)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_the_cycle_finder_finds_a_known_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    assert len(graph) > 50 and graph["actaudit.cli"], "the package was not read"
    assert _cycles(graph) == []


def test_no_file_over_600_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_no_function_over_80_lines() -> None:
    long = {}
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = n
    assert long == {}


def _floor(mod: str) -> int | None:
    """The floor index of ``mod``: its longest listed prefix (the bare package matches only itself)."""
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(FLOORS):
        for p in prefixes:
            matches = mod == p or (p != "actaudit" and mod.startswith(p + "."))
            if matches and (best is None or len(p) > best[0]):
                best = (len(p), i)
    return None if best is None else best[1]


def _upward(graph: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """Every import from a module to one on a higher floor: (importer, imported) → the two floors."""
    out = {}
    for mod, deps in graph.items():
        here = _floor(mod)
        for dep in deps:
            there = _floor(dep)
            if here is not None and there is not None and there > here:
                out[(mod, dep)] = f"{FLOORS[here][0]} imports {FLOORS[there][0]}"
    return out


def test_every_module_has_a_floor() -> None:
    assert sorted(m for m in _modules() if _floor(m) is None) == []


def test_the_floor_rule_finds_a_known_upward_import() -> None:
    graph = {"actaudit.edit.cuts": {"actaudit.prune.core"}, "actaudit.cli.audit": {"actaudit.api"}}
    assert _upward(graph) == {("actaudit.edit.cuts", "actaudit.prune.core"): "vocabulary imports stages"}


def test_imports_run_down_the_floors() -> None:
    """No module imports one on a higher floor, lazily or not, beyond the (shrinking) known list."""
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    found = _upward(graph)
    new = {pair: why for pair, why in found.items() if pair not in KNOWN_UPWARD}
    assert new == {}, "imports against the pipeline (move the shared type down a floor instead)"
    gone = sorted(set(KNOWN_UPWARD) - set(found))
    assert gone == [], "fixed upward imports: remove them from KNOWN_UPWARD"


def test_backends_do_not_import_each_other() -> None:
    """The torch and ONNX backends meet only in backends/base.py and the floors below it."""
    mods = _modules()
    crossing = sorted(
        (m, d)
        for m, p in mods.items()
        for d in _imports(m, p, mods)
        for a, b in (("torch", "onnx"), ("onnx", "torch"))
        if m.startswith(f"actaudit.backends.{a}") and d.startswith(f"actaudit.backends.{b}")
    )
    assert crossing == []
