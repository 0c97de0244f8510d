"""1,000 randomized flows (deposits, swaps, buys, sells, reserve withdrawals; successes, failures,
provider errors, expiries, late callbacks, refusals, repeats): per currency the sum over all
accounts equals what came in minus what went out, to the minor unit; no lock is left. On real
Redis the journal then reaches Postgres and reconciles with zero differences."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from engine.errors import ReserveError
from engine.flows import limits
from tests.flows_support import Rig, make_rig

FLOW_COUNT = 1000
USERS = ["u1", "u2", "u3", "u4"]
CURRENCIES = ("USDT", "UGX", "KES")
# Reserves small enough that every kind of refusal happens in the run.
SEED_RESERVES = {"USDT": 3_000, "UGX": 1_500_000, "KES": 20_000}


class Run:
    """The random run and its tallies: money in and out per currency, outcomes by kind."""

    def __init__(self, rig: Rig, seed: int) -> None:
        self.rig = rig
        self.rng = random.Random(seed)
        self.external: Counter[str] = Counter()  # minor units: + in, - out
        self.outcomes: Counter[str] = Counter()
        self.pending: list[dict[str, Any]] = []
        self.started: list[str] = []  # mobile-money operations

    def minor(self, currency: str, amount: Any) -> int:
        return int(amount.scaleb(self.rig.engine.registry.get(currency).decimals))

    async def go(self) -> None:
        for cur, amount in SEED_RESERVES.items():
            await self.rig.seed_reserve(cur, str(amount))
            self.external[cur] += amount * 10 ** self.rig.engine.registry.get(cur).decimals
        for i in range(FLOW_COUNT):
            await self.one(f"f{i}", self.rng.choice(USERS), self.rng.random())
            if self.pending and self.rng.random() < 0.5:
                await self.callback(self.pending.pop(self.rng.randrange(len(self.pending))))
            if self.rng.random() < 0.01:  # time passes: the callbacks still out expire
                self.rig.clock.advance_s(limits.mobile_money_hold_ttl_s // 2 + 1)
                if self.rng.random() < 0.5:  # the engine's sweeper or recover() gets there first
                    await self.rig.engine.sweep()
                else:
                    await self.rig.wallet.recover()
        for view in self.pending[: len(self.pending) // 2]:  # late: after the sweep or not
            await self.callback(view)
        self.rig.clock.advance_s(limits.mobile_money_hold_ttl_s)  # every callback left out expires
        while (await self.rig.wallet.recover()).looked_at_count:
            pass
        for ref in self.started:
            view = await self.rig.wallet.mobile_money.get(ref)
            self.outcomes[f"{view['direction']} {view['state']}"] += 1

    async def one(self, ref: str, user: str, kind: float) -> None:
        rng, wallet, mm = self.rng, self.rig.wallet, self.rig.wallet.mobile_money
        repeat = rng.random() < 0.05  # a client retry of the same request
        self.rig.provider.fail_initiation = rng.random() < 0.04
        name = "?"
        try:
            if kind < 0.15:
                name = "deposit"
                cur, amount = rng.choice([("USDT", rng.randint(1, 50)),
                                          ("UGX", rng.randint(1000, 90000)),
                                          ("KES", rng.randint(10, 900))])
                await wallet.users.deposit(user, cur, amount, ref)
                if repeat:
                    assert not (await wallet.users.deposit(user, cur, amount, ref))["applied"]
                self.external[cur] += amount * 10 ** self.rig.engine.registry.get(cur).decimals
            elif kind < 0.20:
                name = "withdraw"
                cur = rng.choice(CURRENCIES)
                amount = SEED_RESERVES[cur] // rng.choice([4, 8, 16])
                await self.rig.engine.withdraw_from_reserve(cur, str(amount), None, ref)
                self.external[cur] -= amount * 10 ** self.rig.engine.registry.get(cur).decimals
            elif kind < 0.55:
                name = "swap"
                pair = rng.choice([("USDT", "UGX"), ("UGX", "USDT"), ("USDT", "KES"),
                                   ("KES", "USDT")])
                amount = {"USDT": "7.25", "UGX": "20001", "KES": "333.33"}[pair[0]]
                first = await wallet.swaps.create(user, pair[0], pair[1], amount, ref)
                if repeat:
                    assert await wallet.swaps.create(user, pair[0], pair[1], amount, ref) == first
            elif kind < 0.78:
                name = "buy"
                fiat = rng.choice(["UGX", "KES"])
                amount = "37000" if fiat == "UGX" else "1234.56"
                view = await mm.buy(user, fiat, "USDT", amount, "0700000001", ref)
                if repeat:
                    assert await mm.buy(user, fiat, "USDT", amount, "0700000001", ref) == view
                self.pending.append(view)
                self.started.append(ref)
            else:
                name = "sell"
                fiat = rng.choice(["UGX", "KES"])
                view = await mm.sell(user, "USDT", fiat, "3.5", "0700000001", ref)
                if repeat:
                    assert await mm.sell(user, "USDT", fiat, "3.5", "0700000001", ref) == view
                self.pending.append(view)
                self.started.append(ref)
            self.outcomes[f"{name} started"] += 1
        except ReserveError as err:
            body = err.to_dict()
            assert err.status_code in (409, 502), body
            leg = f" {body['leg']}" if "leg" in body else ""
            self.outcomes[f"{name} refused {body.get('code')}{leg}"] += 1

    async def callback(self, view: dict[str, Any]) -> None:
        status = self.rng.choice(["success", "success", "failed", "never"])
        if status == "never":
            return
        body, headers = self.rig.provider.signed_callback(view["provider_tx_id"], status)
        done = await self.rig.wallet.mobile_money.callback(body, headers)
        self.outcomes[f"callback duplicate={done['duplicate_callback']}"] += 1
        if self.rng.random() < 0.2:  # the provider delivers it twice: the first one stands
            again = await self.rig.wallet.mobile_money.callback(body, headers)
            assert again["duplicate_callback"] and again["state"] == done["state"], again
            self.outcomes["callback duplicate=True"] += 1
        if done["state"] == "completed" and not done["duplicate_callback"]:
            # money from outside (a collection) or to outside (a payout), in fiat
            sign = 1 if done["direction"] == "buy" else -1
            self.external[done["fiat_currency"]] += sign * self.minor(done["fiat_currency"],
                                                                     done["fiat_amount"])


async def test_conservation_after_1000_random_flows(
        backend: dict[str, Any], async_redis: Any, request: pytest.FixtureRequest) -> None:
    rig = make_rig(backend, async_redis)
    run = Run(rig, seed=5)
    await run.go()
    for cur in CURRENCIES:
        total, locked = await rig.currency_sum(cur)
        assert (cur, total, locked) == (cur, run.external[cur], 0)
    assert await rig.wallet.store.open_count() == 0
    # the run went through every path it is meant to check
    for outcome in ("deposit started", "withdraw started", "withdraw refused exceeds_available",
                    "swap started", "swap refused insufficient_funds",
                    "swap refused exceeds_available from", "swap refused exceeds_available to",
                    "buy completed", "buy failed", "buy expired",
                    "buy refused provider_refused", "buy refused exceeds_available crypto",
                    "sell completed", "sell failed", "sell expired",
                    "sell refused provider_refused", "sell refused insufficient_funds",
                    "sell refused exceeds_available fiat"):
        assert run.outcomes[outcome] > 0, (outcome, run.outcomes)
    if backend["name"] == "redis":
        _persist_and_reconcile(rig, backend, request.getfixturevalue("fresh_database_url"))


def _persist_and_reconcile(rig: Rig, backend: dict[str, Any], url: str) -> None:
    """Every flow's journal events into Postgres; the ledger then matches Redis exactly."""
    from persistence.reconcile import reconcile
    from persistence.worker import Persister

    persister = Persister(backend["sync"], backend["settings"], url, "flows-test")
    try:
        events = len(rig.journal())
        assert persister.drain(timeout_s=120) == events
        assert reconcile(backend["sync"], backend["settings"], url) == []
    finally:
        persister.close()
