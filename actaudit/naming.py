"""The site-naming rule that lets rewrite and prune find the sites an audit reported.

A site is named after its base (a module path, or an op when there is none): ``base``
when the base occurs once in the model, ``base#k`` (k = 0, 1, … in execution order) when
it occurs several times. Every backend and the rewrite planner name sites through here.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

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
