"""`reserves rebuild`: Redis loses everything; the book of record brings back balances, open
holds, counters and idempotency records, and the engine carries on from there."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import HoldNotFound
from engine.keys import KeySpace
from engine.service import ReserveService
from persistence.rebuild import RebuildRefused, rebuild
from persistence.reconcile import reconcile
from tests.persist_support import (
    Stack,
    journal,
    redis_balances,
    redis_pending_holds,
    run_workload,
)


def _account_hashes(stack: Stack) -> dict[str, dict[str, str]]:
    keys = KeySpace(stack.settings.key_prefix, stack.settings.shard_count)
    return {label: stack.client.hgetall(keys.account(label).acct)
            for label in redis_balances(stack.client, stack.settings)}


def _lose_redis(stack: Stack) -> None:
    keys = list(stack.client.scan_iter(match=f"{stack.settings.key_prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        stack.client.delete(*keys[i:i + 500])
    assert redis_balances(stack.client, stack.settings) == {}


def _rebuild(stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    if stack.name == "sqlite":  # embedded: the function (the CLI needs a Redis server)
        report = rebuild(stack.client, stack.settings, stack.database_url)
        assert report.warnings == []
        return
    from engine.cli import main

    monkeypatch.setenv("RESERVES_REDIS_URL", stack.settings.redis_url or "")
    monkeypatch.setenv("RESERVES_DATABASE_URL", stack.database_url)
    monkeypatch.setenv("RESERVES_KEY_PREFIX", stack.settings.key_prefix)
    monkeypatch.setenv("RESERVES_SHARDS", str(stack.settings.shard_count))
    assert main(["rebuild"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("restored ") and err == ""


def test_rebuild_after_redis_data_loss(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    workload = run_workload(stack.client, stack.settings, 1_500)
    persister = stack.persister("p1")
    persister.drain(timeout_s=60)
    balances = redis_balances(stack.client, stack.settings)
    holds = redis_pending_holds(stack.client, stack.settings)
    accounts = _account_hashes(stack)
    assert holds and len(balances) >= 3
    max_event_id = max(stack.store().event_ids())

    _lose_redis(stack)
    _rebuild(stack, monkeypatch, capsys)

    assert redis_balances(stack.client, stack.settings) == balances
    assert redis_pending_holds(stack.client, stack.settings) == holds
    assert _account_hashes(stack) == accounts
    assert reconcile(stack.client, stack.settings, stack.database_url) == []

    # the engine carries on: ids above every persisted one, holds and repeats as before
    service = ReserveService(stack.client, stack.settings, clock_ms=workload.clock)
    ops = service.ops
    spec = ops.reserve_spec("USDT", None)
    new = service.run(ops.top_up(spec, 1_000, "after-rebuild"))
    assert new.applied and new.transaction_id > max_event_id
    repeat = service.run(ops.top_up(spec, 10**12, "seed-USDT"))  # made before the loss
    assert not repeat.applied
    reference = sorted(holds)[0]
    released = service.run(ops.release(reference))
    assert released.applied and released.event_id > max_event_id
    with pytest.raises(HoldNotFound):
        service.run(ops.release("never-held"))
    fresh = service.run(ops.open_account(ops.user_spec("newcomer", "BTC")))
    ids = [int(a["account_id"]) for a in accounts.values()]
    shard_count = stack.settings.shard_count
    same_counter = [i for i in ids if i % shard_count == fresh.account_id % shard_count]
    assert fresh.account_id not in ids
    assert fresh.account_id > max(same_counter, default=0)

    # the same persister recreates its lost consumer group and persists the new events
    persister.drain(timeout_s=60)
    assert reconcile(stack.client, stack.settings, stack.database_url) == []
    assert stack.store().event_ids()[-1] == max(e.event_id for e in journal(
        stack.client, stack.settings))


def test_rebuild_refuses_while_redis_holds_the_accounts(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_workload(stack.client, stack.settings, 50)
    stack.persister().drain(timeout_s=30)
    with pytest.raises(RebuildRefused, match="Redis already holds .* accounts"):
        rebuild(stack.client, stack.settings, stack.database_url)
    balances = redis_balances(stack.client, stack.settings)
    report = rebuild(stack.client, stack.settings, stack.database_url, force=True)
    assert report.accounts_count == len(balances)
    assert redis_balances(stack.client, stack.settings) == balances
    if stack.name == "postgres":
        from engine.cli import main

        monkeypatch.setenv("RESERVES_REDIS_URL", stack.settings.redis_url or "")
        monkeypatch.setenv("RESERVES_DATABASE_URL", stack.database_url)
        monkeypatch.setenv("RESERVES_KEY_PREFIX", stack.settings.key_prefix)
        monkeypatch.setenv("RESERVES_SHARDS", str(stack.settings.shard_count))
        assert main(["rebuild"]) == 1
        assert "rebuild restores lost state only" in capsys.readouterr().err
