"""The engine's in-process caches are bounded (engine/caches.py): the oldest entries go first,
and an operation whose cached entry was forgotten still finds its hold through Redis."""

from __future__ import annotations

from typing import Any

import pytest

from engine import limits
from engine.caches import FifoCache
from tests.engine_helpers import make_service, minor_balance


def test_the_oldest_entry_goes_first_and_only_past_the_bound() -> None:
    cache: FifoCache[str, int] = FifoCache(3)
    for i, key in enumerate("abcd"):
        cache[key] = i
    assert list(cache.items()) == [("b", 1), ("c", 2), ("d", 3)]
    cache["c"] = 20  # a key it holds: nothing forgotten, its place kept
    assert list(cache.items()) == [("b", 1), ("c", 20), ("d", 3)]
    cache["e"] = 4
    assert list(cache) == ["c", "d", "e"]
    assert cache.get("b") is None and cache["e"] == 4
    for i in range(10_000):  # stays bounded under a long stream of new keys
        cache[f"k{i}"] = i
    assert list(cache) == ["k9997", "k9998", "k9999"]
    with pytest.raises(AssertionError):
        FifoCache(0)


def test_holds_forgotten_by_the_cache_are_found_in_redis(backend: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "hold_label_cache_max", 3)
    monkeypatch.setattr(limits, "account_cache_max", 1)
    service = make_service(backend)
    service.top_up_reserve("UGX", "1000", "fiat", "seed-ugx")
    service.top_up_reserve("KES", "1000", "fiat", "seed-kes")
    for i in range(6):
        service.reserve_amount("UGX" if i % 2 else "KES", "10", "fiat", f"h{i}", "swap")
    assert list(service.ops._hold_labels) == ["h3", "h4", "h5"]
    assert len(service.ops._accounts) == 1 and len(service.ops.keys._accounts) == 1
    for i in range(6):  # h0-h2 by the index, h3-h5 by the cache: the same answers
        if i % 3:
            assert service.commit_reserve(f"h{i}")["hold_state"] == "committed"
        else:
            assert service.release_reserve(f"h{i}")["hold_state"] == "released"
    # committed: h1, h5 (UGX) and h2, h4 (KES): 20 UGX and 20 KES gone, nothing held
    assert minor_balance(service, "UGX", "fiat") == (980, 0)
    assert minor_balance(service, "KES", "fiat") == (100_000 - 2_000, 0)
