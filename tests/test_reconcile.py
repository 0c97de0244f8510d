"""`reserves reconcile`: every difference between Redis and the ledger is reported."""

from __future__ import annotations

import pytest

from engine.keys import KeySpace
from engine.service import ReserveService
from persistence.reconcile import Difference, reconcile
from tests.persist_support import Stack, run_workload


def test_reconcile_reports_every_difference(stack: Stack) -> None:
    run_workload(stack.client, stack.settings, 200)
    stack.persister().drain(timeout_s=30)
    assert reconcile(stack.client, stack.settings, stack.database_url) == []
    keys = KeySpace(stack.settings.key_prefix, stack.settings.shard_count)
    btc = keys.account("RESERVE_BTC_CRYPTO")
    total, locked = (int(v) for v in stack.client.hmget(btc.acct, "total", "locked"))
    stack.client.hincrby(btc.acct, "total", 5)
    stack.client.hset(btc.holds, "ghost", "pending|7|0|1|0|0|swap")
    # an event the persister has not seen yet: the account is in Redis only
    ReserveService(stack.client, stack.settings).get_reserve_account("KES", "fiat")
    differences = reconcile(stack.client, stack.settings, stack.database_url)
    assert differences == [
        Difference("RESERVE_BTC_CRYPTO", "total_minor", str(total + 5), str(total)),
        Difference("RESERVE_BTC_CRYPTO", "pending hold ghost", "7", "none"),
        Difference("RESERVE_KES_FIAT", "account", "present", "missing"),
    ]
    assert str(differences[0]) == (
        f"RESERVE_BTC_CRYPTO: total_minor: redis={total + 5} ledger={total}")
    assert locked >= 0


@pytest.mark.real
@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_reconcile_command_exit_code(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    monkeypatch.setenv("RESERVES_REDIS_URL", stack.settings.redis_url or "")
    monkeypatch.setenv("RESERVES_DATABASE_URL", stack.database_url)
    monkeypatch.setenv("RESERVES_KEY_PREFIX", stack.settings.key_prefix)
    monkeypatch.setenv("RESERVES_SHARDS", str(stack.settings.shard_count))
    run_workload(stack.client, stack.settings, 100)
    stack.persister().drain(timeout_s=30)
    assert main(["reconcile"]) == 0
    assert capsys.readouterr().out.strip().endswith("0 difference(s)")
    keys = KeySpace(stack.settings.key_prefix, stack.settings.shard_count)
    stack.client.hincrby(keys.account("RESERVE_UGX_FIAT").acct, "locked", 1)
    assert main(["reconcile"]) == 1
    out = capsys.readouterr().out
    assert "RESERVE_UGX_FIAT: locked_minor: redis=" in out
    assert out.strip().endswith("1 difference(s)")
