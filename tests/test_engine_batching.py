"""Micro-batching (engine/batching.py, lua/hold_batch.lua): concurrent reserves, commits and
releases share batch script calls, and every caller still gets what the unbatched engine gives
it: the same results, the same errors with the same messages, the same idempotent repeats, and
money conserved. Run on the embedded fakeredis and on the real Redis."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

import fakeredis
import pytest
import redis.asyncio
from redis import exceptions as redis_errors

from engine.batching import BatchingDriver, FastPackConnection, batch_script, use_fast_pack
from engine.commands import Script
from engine.config import Settings
from engine.drivers import AsyncDriver
from engine.engine import ReserveEngine
from engine.errors import InsufficientReserve, ReserveError
from engine.service import ReserveService
from engine.types import HoldResult
from tests.engine_helpers import (
    Clock,
    assert_journal_matches,
    check_all_accounts,
    journal,
    make_service,
    minor_balance,
)

TOTAL = 10_000


def engine_for(backend: dict[str, Any], client: Any, batching: bool = True,
               clock: Clock | None = None, settings: Settings | None = None) -> ReserveEngine:
    return ReserveEngine(client, settings or backend["settings"], clock_ms=clock or Clock(),
                         batching=batching)


def outcome(result: HoldResult | BaseException) -> tuple[Any, ...]:
    """What a caller sees, less the balances after (they depend on the order within a wave)."""
    if isinstance(result, InsufficientReserve):
        # Available depends on the order too; the rest of the message does not
        return ("InsufficientReserve", result.message.split(", Available")[0])
    if isinstance(result, ReserveError):
        return (type(result).__name__, result.message, result.details)
    assert isinstance(result, HoldResult), result
    hold = result.hold
    return ("ok", hold.reference_id, hold.state.value, hold.amount_minor, hold.committed_minor,
            hold.expires_ms, result.applied, result.event_id > 0)


# Waves of concurrent calls; a wave starts when the previous one has answered.
WAVES: list[list[tuple[Any, ...]]] = [
    [("reserve", f"r{i}", 100) for i in range(30)]
    + [("reserve", "huge", 20_000), ("reserve", "ttl1", 50, 60), ("commit", "nope", None)],
    [("reserve", "r0", 100), ("reserve", "r1", 999), ("commit", "r2", None), ("commit", "r3", 40),
     ("release", "r4", None), ("release", "r5", None), ("release", "r6", None),
     ("release", "missing", None), ("reserve", "bad ref!", 1)],
    [("commit", "r4", None), ("release", "r2", None), ("commit", "r3", 40), ("commit", "r3", 50),
     ("release", "r5", None), ("commit", "r7", 101), ("reserve", "r2", 100),
     ("commit", "ttl1", None)],  # ttl1 is past its TTL by now (the clock moves 120 s)
]


async def run_waves(engine: ReserveEngine, clock: Clock) -> list[list[tuple[Any, ...]]]:
    async def call(op: tuple[Any, ...]) -> HoldResult:
        kind, ref, amount = op[:3]
        if kind == "reserve":
            ttl_s = op[3] if len(op) > 3 else None
            return await engine.reserve_amount("UGX", amount, "fiat", ref, "swap", ttl_s=ttl_s)
        if kind == "commit":
            return await engine.commit_reserve(ref, amount)
        return await engine.release_reserve(ref)

    seen = []
    for wave in WAVES:
        results = await asyncio.gather(*(call(op) for op in wave), return_exceptions=True)
        seen.append([outcome(r) for r in results])
        clock.advance_s(60)
    return seen


async def test_a_batch_answers_each_caller_as_the_unbatched_engine(backend: dict[str, Any],
                                                                   async_redis: Any) -> None:
    answers = []
    for batching in (False, True):
        settings = replace(backend["settings"],
                           key_prefix=f"{backend['settings'].key_prefix}b{int(batching)}")
        clock = Clock()
        service = ReserveService(backend["sync"], settings, clock_ms=clock)
        service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
        engine = engine_for(backend, async_redis, batching, clock, settings)
        answers.append(await run_waves(engine, clock))
        check_all_accounts(service)
        assert_journal_matches(service)
        # committed: r2 in full, 40 of r3; ended: r2 to r6 and ttl1; 25 holds of 100 pending
        assert minor_balance(service, "UGX", "fiat") == (TOTAL - 100 - 40, 2500)
        if batching:
            assert isinstance(engine.driver, BatchingDriver)
            # the first wave's 30 reserves went out in fewer calls than operations
            assert engine.driver.batches_count < engine.driver.batched_ops_count
        for key in backend["sync"].scan_iter(match=f"{settings.key_prefix}:*"):
            backend["sync"].delete(key)
    unbatched, batched = answers
    assert batched == unbatched
    # and what they were: spot checks of each kind of answer
    first, second, third = batched
    assert first[0] == ("ok", "r0", "pending", 100, 0, 0, True, True)
    assert first[30] == ("InsufficientReserve",
                         "Insufficient reserve balance. Required: 20000.0")
    assert first[32][:2] == ("HoldNotFound", "Hold nope not found")
    assert second[0] == ("ok", "r0", "pending", 100, 0, 0, False, False)  # a repeat
    assert second[1][:2] == ("ReferenceConflict",
                             "Reference r1 is already used with a different amount or account")
    assert second[3] == ("ok", "r3", "committed", 100, 40, 0, True, True)
    assert second[8][0] == "InvalidRequest"
    assert third[0][:2] == ("HoldAlreadyEnded", "Hold r4 was already released")
    assert third[1][:2] == ("HoldAlreadyEnded", "Hold r2 was already committed")
    assert third[2] == ("ok", "r3", "committed", 100, 40, 0, False, False)
    assert third[3][:2] == ("HoldAlreadyEnded", "Hold r3 was already committed")
    assert third[4] == ("ok", "r5", "released", 100, 0, 0, False, False)
    assert third[5][:2] == ("ExceedsHold", "Cannot commit more than the held amount of hold r7")
    assert third[6] == ("ok", "r2", "committed", 100, 100, 0, False, False)  # reserve repeat
    assert third[7][:2] == ("HoldAlreadyEnded", "Hold ttl1 has expired")


async def test_concurrent_reserves_never_oversell(backend: dict[str, Any],
                                                  async_redis: Any) -> None:
    service = make_service(backend)
    service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
    engine = engine_for(backend, async_redis)

    async def one(i: int) -> str | None:
        try:
            await engine.reserve_amount("UGX", 100, "fiat", f"c{i}", "swap")
        except InsufficientReserve as error:
            assert error.message == "Insufficient reserve balance. Required: 100.0, Available: 0.0"
            return None
        return f"c{i}"

    results = await asyncio.gather(*(one(i) for i in range(300)))
    reserved = [r for r in results if r is not None]
    assert len(reserved) == TOTAL // 100
    assert minor_balance(service, "UGX", "fiat") == (TOTAL, TOTAL)
    locks = [e for e in journal(service) if e.op == "reserve_lock"]
    assert sorted(e.reference for e in locks) == sorted(reserved)
    assert all(e.total_minor >= e.locked_minor for e in locks)
    assert_journal_matches(service)
    assert isinstance(engine.driver, BatchingDriver)
    assert engine.driver.batched_ops_count == 300
    assert engine.driver.batches_count < 300


async def test_concurrent_repeats_of_one_reference_lock_once(backend: dict[str, Any],
                                                             async_redis: Any) -> None:
    service = make_service(backend)
    service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
    engine = engine_for(backend, async_redis)
    results = await asyncio.gather(*(
        engine.reserve_amount("UGX", 100, "fiat", "same", "swap") for _ in range(50)))
    assert sum(r.applied for r in results) == 1
    assert {r.event_id for r in results if not r.applied} == {0}
    commits = await asyncio.gather(*(engine.commit_reserve("same") for _ in range(20)),
                                   return_exceptions=True)
    assert sum(isinstance(c, HoldResult) and c.applied for c in commits) == 1
    assert all(isinstance(c, HoldResult) and c.hold.committed_minor == 100 for c in commits)
    assert minor_balance(service, "UGX", "fiat") == (TOTAL - 100, 0)
    assert [e.op for e in journal(service)].count("reserve_commit") == 1
    assert_journal_matches(service)


async def test_random_cycles_conserve_money(backend: dict[str, Any], async_redis: Any) -> None:
    """64 workers reserve, then commit (in full or in part) or release, on three accounts; the
    money that left is exactly what was committed, and what stays locked is what is pending."""
    service = make_service(backend)
    currencies = ["UGX", "KES", "USD"]
    for code in currencies:
        service.top_up_reserve(code, "5000", "fiat", f"seed-{code}")
    engine = engine_for(backend, async_redis)
    rng = random.Random(7)
    committed_minor = dict.fromkeys(currencies, 0)
    pending_minor = dict.fromkeys(currencies, 0)
    decimals = {"UGX": 1, "KES": 100, "USD": 100}

    async def worker(w: int) -> None:
        for i in range(12):
            code = rng.choice(currencies)
            amount = rng.randint(1, 400)
            ref = f"w{w}-{i}"
            try:
                await engine.reserve_amount(code, amount, "fiat", ref, "swap")
            except InsufficientReserve:
                continue
            choice = rng.random()
            if choice < 0.4:
                result = await engine.commit_reserve(ref)
            elif choice < 0.6:
                result = await engine.commit_reserve(ref, rng.randint(1, amount))
            elif choice < 0.9:
                result = await engine.release_reserve(ref)
            else:
                pending_minor[code] += amount * decimals[code]
                continue
            committed_minor[code] += result.hold.committed_minor

    await asyncio.gather(*(worker(w) for w in range(64)))
    for code in currencies:
        assert minor_balance(service, code, "fiat") == (
            5000 * decimals[code] - committed_minor[code], pending_minor[code])
    check_all_accounts(service)
    assert_journal_matches(service)


async def test_references_indexed_in_other_shards(backend: dict[str, Any],
                                                  async_redis: Any) -> None:
    """With several shards a reference's index often sits in another shard: the operation
    claims it before its script and the batch runs it without the index."""
    settings = replace(backend["settings"], shard_count=4)
    service = ReserveService(backend["sync"], settings, clock_ms=Clock())
    for code in ("UGX", "KES"):
        service.top_up_reserve(code, "1000", "fiat", f"seed-{code}")
    engine = engine_for(backend, async_redis, settings=settings)
    shards = {engine.ops.keys.index(f"k{i}")[0] for i in range(40)}
    assert len(shards) > 1
    results = await asyncio.gather(
        *(engine.reserve_amount("UGX", 10, "fiat", f"k{i}", "swap") for i in range(40)),
        *(engine.reserve_amount("KES", 10, "fiat", f"k{i}", "swap") for i in range(40)),
        return_exceptions=True)
    # each reference is held once, on the account that claimed it first; the other one conflicts
    held = [r for r in results if isinstance(r, HoldResult)]
    conflicts = [r for r in results if isinstance(r, ReserveError)]
    assert len(held) == len(conflicts) == 40
    assert {r.hold.reference_id for r in held} == {f"k{i}" for i in range(40)}
    assert all(type(c).__name__ == "ReferenceConflict" for c in conflicts)
    released = await asyncio.gather(*(engine.release_reserve(f"k{i}") for i in range(40)))
    assert all(r.hold.state.value == "released" for r in released)
    assert minor_balance(service, "UGX", "fiat") == (1000, 0)
    assert minor_balance(service, "KES", "fiat") == (100_000, 0)  # 2 decimals
    locks = [e for e in journal(service) if e.op == "reserve_lock"]
    assert sorted(e.reference for e in locks) == sorted(f"k{i}" for i in range(40))
    check_all_accounts(service)


async def test_a_batch_after_script_flush_loads_the_script_again(backend: dict[str, Any],
                                                                 async_redis: Any) -> None:
    service = make_service(backend)
    service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
    engine = engine_for(backend, async_redis)
    await engine.reserve_amount("UGX", 1, "fiat", "warm", "swap")
    backend["sync"].script_flush()
    results = await asyncio.gather(*(
        engine.reserve_amount("UGX", 100, "fiat", f"f{i}", "swap") for i in range(20)))
    assert all(r.applied for r in results)
    assert minor_balance(service, "UGX", "fiat") == (TOTAL, 2001)


async def test_a_malformed_batch_writes_nothing(backend: dict[str, Any],
                                                async_redis: Any) -> None:
    service = make_service(backend)
    service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
    engine = engine_for(backend, async_redis)
    commands = []
    for ref in ("m1", "m2"):
        keys, _ = engine.ops._script_keys(engine.ops.keys.account("RESERVE_UGX_FIAT"), ref)
        commands.append(Script("reserve", keys, [
            1, 1, 1, "RESERVE_UGX_FIAT", ref, 100, 0, "swap", "", 60_000, 16, 16]))
    script = batch_script(commands)
    assert script.args[:10] == [1, 1, 1, 60_000, 16, 16, 1, "RESERVE_UGX_FIAT", 2, "r"]
    good = await AsyncDriver(async_redis).execute(script)
    assert [reply[0] for reply in good] == [0, 0]
    before = journal(service)
    broken = Script(script.name, script.keys, [*script.args[:-8], "?", *script.args[-7:]])
    with pytest.raises(redis_errors.ResponseError, match="malformed operation 2"):
        await AsyncDriver(async_redis).execute(broken)
    assert journal(service) == before
    assert minor_balance(service, "UGX", "fiat") == (TOTAL, 200)


def test_batching_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESERVES_REDIS_URL", raising=False)
    monkeypatch.delenv("RESERVES_BATCHING", raising=False)
    assert Settings.from_env().batching is True
    monkeypatch.setenv("RESERVES_BATCHING", "0")
    settings = Settings.from_env()
    assert settings.batching is False
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    assert type(ReserveEngine(client, settings).driver) is AsyncDriver
    assert type(ReserveEngine(client, settings, batching=True).driver) is BatchingDriver


def test_fast_pack_writes_what_redis_py_writes() -> None:
    fast, plain = FastPackConnection(), redis.asyncio.Connection()
    for args in [("EVALSHA", "abc", 2, "k1", "{p}:k2", 1800000000000, "", "é|x", b"raw"),
                 ("CLIENT SETINFO", "LIB-NAME", "redis-py"), ("PING",)]:
        assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))
    with pytest.raises(redis_errors.DataError):
        fast.pack_command("SET", "k", None)
    client = redis.asyncio.Redis()
    assert use_fast_pack(client)
    assert client.connection_pool.connection_class is FastPackConnection


def _hold_scripts(service: ReserveService, now_ms: int, expire_max: int) -> list[Script]:
    """Raw reserve / commit / release calls, as Ops builds them, on RESERVE_UGX_FIAT."""
    ops = service.ops
    k = ops.keys.account("RESERVE_UGX_FIAT")

    def call(name: str, ref: str, *args: Any) -> Script:
        keys, _ = ops._script_keys(k, ref)
        return Script(name, keys, [now_ms, 1, 1, k.label, ref, *args, ops.retention_ms,
                                   expire_max, 16])

    return [
        call("reserve", "r1", 100, 0, "swap", ""),
        call("reserve", "r1", 100, 0, "swap", ""),  # repeat
        call("reserve", "r1", 50, 0, "swap", ""),  # conflict
        call("reserve", "big", 5000, 0, "swap", ""),  # exceeds what is available
        call("reserve", "bad", "1.5", 0, "swap", ""),  # invalid amount
        call("commit", "t0", "", "", ""),  # past its TTL: expired now, refused
        call("release", "t1", ""),  # past its TTL: expired by the lazy expiry before it
        call("reserve", "r2", 30, 60_000, "buy", '{"k":1}'),
        call("commit", "r1", 40, "", ""),  # partial
        call("commit", "r1", 40, "", ""),  # repeat
        call("commit", "r1", 50, "", ""),  # already committed with another amount
        call("release", "r1", ""),  # already committed
        call("commit", "r2", 31, "", ""),  # more than held
        call("release", "r2", '{"why":"x"}'),
        call("release", "r2", ""),  # repeat
        call("commit", "r2", "", "", ""),  # already released
        call("commit", "nope", "", "", ""),  # no such hold
        call("reserve", "r3", 900, 0, "swap", ""),  # fits once the expired holds are freed
    ]


def _state(service: ReserveService) -> tuple[Any, ...]:
    c, ops = service.client, service.ops
    k = ops.keys.account("RESERVE_UGX_FIAT")
    journal = [fields for _, fields in c.xrange(k.stream)]
    return (c.hgetall(k.acct), c.hgetall(k.holds), c.zrange(k.expiry, 0, -1, withscores=True),
            c.zrange(k.ended, 0, -1, withscores=True), c.hgetall(ops.keys.index("r1")[1]),
            journal, c.get(k.seq))


def test_the_batch_script_does_what_the_scripts_do_one_by_one(backend: dict[str, Any]) -> None:
    """The same operations, as one hold_batch call and as one script call each in order:
    the same replies (balances and event ids included) and the same state, journal and all.
    20 holds past their TTL and an expiry bound of 4 per call make the lazy expiry span
    several operations of the batch."""
    clock = Clock()
    states, replies = [], []
    for batched in (False, True):
        settings = replace(backend["settings"],
                           key_prefix=f"{backend['settings'].key_prefix}s{int(batched)}")
        service = ReserveService(backend["sync"], settings, clock_ms=clock)
        service.top_up_reserve("UGX", "1000", "fiat", "seed")
        for i in range(20):
            service.reserve_amount("UGX", "10", "fiat", f"t{i}", "swap", ttl_s=1)
        now_ms = clock() + 5_000
        scripts = _hold_scripts(service, now_ms, expire_max=4)
        driver = service.driver
        if batched:
            replies.append(driver.execute(batch_script(scripts)))
        else:
            replies.append([driver.execute(script) for script in scripts])
        states.append(_state(service))
    assert replies[1] == replies[0]
    assert states[1] == states[0]
    codes = [reply[0] for reply in replies[0]]
    assert codes == [0, 1, 20, 21, 10, 32, 1, 0, 0, 1, 31, 31, 22, 0, 1, 30, 12, 0]
    assert replies[0][6][4] == "expired"
    total, locked = states[0][0]["total"], states[0][0]["locked"]
    assert (total, locked) == ("960", "900")  # 40 of r1 committed; r3 holds 900


async def test_waiting_callers_are_split_over_the_free_batch_slots(backend: dict[str, Any],
                                                                   async_redis: Any) -> None:
    """64 callers at once on an idle driver leave as two batches of 32, both in flight, so Redis
    runs one while the client handles the other's replies; never more than the slots allow."""
    service = make_service(backend)
    service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
    engine = engine_for(backend, async_redis)
    await engine.reserve_amount("UGX", 1, "fiat", "warm", "swap")  # the account is known now
    driver = engine.driver
    assert isinstance(driver, BatchingDriver) and driver.batches_inflight_max == 2
    before = (driver.batches_count, driver.batched_ops_count)
    results = await asyncio.gather(*(engine.reserve_amount("UGX", 1, "fiat", f"s{i}", "swap")
                                     for i in range(64)))
    assert all(r.applied for r in results)
    assert (driver.batches_count - before[0], driver.batched_ops_count - before[1]) == (2, 64)
    assert minor_balance(service, "UGX", "fiat") == (TOTAL, 65)


