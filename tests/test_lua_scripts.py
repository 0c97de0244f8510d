"""The scripts themselves, called with raw ARGV (bypassing the Python checks): they validate
again before their first write, keep balances as integer strings and answer with integers."""

from __future__ import annotations

from typing import Any

import pytest

from engine.commands import Script
from engine.drivers import SyncDriver
from engine.errors import ResultCode
from tests.engine_helpers import START_MS, make_service

LABEL = "RESERVE_UGX_FIAT"


@pytest.fixture
def env(backend: dict[str, Any]) -> dict[str, Any]:
    service = make_service(backend)
    service.top_up_reserve("UGX", "1000", "fiat", "seed")
    k = service.ops.keys.account(LABEL)
    _, index = service.ops.keys.index("r1")
    return {"service": service, "driver": SyncDriver(backend["sync"]), "k": k,
            "keys": [*k.script_keys(), index], "client": backend["sync"]}


def snapshot(env: dict[str, Any]) -> tuple[Any, ...]:
    c, k = env["client"], env["k"]
    return (c.hgetall(k.acct), c.hgetall(k.holds), c.zrange(k.expiry, 0, -1),
            c.xlen(k.stream), c.get(k.seq))


def reserve(env: dict[str, Any], amount: str, ref: str = "r1", label: str = LABEL,
            keys: list[str] | None = None) -> list[Any]:
    return env["driver"].execute(Script("reserve", keys or env["keys"], [
        START_MS, 1, 1, label, ref, amount, 0, "swap", "", 86_400_000, 16, 16]))


@pytest.mark.parametrize("amount", [
    "0", "-1", "1.5", "9007199254740992", "99999999999999999", "abc", "", "1e3", " 1", "0x10",
])
def test_reserve_refuses_a_bad_amount_before_any_write(env: dict[str, Any], amount: str) -> None:
    before = snapshot(env)
    assert reserve(env, amount)[0] == ResultCode.invalid_amount
    assert snapshot(env) == before


def test_balances_are_integer_strings(env: dict[str, Any]) -> None:
    reply = reserve(env, "250")
    assert reply == [ResultCode.ok, 1000, 250, 3, "pending", 250, 0, START_MS, 0, 0, "swap"]
    acct = env["client"].hgetall(env["k"].acct)
    assert (acct["total"], acct["locked"]) == ("1000", "250")
    assert env["client"].hget(env["k"].holds, "r1") == f"pending|250|0|{START_MS}|0|0|swap"


def test_an_amount_with_leading_zeros_is_written_in_canonical_digits(env: dict[str, Any]) -> None:
    """The scripts write an amount's text as given when it is canonical: '0070' is not."""
    assert reserve(env, "0070")[:3] == [ResultCode.ok, 1000, 70]
    assert env["client"].hget(env["k"].holds, "r1") == f"pending|70|0|{START_MS}|0|0|swap"
    commit = env["driver"].execute(Script("commit", env["keys"], [
        START_MS, 1, 1, LABEL, "r1", "", "", "", 86_400_000, 16, 16]))
    assert commit[:3] == [ResultCode.ok, 930, 0]
    events = [fields for _, fields in env["client"].xrange(env["k"].stream)][-2:]
    assert [(e["amt"], e["dt"], e["dl"]) for e in events] == [("70", "0", "70"),
                                                              ("70", "-70", "-70")]
    assert events[1]["held"] == "70"


def test_the_largest_amount_is_exact(env: dict[str, Any]) -> None:
    top = env["driver"].execute(Script("top_up", env["keys"], [
        START_MS, 1, 1, LABEL, "big", str(2**53 - 1001), "", 86_400_000, 16]))
    assert top[:3] == [ResultCode.ok, 2**53 - 1, 0]
    over = env["driver"].execute(Script("top_up", env["keys"], [
        START_MS, 1, 1, LABEL, "one", "1", "", 86_400_000, 16]))
    assert over[:3] == [ResultCode.exceeds_limit, 2**53 - 1, 0]
    assert reserve(env, str(2**53 - 1))[:3] == [ResultCode.ok, 2**53 - 1, 2**53 - 1]
    assert reserve(env, "1", "r2")[:3] == [ResultCode.exceeds_available, 2**53 - 1, 2**53 - 1]


def test_reserve_on_an_account_never_opened(env: dict[str, Any]) -> None:
    k = env["service"].ops.keys.account("RESERVE_KES_FIAT")
    before = snapshot(env)
    reply = reserve(env, "1", label=k.label, keys=[*k.script_keys(), env["keys"][-1]])
    assert reply[0] == ResultCode.account_not_found
    assert snapshot(env) == before
    assert not env["client"].exists(k.holds)


def test_exceeds_available_writes_nothing(env: dict[str, Any]) -> None:
    before = snapshot(env)
    assert reserve(env, "1001")[:3] == [ResultCode.exceeds_available, 1000, 0]
    assert snapshot(env) == before


def test_commit_and_release_of_an_unknown_hold(env: dict[str, Any]) -> None:
    before = snapshot(env)
    commit = env["driver"].execute(Script("commit", env["keys"], [
        START_MS, 1, 1, LABEL, "r1", "", "", "", 86_400_000, 16, 16]))
    release = env["driver"].execute(Script("release", env["keys"], [
        START_MS, 1, 1, LABEL, "r1", "", 86_400_000, 16, 16]))
    assert (commit[0], release[0]) == (ResultCode.hold_not_found, ResultCode.hold_not_found)
    assert snapshot(env) == before


def test_commit_refuses_a_bad_amount(env: dict[str, Any]) -> None:
    reserve(env, "100")
    before = snapshot(env)
    for amount in ("0", "-5", "2.5", "x"):
        reply = env["driver"].execute(Script("commit", env["keys"], [
            START_MS, 1, 1, LABEL, "r1", amount, "", "", 86_400_000, 16, 16]))
        assert reply[0] == ResultCode.invalid_amount
    reply = env["driver"].execute(Script("commit", env["keys"], [
        START_MS, 1, 1, LABEL, "r1", "101", "", "", 86_400_000, 16, 16]))
    assert reply[0] == ResultCode.exceeds_hold
    assert snapshot(env) == before


def test_reserve_many_refuses_a_bad_leg_before_any_write(env: dict[str, Any]) -> None:
    k = env["k"]
    legs_keys = [k.acct, k.holds, k.expiry, k.ended, k.ops] * 2 + [k.stream, k.seq,
                                                                   env["keys"][-1]]
    before = snapshot(env)
    reply = env["driver"].execute(Script("reserve_many", legs_keys, [
        START_MS, 1, 1, 2, LABEL, "a", "10", LABEL, "b", "1.5", 0, "swap", "",
        86_400_000, 16, 16]))
    assert reply[:2] == [ResultCode.invalid_amount, 2]
    reply = env["driver"].execute(Script("reserve_many", legs_keys, [
        START_MS, 1, 1, 2, LABEL, "a", "600", LABEL, "b", "401", 0, "swap", "",
        86_400_000, 16, 16]))
    assert reply == [ResultCode.exceeds_available, 2, 1000, 0]
    assert snapshot(env) == before
