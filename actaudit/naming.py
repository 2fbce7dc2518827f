"""The site-naming rule that lets rewrite and prune find the sites an audit reported.

A site is named after its base (a module path, or an op when there is none): ``base``
when the base occurs once in the model, ``base#k`` (k = 0, 1, … in execution order) when
it occurs several times. Every backend and the rewrite planner name sites through here.

A functional call (``F.relu``, ``torch.sigmoid``, ``x.relu()``, an exported ``Relu`` node
outside an activation module) whose input a child module of its caller produced is named
after that module: ``conv2.relu`` rather than ``relu#1``. The former name stays with the
site (``former_name`` in the JSON), and everything that matches sites by name (gates,
``--against``, ``--sites``, ``--unit-axis``, ``merge``) accepts it with a note. Where no
module produced the input, or the derived name is another site's base, the site keeps its
former name (the ``#k`` rule); two sites with the same derived name get ``#k`` among themselves.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable, Sequence

_SUFFIX = re.compile(r"#\d+$")


def site_name(base: str, k: int, repeats: int) -> str:
    """The name of the ``k``-th occurrence of ``base`` when ``base`` occurs ``repeats`` times."""
    return base if repeats == 1 else f"{base}#{k}"


def site_names(bases: Iterable[str]) -> list[str]:
    """Names for site bases listed in execution order."""
    order = list(bases)
    repeats = Counter(order)
    seen: Counter[str] = Counter()
    out = []
    for base in order:
        out.append(site_name(base, seen[base], repeats[base]))
        seen[base] += 1
    return out


def base_of(name: str) -> str:
    """``layer.relu#2`` → ``layer.relu``; a name without a suffix is its own base."""
    return _SUFFIX.sub("", name)


def derived_base(producer: str, scope: str, label: str) -> str | None:
    """``conv2.relu`` for a functional ``label`` call in module ``scope`` whose input module
    ``producer`` returned; None unless ``producer`` is a module strictly inside ``scope``."""
    if not producer or producer == scope or (scope and not producer.startswith(scope + ".")):
        return None
    return f"{producer}.{label}"


def named_sites(bases: Sequence[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """(name, former name or None) for (former-rule base, derived base or None) pairs in execution order.

    Former names are :func:`site_names` of the former bases, unchanged. A derived base that is
    also some site's former base falls back to the former name, so no name ever means two sites.
    """
    former = site_names(b for b, _ in bases)
    taken = {b for b, _ in bases}
    use = [d is not None and d != b and d not in taken for b, d in bases]
    derived = iter(site_names(d for (_, d), u in zip(bases, use, strict=True) if u and d is not None))
    out: list[tuple[str, str | None]] = []
    for old, u in zip(former, use, strict=True):
        out.append((next(derived), old) if u else (old, None))
    return out


def matches(glob: str, name: str, former: str | None) -> tuple[bool, bool]:
    """(matched, by the former name only) for a user's site glob."""
    if fnmatch.fnmatchcase(name, glob) or fnmatch.fnmatchcase(base_of(name), glob):
        return True, False
    if former and (fnmatch.fnmatchcase(former, glob) or fnmatch.fnmatchcase(base_of(former), glob)):
        return True, True
    return False, False


def former_note(what: str, pairs: Iterable[tuple[str, str]]) -> str | None:
    """One line for the sites an option or file named by their former names: ``old → new``."""
    seen = dict(pairs)
    if not seen:
        return None
    shown = ", ".join(f"{old} → {new}" for old, new in list(seen.items())[:6])
    more = f" (+{len(seen) - 6} more)" if len(seen) > 6 else ""
    return f"{what} named site(s) by their former name(s): {shown}{more}; functional sites are now named after the module that produced their input"
