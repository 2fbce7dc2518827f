"""A tensor-keyed map by identity that holds its keys weakly, for the per-op bookkeeping of capture.

``torch.utils.weak.WeakIdKeyDictionary`` builds a Python ``WeakIdRef`` object with a
callback for every insert and every lookup (``__init__``, ``__hash__``, ``__eq__`` run in
Python): on a 1,000-site model that was a third of the capture's Python time. Here a
plain ``dict`` maps ``id(tensor)`` to ``(weakref.ref(tensor), value)``; a lookup is valid
only while that weak reference still returns the very tensor, so a recycled ``id`` never
matches a dead entry. Dead entries are dropped in bulk whenever the map has doubled since
the last sweep. Values live until that sweep: use it only for small values (tags, names,
site keys), never for values that hold tensors.
"""

from __future__ import annotations

import weakref
from typing import Generic, TypeVar

V = TypeVar("V")
D = TypeVar("D")
_MIN_SWEEP = 4096


class TensorMap(Generic[V]):
    __slots__ = ("_d", "_limit")

    def __init__(self) -> None:
        self._d: dict[int, tuple[weakref.ref[object], V]] = {}
        self._limit = _MIN_SWEEP

    def __setitem__(self, key: object, value: V) -> None:
        d = self._d
        d[id(key)] = (weakref.ref(key), value)
        if len(d) > self._limit:
            self._d = {k: e for k, e in d.items() if e[0]() is not None}
            self._limit = max(_MIN_SWEEP, 2 * len(self._d))

    def get(self, key: object, default: D = None) -> V | D:  # type: ignore[assignment]
        e = self._d.get(id(key))
        if e is None or e[0]() is not key:
            return default
        return e[1]

    def __getitem__(self, key: object) -> V:
        e = self._d.get(id(key))
        if e is None or e[0]() is not key:
            raise KeyError(key)
        return e[1]

    def __contains__(self, key: object) -> bool:
        e = self._d.get(id(key))
        return e is not None and e[0]() is key

    def __bool__(self) -> bool:
        """Whether any entry may be live (dead ones count until the next sweep): a cheap pre-check."""
        return bool(self._d)

    def __len__(self) -> int:
        return sum(1 for e in self._d.values() if e[0]() is not None)
