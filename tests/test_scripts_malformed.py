"""No script raises after its first write (issue 15, item 14): a key of the wrong type, a
non-integer event counter or balance is answered with an error BEFORE anything is written.

hold_batch deferred its balance and counter writes to the end of the batch: an error raised by
a later operation left the earlier ones' holds and journal entries without their balance change
and their event ids reusable. Each script here meets each kind of malformed key it could touch,
and the whole key space of the test must be exactly as before."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from redis import exceptions as redis_errors

from engine.batching import batch_script
from engine.commands import Script
from engine.errors import Unavailable
from engine.service import ReserveService
from tests.engine_helpers import Clock

A, B = "RESERVE_USDT_CRYPTO", "RESERVE_UGX_FIAT"


def _key_space(service: ReserveService) -> dict[str, Any]:
    """Every key of the test's prefix with its type and whole content."""
    c = service.client
    out: dict[str, Any] = {}
    for key in c.scan_iter(match=f"{service.ops.keys.prefix}:*", count=1000):
        kind = c.type(key)
        value: Any
        if kind == "string":
            value = c.get(key)
        elif kind == "hash":
            value = c.hgetall(key)
        elif kind == "zset":
            value = c.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(c.smembers(key))
        elif kind == "stream":
            value = c.xrange(key)
        else:
            value = None
        out[key] = (kind, value)
    return out


def _hold_call(service: ReserveService, name: str, label: str, ref: str, *args: Any) -> Script:
    """A reserve / commit / release call as Ops builds it (for hold_batch)."""
    ops = service.ops
    k = ops.keys.account(label)
    keys, _ = ops._script_keys(k, ref)
    return Script(name, keys, [ops.clock_ms(), k.shard + 1, ops.keys.shard_count, label, ref,
                               *args, ops.retention_ms, 16, 16])


def _batch(service: ReserveService) -> None:
    """A batch whose first operations are fine (on A) and whose last touches B: without the
    checks up front, A's hold and journal entry were written before B's key raised."""
    calls = [_hold_call(service, "reserve", A, "b-new", 5, 0, "swap", ""),
             _hold_call(service, "commit", A, "h-a", 1, "", ""),
             _hold_call(service, "reserve", B, "b-new2", 5, 0, "swap", "")]
    if service.ops.keys.account(A).shard != service.ops.keys.account(B).shard:
        calls = calls[:2]  # one batch is one shard
    service.driver.execute(batch_script(calls))


CALLS: dict[str, Callable[[ReserveService], Any]] = {
    "reserve": lambda s: s.reserve_amount("UGX", "5", "fiat", "new", "swap"),
    "commit": lambda s: s.commit_reserve("h-b", "1"),
    "release": lambda s: s.release_reserve("h-b"),
    "top_up": lambda s: s.top_up_reserve("UGX", "5", "fiat", "new-top-up"),
    "withdraw": lambda s: s.withdraw_from_reserve("UGX", "5", "fiat", "new-withdrawal"),
    "reserve_many": lambda s: s.run(s.ops.reserve_many(
        [(s.ops.reserve_spec("USDT", "crypto"), 1, "m1"),
         (s.ops.reserve_spec("UGX", "fiat"), 1, "m2")], "swap")),
    "hold_batch": _batch,
    "expire": lambda s: s.sweep(),
    "open_account": lambda s: s.run(s.ops.open_account(s.ops.reserve_spec("UGX", "fiat"))),
    "audit": lambda s: s.run(s.ops.audit("admin", "cache_clear", "127.0.0.1", {})),
}


def _plant(service: ReserveService, what: str) -> None:
    c, keys = service.client, service.ops.keys
    k = keys.account(B)
    if what == "seq":
        c.set(k.seq, "12x")
    elif what == "stream":  # a hash where the journal stream belongs
        c.delete(k.stream)
        c.hset(k.stream, "not", "a stream")
    elif what == "holds":  # a string where the account's holds hash belongs
        c.delete(k.holds)
        c.set(k.holds, "not a hash")
    elif what == "total":
        c.hset(k.acct, "total", "1.5")
    elif what == "acct":  # a string where the account's hash belongs
        c.delete(k.acct)
        c.set(k.acct, "not a hash")


# open_account and audit touch no account's holds or balances (open_account's account hash is
# covered by "acct"); the sweep visits every account, B among them
PLANTS = {name: ("seq", "stream", "holds", "total", "acct") for name in CALLS}
PLANTS["audit"] = ("seq", "stream")
PLANTS["open_account"] = ("seq", "stream", "acct")
CASES = [(name, what) for name, plants in PLANTS.items() for what in plants]


@pytest.mark.parametrize(("script", "what"), CASES)
def test_a_malformed_key_is_refused_before_any_write(backend: dict[str, Any], script: str,
                                                     what: str) -> None:
    clock = Clock()
    service = ReserveService(backend["sync"], backend["settings"], clock_ms=clock)
    service.top_up_reserve("USDT", "100", "crypto", "seed-a")
    service.top_up_reserve("UGX", "1000", "fiat", "seed-b")
    service.reserve_amount("USDT", "10", "crypto", "h-a", "swap")
    service.reserve_amount("UGX", "10", "fiat", "h-b", "swap", ttl_s=1)
    service.ops._hold_labels.clear()  # every call asks Redis, as a fresh process would
    clock.advance_s(2)  # h-b is due: the sweep and the lazy expiry would end it
    if script == "open_account":
        service.ops._accounts.clear()
        if what != "acct":
            service.client.delete(service.ops.keys.account(B).acct)  # to be opened anew
    _plant(service, what)
    before = _key_space(service)
    with pytest.raises((redis_errors.ResponseError, Unavailable)) as raised:
        CALLS[script](service)
    if isinstance(raised.value, Unavailable):  # the engine's one mapping of a Redis refusal
        assert raised.value.details["code"] == "redis_error"
    else:
        assert re.match("malformed key|WRONGTYPE", str(raised.value))
    assert _key_space(service) == before