async def test_holds_ended_in_a_batch_are_pruned_after_the_retention(
        backend: dict[str, Any], async_redis: Any) -> None:
    """A batch writes the balances, the event counter and the ended set once, at its end: the
    next calls see them as if each operation had written its own (ids follow on, the balance
    is right, and the ended holds are pruned once the retention has passed)."""
    settings = replace(backend["settings"], retention_s=60)
    clock = Clock()
    service = ReserveService(backend["sync"], settings, clock_ms=clock)
    service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
    engine = engine_for(backend, async_redis, clock=clock, settings=settings)
    refs = [f"p{i}" for i in range(20)]
    await asyncio.gather(*(engine.reserve_amount("UGX", 10, "fiat", r, "swap") for r in refs))
    await asyncio.gather(*(engine.commit_reserve(r) for r in refs))
    assert isinstance(engine.driver, BatchingDriver)
    assert engine.driver.batches_count < engine.driver.batched_ops_count
    last = await engine.reserve_amount("UGX", 10, "fiat", "after", "swap")
    assert last.event_id == 2 + 2 * len(refs) + 1  # open, top-up, 40 batched, then this one
    assert minor_balance(service, "UGX", "fiat") == (TOTAL - 200, 10)
    assert_journal_matches(service)
    keys = service.ops.keys.account(service.ops.reserve_spec("UGX", "fiat").label)
    assert backend["sync"].zcard(keys.ended) == len(refs) + 1  # and the seed top-up's record
    clock.advance_s(61)
    assert service.sweep().pruned_count == len(refs) + 1
    assert backend["sync"].hlen(keys.holds) == 1  # "after" is still pending
