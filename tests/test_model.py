"""Model-based test: random sequences of engine operations against a plain Python model.

After every step the engine and the model agree on every balance and hold, and
total >= locked >= 0 holds for every account. Runs on fakeredis and on the real Redis.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from engine.errors import (
    ExceedsHold,
    HoldAlreadyEnded,
    HoldNotFound,
    InsufficientReserve,
    ReferenceConflict,
)
from engine.ops import AccountSpec
from engine.service import ReserveService

RUN_ON_CLUSTER = True  # the backend fixture adds a local 3-master Redis Cluster

START_MS = 1_800_000_000_000
ACCOUNTS = ("USDT", "UGX")
REFS = tuple(f"r{i}" for i in range(6))


@dataclass
class ModelHold:
    account: str
    amount: int
    state: str = "pending"
    committed: int = 0
    expires_ms: int = 0


class Model:
    def __init__(self) -> None:
        self.total = {a: 0 for a in ACCOUNTS}
        self.locked = {a: 0 for a in ACCOUNTS}
        self.holds: dict[str, ModelHold] = {}
        # reference -> account of a reserve that claimed it outside its script (see below)
        self.claims: dict[str, str] = {}
        # top-up / withdrawal references are scoped to their account
        self.ops: dict[tuple[str, str], tuple[str, int]] = {}  # (account, ref) -> (kind, amount)

    def expire_due(self, account: str, now_ms: int) -> None:
        for hold in self.holds.values():
            if (hold.account == account and hold.state == "pending"
                    and 0 < hold.expires_ms <= now_ms):
                hold.state = "expired"
                self.locked[account] -= hold.amount


def make_machine(client: Any, base_settings: Any) -> type[RuleBasedStateMachine]:
    class EngineMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.now_ms = START_MS
            cfg = replace(base_settings, key_prefix=f"{base_settings.key_prefix}m{uuid.uuid4().hex[:8]}")
            self.service = ReserveService(client, cfg, clock_ms=lambda: self.now_ms)
            self.model = Model()
            self.specs: dict[str, AccountSpec] = {
                "USDT": self.service.ops.reserve_spec("USDT", "crypto"),
                "UGX": self.service.ops.reserve_spec("UGX", "fiat"),
            }

        def run(self, op: Any) -> Any:
            return self.service.run(op)

        def claims_outside_the_script(self, account: str, ref: str) -> bool:
            """Where a reference's index sits in another slot than the account (a cluster), a
            reserve claims it before its script and keeps the claim even when refused: a known
            difference with one slot (test_engine_holds' strict xfail), modelled here."""
            keys = self.service.ops.keys
            return keys.index(ref)[0] != keys.account(self.specs[account].label).shard

        @rule(account=st.sampled_from(ACCOUNTS), amount=st.integers(1, 10_000),
              ref=st.sampled_from(("t0", "t1", "t2", "t3")))
        def top_up(self, account: str, amount: int, ref: str) -> None:
            m = self.model
            seen = m.ops.get((account, ref))
            if seen and seen != ("topup", amount):
                with pytest.raises(ReferenceConflict):
                    self.run(self.service.ops.top_up(self.specs[account], amount, ref))
                return
            result = self.run(self.service.ops.top_up(self.specs[account], amount, ref))
            assert result.applied is (seen is None)
            if seen is None:
                m.ops[(account, ref)] = ("topup", amount)
                m.total[account] += amount

        @rule(account=st.sampled_from(ACCOUNTS), amount=st.integers(1, 5_000),
              ref=st.sampled_from(("w0", "w1", "t0")))
        def withdraw(self, account: str, amount: int, ref: str) -> None:
            m = self.model
            m.expire_due(account, self.now_ms)
            seen = m.ops.get((account, ref))
            op = self.service.ops.withdraw(self.specs[account], amount, ref)
            if seen and seen != ("withdraw", amount):
                with pytest.raises(ReferenceConflict):
                    self.run(op)
            elif seen:
                assert self.run(op).applied is False
            elif amount > m.total[account] - m.locked[account]:
                with pytest.raises(InsufficientReserve):
                    self.run(op)
            else:
                assert self.run(op).applied is True
                m.ops[(account, ref)] = ("withdraw", amount)
                m.total[account] -= amount

        @rule(account=st.sampled_from(ACCOUNTS), amount=st.integers(1, 4_000),
              ref=st.sampled_from(REFS), ttl_s=st.sampled_from((None, 1, 5)))
        def reserve(self, account: str, amount: int, ref: str, ttl_s: int | None) -> None:
            m = self.model
            op = self.service.ops.reserve(self.specs[account], amount, ref, "swap", ttl_s)
            hold = m.holds.get(ref)
            owner = hold.account if hold is not None else m.claims.get(ref)
            outside = self.claims_outside_the_script(account, ref)
            if outside and owner not in (None, account):
                with pytest.raises(ReferenceConflict):  # refused before the script: no side work
                    self.run(op)
                return
            m.expire_due(account, self.now_ms)
            if outside:
                m.claims[ref] = account
            if hold is None and owner not in (None, account):
                with pytest.raises(ReferenceConflict):  # the script finds the other's claim
                    self.run(op)
            elif hold is not None:
                if hold.account != account or hold.amount != amount:
                    with pytest.raises(ReferenceConflict):
                        self.run(op)
                else:
                    result = self.run(op)
                    assert result.applied is False
                    assert result.hold.state.value == hold.state
            elif amount > m.total[account] - m.locked[account]:
                with pytest.raises(InsufficientReserve):
                    self.run(op)
            else:
                result = self.run(op)
                assert result.applied is True
                m.holds[ref] = ModelHold(account, amount,
                                         expires_ms=self.now_ms + ttl_s * 1000 if ttl_s else 0)
                m.locked[account] += amount

        @rule(a=st.integers(1, 3_000), b=st.integers(1, 3_000), ref=st.sampled_from(REFS[:3]))
        def reserve_many(self, a: int, b: int, ref: str) -> None:
            m = self.model
            legs = [(self.specs["USDT"], a, f"{ref}_from"), (self.specs["UGX"], b, f"{ref}_to")]
            for account in ACCOUNTS:
                m.expire_due(account, self.now_ms)
            op = self.service.ops.reserve_many(legs, "swap")
            existing = [m.holds.get(r) for _, _, r in legs]
            if all(existing):
                if [h.amount for h in existing] == [a, b]:  # type: ignore[union-attr]
                    assert all(r.applied is False for r in self.run(op))
                else:
                    with pytest.raises(ReferenceConflict):
                        self.run(op)
            elif any(existing):
                with pytest.raises(ReferenceConflict):
                    self.run(op)
            elif a > m.total["USDT"] - m.locked["USDT"] or b > m.total["UGX"] - m.locked["UGX"]:
                with pytest.raises(InsufficientReserve):
                    self.run(op)
            else:
                assert all(r.applied for r in self.run(op))
                for (_, amount, r), account in zip(legs, ACCOUNTS, strict=True):
                    m.holds[r] = ModelHold(account, amount)
                    m.locked[account] += amount

        @rule(ref=st.sampled_from(REFS + ("r0_from", "r1_to")))
        def release(self, ref: str) -> None:
            m = self.model
            hold = m.holds.get(ref)
            op = self.service.ops.release(ref)
            if hold is None:
                with pytest.raises(HoldNotFound):
                    self.run(op)
                return
            if hold.state == "committed":
                with pytest.raises(HoldAlreadyEnded):
                    self.run(op)
            elif hold.state in ("released", "expired"):
                assert self.run(op).applied is False
            else:
                result = self.run(op)
                expired = 0 < hold.expires_ms <= self.now_ms
                hold.state = "expired" if expired else "released"
                assert result.hold.state.value == hold.state
                m.locked[hold.account] -= hold.amount
                m.expire_due(hold.account, self.now_ms)  # side work runs after a change only

        @rule(ref=st.sampled_from(REFS + ("r2_from",)), partial=st.one_of(st.none(), st.integers(1, 4_000)))
        def commit(self, ref: str, partial: int | None) -> None:
            m = self.model
            hold = m.holds.get(ref)
            op = self.service.ops.commit(ref, partial)
            if hold is None:
                with pytest.raises(HoldNotFound):
                    self.run(op)
                return
            if hold.state == "committed":
                if partial is None or partial == hold.committed:
                    assert self.run(op).applied is False
                else:
                    with pytest.raises(HoldAlreadyEnded):
                        self.run(op)
            elif hold.state in ("released", "expired"):
                with pytest.raises(HoldAlreadyEnded):
                    self.run(op)
            elif 0 < hold.expires_ms <= self.now_ms:
                with pytest.raises(HoldAlreadyEnded):
                    self.run(op)
                hold.state = "expired"
                m.locked[hold.account] -= hold.amount
                return
            elif partial is not None and partial > hold.amount:
                with pytest.raises(ExceedsHold):
                    self.run(op)
                return
            else:
                committed = hold.amount if partial is None else partial
                assert self.run(op).applied is True
                hold.state, hold.committed = "committed", committed
                m.locked[hold.account] -= hold.amount
                m.total[hold.account] -= committed
                m.expire_due(hold.account, self.now_ms)

        @rule(ms=st.sampled_from((300, 1_000, 4_000)))
        def advance_clock(self, ms: int) -> None:
            self.now_ms += ms

        @rule()
        def sweep(self) -> None:
            self.service.sweep()
            for account in ACCOUNTS:
                self.model.expire_due(account, self.now_ms)

        @invariant()
        def balances_agree(self) -> None:
            m = self.model
            for account, spec in self.specs.items():
                if spec.label not in self.service.ops._accounts:
                    continue
                balance = self.run(self.service.ops.balance(spec))
                assert balance.total_minor >= balance.locked_minor >= 0
                assert (balance.total_minor, balance.locked_minor) == (
                    m.total[account], m.locked[account]), account

        @invariant()
        def holds_agree(self) -> None:
            for ref, hold in self.model.holds.items():
                seen = self.run(self.service.ops.get_hold(ref))
                state = hold.state
                if state == "pending" and 0 < hold.expires_ms <= self.now_ms:
                    state = "expired"  # the read shows a hold past its TTL as expired
                assert seen.state.value == state, ref
                assert seen.amount_minor == hold.amount
                assert seen.committed_minor == hold.committed

    return EngineMachine


def _check(backend: dict[str, Any], examples: int, steps: int) -> None:
    machine = make_machine(backend["sync"], backend["settings"])
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], database=None),
    )


def test_engine_agrees_with_the_model(backend: dict[str, Any]) -> None:
    _check(backend, examples=60, steps=40)


@pytest.mark.soak
def test_engine_agrees_with_the_model_long(backend: dict[str, Any]) -> None:
    _check(backend, examples=600, steps=60)
