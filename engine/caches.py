"""Bounded in-process caches: a dict that forgets its oldest entries past a bound, and counts
its hits and misses for the cache hit rate (engine.monitoring.metrics exports the counts)."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

# Named caches alive in this process (by id: a dict is not hashable), and the counts of those
# gone, so that the exported counters never go down while the process lives.
_live: weakref.WeakValueDictionary[int, FifoCache[object, object]] = weakref.WeakValueDictionary()
_retired: dict[str, list[int]] = {}


class FifoCache(OrderedDict[K, V]):
    """A dict of at most max_count entries: adding a new key past that forgets the oldest.

    popitem(last=False) is O(1). Popping a plain dict's first key is not: iteration walks every
    slot freed before it, which at 100k entries cost 33 us per insert (measured) once full.

    hits and misses are counted by the callers, where a lookup is decided (`cache.hits += 1`:
    a slot increment on the hot path, no lock, no float; the rate is the scrape's business).
    Only named caches are exported: those whose miss costs a Redis round trip (the accounts and
    the hold labels of engine/ops.py). The key-name caches (KeySpace's, the script keys) miss
    exactly when the accounts cache does, so counting them would cost the hot path for nothing."""

    __slots__ = ("hits", "max_count", "misses", "name")

    def __init__(self, max_count: int, name: str = "") -> None:
        super().__init__()
        self.name = name
        self.hits = 0
        self.misses = 0
        assert max_count >= 1
        self.max_count = max_count
        if name:
            _live[id(self)] = self  # type: ignore[assignment]

    def __setitem__(self, key: K, value: V) -> None:
        if len(self) >= self.max_count and key not in self:
            self.popitem(last=False)
        super().__setitem__(key, value)

    def __del__(self) -> None:
        if getattr(self, "name", ""):
            _live.pop(id(self), None)
            counts = _retired.setdefault(self.name, [0, 0])
            counts[0] += self.hits
            counts[1] += self.misses


def counts() -> dict[str, tuple[int, int]]:
    """(hits, misses) by cache name, over every named cache this process made."""
    out = {name: (h, m) for name, (h, m) in _retired.items()}
    for cache in list(_live.values()):
        h, m = out.get(cache.name, (0, 0))
        out[cache.name] = (h + cache.hits, m + cache.misses)
    return out
