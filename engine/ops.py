"""The engine's operations, written once as generators of Redis commands (sans-IO).

Each operation validates its input in Python, yields the commands it needs (usually one script
call, so one round trip) and turns the reply into a typed result or an exception. The scripts
validate again: nothing reaches Lua that the Python layer could have refused.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine import limits
from engine.caches import FifoCache
from engine.commands import Batch, Call, Op, Script
from engine.config import Settings
from engine.errors import (
    CurrencyMismatch,
    InsufficientReserve,
    RESULT_CODES,
    InvalidRequest,
    ReferenceConflict,
    ResultCode,
    raise_for_code,
)
from engine.keys import AccountKeys, KeySpace
from engine.money import json_number, to_minor
from engine.references import check_reference
from engine.registry import AccountType, Currency, CurrencyRegistry
from engine.saga import reserve_saga
from engine.types import (
    HOLD_STATES,
    Account,
    AccountKind,
    Balance,
    Hold,
    HoldResult,
    HoldState,
    SweepResult,
    TransferResult,
)

_OPERATION = re.compile(r"^[A-Za-z0-9_.-]{1,%d}$" % limits.operation_type_length_max)
_USER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def check_operation_type(operation_type: Any) -> str:
    if not isinstance(operation_type, str) or not _OPERATION.match(operation_type):
        raise InvalidRequest(
            f"operation_type must be 1-{limits.operation_type_length_max} characters of letters, "
            "digits and _ . -",
            code="invalid_operation_type",
        )
    return operation_type


def encode_metadata(metadata: dict[str, Any] | None) -> str:
    if not metadata:
        return ""
    text = json.dumps(metadata, separators=(",", ":"), sort_keys=True, default=str)
    if len(text.encode()) > limits.metadata_bytes_max:
        raise InvalidRequest(f"metadata exceeds {limits.metadata_bytes_max} bytes")
    return text


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """Which account: its label, currency and kind (reserve or user)."""

    label: str
    currency: Currency
    kind: AccountKind

    @property
    def number_prefix(self) -> str:
        initial = "R" if self.kind is AccountKind.reserve else "U"
        return f"{initial}{self.currency.code}{self.currency.account_type.value[0]}"


class Ops:
    def __init__(
        self,
        settings: Settings,
        registry: CurrencyRegistry,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.clock_ms = clock_ms
        self.keys = KeySpace(settings.key_prefix, settings.shard_count)
        self.retention_ms = settings.retention_s * 1000
        self._accounts: FifoCache[str, Account] = FifoCache(limits.account_cache_max, "accounts")
        # only caller references that passed check_reference (see _remember)
        self._hold_labels: FifoCache[str, str] = FifoCache(limits.hold_label_cache_max,
                                                           "hold_labels")
        self._keys_with_index: FifoCache[str, list[str]] = FifoCache(limits.account_cache_max)
        self._operation_types: set[str] = set()  # those that passed check_operation_type

    # -- accounts -----------------------------------------------------------------------------

    def reserve_spec(self, currency: str, account_type: str | AccountType | None) -> AccountSpec:
        cur = self.registry.resolve(currency, account_type)
        label = f"RESERVE_{cur.code}_{cur.account_type.value.upper()}"
        return AccountSpec(label, cur, AccountKind.reserve)

    def user_spec(self, user_id: str, currency: str) -> AccountSpec:
        if not isinstance(user_id, str) or not _USER_ID.match(user_id):
            raise InvalidRequest("user_id must be 1-64 characters of letters, digits and _ . -")
        cur = self.registry.get(currency)
        return AccountSpec(f"USER_{user_id}_{cur.code}", cur, AccountKind.user)

    def clear_caches(self) -> None:
        self._accounts.clear()
        self._hold_labels.clear()
        self._keys_with_index.clear()

    def _common(self, shard: int) -> list[str | int]:
        return [self.clock_ms(), shard + 1, self.keys.shard_count]

    def _not_loaded(self, shard: int, script: Script) -> Op[Any]:
        """A script answered 40: the shard has no event counter, so Redis holds none of its
        data. With the ledger guard (every configured process) that is Redis having lost it:
        503 ledger_not_loaded until `reserves rebuild`. Without (a bare engine), a new
        deployment: the counter starts at 0 and the script runs again."""
        if self.settings.ledger_guard:
            raise_for_code(ResultCode.ledger_not_loaded)
        yield Call("set", (self.keys.seq(shard), 0, None, None, True))  # NX
        yield Call("set", (self.keys.generation(), f"1:{self.clock_ms()}", None, None, True))
        return (yield script)

    def open_account(self, spec: AccountSpec) -> Op[Account]:
        cached = self._accounts.get(spec.label)
        if cached is not None:
            self._accounts.hits += 1
            return cached
        self._accounts.misses += 1  # lookups that miss before calling this are counted here
        k = self.keys.account(spec.label)
        script = Script(
            "open_account",
            [k.acct, self.keys.accounts_set(k.shard), self.keys.account_seq(k.shard), k.stream, k.seq],
            [*self._common(k.shard), spec.label, spec.currency.code,
             spec.currency.account_type.value, spec.kind.value, spec.number_prefix],
        )
        reply = yield script
        if reply[0] == ResultCode.ledger_not_loaded:
            reply = yield from self._not_loaded(k.shard, script)
            raise_for_code(RESULT_CODES[reply[0]], account=spec.label)
        account = Account(
            label=spec.label,
            currency=spec.currency,
            kind=spec.kind,
            account_id=int(reply[1]),
            account_number=str(reply[2]),
            created_ms=int(reply[3]),
        )
        self._accounts[spec.label] = account
        return account

    def balance(self, spec: AccountSpec) -> Op[Balance]:
        account = yield from self.open_account(spec)
        k = self.keys.account(spec.label)
        total, locked = yield Call("hmget", (k.acct, "total", "locked"))
        if total is None:  # the account vanished (Redis flushed): open it again
            self._accounts.pop(spec.label, None)
            account = yield from self.open_account(spec)
            total, locked = 0, 0
        return Balance(account, int(total), int(locked))

    def balances(self, specs: Sequence[AccountSpec], reopen: bool = True) -> Op[list[Balance]]:
        """Balances of several accounts in one round trip (after opening unknown ones)."""
        accounts = []
        for spec in specs:
            accounts.append((yield from self.open_account(spec)))
        replies = yield Batch(
            tuple(Call("hmget", (self.keys.account(s.label).acct, "total", "locked")) for s in specs)
        )
        vanished = [s.label for s, (total, _) in zip(specs, replies, strict=True) if total is None]
        if vanished and reopen:  # Redis lost them (a cached account): never shown as zero
            for label in vanished:
                self._accounts.pop(label, None)
            return (yield from self.balances(specs, reopen=False))
        return [
            Balance(account, int(total or 0), int(locked or 0))
            for account, (total, locked) in zip(accounts, replies, strict=True)
        ]

    def list_labels(self) -> Op[list[str]]:
        replies = yield Batch(
            tuple(Call("smembers", (self.keys.accounts_set(s),)) for s in range(self.keys.shard_count))
        )
        return sorted(label for members in replies for label in members)

    def spec_of_label(self, label: str) -> AccountSpec:
        """AccountSpec from a label (RESERVE_<CUR>_<TYPE> or USER_<id>_<CUR>)."""
        if label.startswith("RESERVE_"):
            _, cur, kind = label.split("_", 2)
            return self.reserve_spec(cur, kind.lower())
        if label.startswith("USER_"):
            user_id, cur = label[len("USER_"):].rsplit("_", 1)
            return self.user_spec(user_id, cur)
        raise InvalidRequest(f"Unknown account label {label}")

    def account_of_label(self, label: str) -> Op[Account]:
        cached = self._accounts.get(label)
        if cached is not None:
            self._accounts.hits += 1
            return cached
        return (yield from self.open_account(self.spec_of_label(label)))

    # -- holds --------------------------------------------------------------------------------

    def _script_keys(self, k: AccountKeys, reference_id: str) -> tuple[list[str], str | None]:
        """KEYS for a per-account script: the index joins them when it shares the slot. The
        lists are made once per account and shared: nothing may change them."""
        shard, index_key = self.keys.index(reference_id)
        if shard == k.shard:
            keys = self._keys_with_index.get(k.label)
            if keys is None:
                keys = self._keys_with_index[k.label] = [*k.script_keys(), index_key]
            return keys, None
        return k.script_keys(), index_key

    def _claim_index(self, index_key: str, reference_id: str, label: str) -> Op[None]:
        """Across slots the index is claimed before the script (Redis Cluster, several shards)."""
        claimed = yield Call("hsetnx", (index_key, reference_id, label))
        if not claimed:
            owner = yield Call("hget", (index_key, reference_id))
            if owner is not None and owner != label:  # the same refusal as in one slot
                raise_for_code(ResultCode.reference_conflict, reference_id=reference_id,
                               account=label)

    def _remember(self, reference_id: str, label: str) -> None:
        # plain strings only: _end_hold trusts a plain string it finds here, and a flow's
        # reference (engine.references) must not be reachable by a caller's string equal to it
        if type(reference_id) is str:
            self._hold_labels[reference_id] = label

    def _hold_result(self, reference_id: str, account: Account, code: ResultCode,
                     reply: list[Any]) -> HoldResult:
        """A hold script's reply (hold_reply in lua/lib/common.lua: integers, state, type)."""
        hold = Hold(reference_id, account, HOLD_STATES[reply[4]], reply[5], reply[6], reply[7],
                    reply[8], reply[9], reply[10])
        return HoldResult(hold, Balance(account, reply[1], reply[2]), code is ResultCode.ok,
                          reply[3])

    def _insufficient(self, balance: Balance, required_minor: int) -> InsufficientReserve:
        status = balance.sufficiency(required_minor)
        return InsufficientReserve(
            f"Insufficient reserve balance. Required: {json_number(status['required_amount'])}, "
            f"Available: {json_number(status['available_amount'])}",
            code="exceeds_available",
            reserve_status=status,
        )

    def reserve(
        self,
        spec: AccountSpec,
        amount_minor: int,
        reference_id: str,
        operation_type: str,
        ttl_s: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Op[HoldResult]:
        check_reference(reference_id)
        # a handful of names in practice: each is checked once, then found in the set
        if type(operation_type) is not str or operation_type not in self._operation_types:
            check_operation_type(operation_type)
            if len(self._operation_types) < limits.operation_type_cache_max:
                self._operation_types.add(operation_type)
        ttl_ms = 0 if ttl_s is None else _ttl_ms(ttl_s)
        _check_minor(amount_minor)
        meta = encode_metadata(metadata) if metadata else ""
        account = self._accounts.get(spec.label)
        if account is None:
            account = yield from self.open_account(spec)
        else:
            self._accounts.hits += 1
        k = self.keys.account(spec.label)
        keys, outside_index = self._script_keys(k, reference_id)
        if outside_index is not None:
            yield from self._claim_index(outside_index, reference_id, spec.label)
        args: list[str | int] = [  # _common() spelled out: one list less per operation
            self.clock_ms(), k.shard + 1, self.keys.shard_count, spec.label, reference_id,
            amount_minor, ttl_ms, operation_type, meta, self.retention_ms,
            limits.expire_per_call_max, limits.prune_per_call_max,
        ]
        script = Script("reserve", keys, args)
        reply = yield script
        if reply[0] == ResultCode.ledger_not_loaded:
            reply = yield from self._not_loaded(k.shard, script)
        if reply[0] == ResultCode.account_not_found:  # Redis lost the account: open, retry once
            self._accounts.pop(spec.label, None)
            account = yield from self.open_account(spec)
            reply = yield Script("reserve", keys, args)
        code = RESULT_CODES[reply[0]]
        if code is ResultCode.exceeds_available:
            raise self._insufficient(Balance(account, reply[1], reply[2]), amount_minor)
        raise_for_code(code, reference_id=reference_id, account=spec.label)
        self._remember(reference_id, spec.label)
        return self._hold_result(reference_id, account, code, reply)

    def reserve_many(
        self,
        legs: Sequence[tuple[AccountSpec, int, str]],
        operation_type: str,
        ttl_s: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Op[list[HoldResult]]:
        """Lock every leg or none. legs: (account, amount_minor, reference_id) each."""
        if not 1 <= len(legs) <= limits.legs_count_max:
            raise InvalidRequest(f"reserve_many takes 1 to {limits.legs_count_max} legs")
        refs = [check_reference(ref) for _, _, ref in legs]
        if len(set(refs)) != len(refs):
            raise InvalidRequest("each leg needs its own reference_id")
        check_operation_type(operation_type)
        ttl_ms = _ttl_ms(ttl_s)
        for _, amount_minor, _ in legs:
            _check_minor(amount_minor)
        meta = encode_metadata(metadata)
        accounts = []
        for spec, _, _ in legs:
            accounts.append((yield from self.open_account(spec)))
        account_keys = [self.keys.account(spec.label) for spec, _, _ in legs]
        shards = {k.shard for k in account_keys} | {self.keys.index(ref)[0] for ref in refs}
        if len(shards) > 1:
            return (yield from reserve_saga(self, legs, operation_type, ttl_s, metadata))
        keys: list[str] = []
        for k in account_keys:
            keys += k.script_keys()[:5]
        shard = account_keys[0].shard
        keys += [account_keys[0].stream, account_keys[0].seq, self.keys.index(refs[0])[1]]
        args: list[str | int] = [*self._common(shard), len(legs)]
        for spec, amount_minor, ref in legs:
            args += [spec.label, ref, amount_minor]
        args += [ttl_ms, operation_type, meta, self.retention_ms, limits.expire_per_call_max,
                 limits.prune_per_call_max]
        reply = yield Script("reserve_many", keys, args)
        code = ResultCode(reply[0])
        if code not in (ResultCode.ok, ResultCode.ok_existing):
            leg = int(reply[1])
            if code is ResultCode.exceeds_available:
                # legs on one account add up: the required amount is their sum so far
                label = legs[leg - 1][0].label
                required_minor = sum(a for s, a, _ in legs[:leg] if s.label == label)
                raise self._insufficient(
                    Balance(accounts[leg - 1], int(reply[2]), int(reply[3])), required_minor
                )
            ref = refs[leg - 1] if leg else refs[0]
            raise_for_code(code, reference_id=ref, account=legs[max(leg, 1) - 1][0].label)
        results = []
        now_ms = self.clock_ms()
        for i, (spec, amount_minor, ref) in enumerate(legs):
            total, locked, event_id = reply[2 + 3 * i: 5 + 3 * i]
            hold = Hold(ref, accounts[i], HoldState.pending, amount_minor, 0, now_ms,
                        now_ms + ttl_ms if ttl_ms else 0, 0, operation_type)
            if code is ResultCode.ok_existing:
                hold = yield from self.get_hold(ref)
            self._remember(ref, spec.label)
            results.append(HoldResult(hold, Balance(accounts[i], int(total), int(locked)),
                                      code is ResultCode.ok, int(event_id)))
        return results

    def hold_label(self, reference_id: str) -> Op[str]:
        label = self._hold_labels.get(reference_id)
        if label is not None:
            self._hold_labels.hits += 1
            return label
        self._hold_labels.misses += 1  # lookups that miss before calling this are counted here
        _, index_key = self.keys.index(reference_id)
        label = yield Call("hget", (index_key, reference_id))
        if label is None:
            raise_for_code(ResultCode.hold_not_found, reference_id=reference_id)
        return str(label)

    def _end_hold(
        self, script: str, reference_id: str, extra_args: list[str | int]
    ) -> Op[HoldResult]:
        # a reference in the label cache passed check_reference when it was reserved
        label = self._hold_labels.get(reference_id) if type(reference_id) is str else None
        if label is None:
            check_reference(reference_id)
            label = yield from self.hold_label(reference_id)
        else:
            self._hold_labels.hits += 1
        account = self._accounts.get(label)
        if account is None:
            account = yield from self.account_of_label(label)
        else:
            self._accounts.hits += 1
        k = self.keys.account(label)
        keys, _ = self._script_keys(k, reference_id)
        command = Script(
            script, keys,
            [self.clock_ms(), k.shard + 1, self.keys.shard_count, label, reference_id,
             *extra_args, self.retention_ms, limits.expire_per_call_max,
             limits.prune_per_call_max],
        )
        reply = yield command
        if reply[0] == ResultCode.ledger_not_loaded:
            reply = yield from self._not_loaded(k.shard, command)
        code = RESULT_CODES[reply[0]]
        if code is ResultCode.hold_not_found and reference_id in self._hold_labels:
            # a stale cached label (the reference was pruned and reused): ask the index
            del self._hold_labels[reference_id]
            return (yield from self._end_hold(script, reference_id, extra_args))
        raise_for_code(code, reference_id=reference_id, account=label)
        return self._hold_result(reference_id, account, code, reply)

    def release(self, reference_id: str, metadata: dict[str, Any] | None = None) -> Op[HoldResult]:
        return (yield from self._end_hold("release", reference_id, [encode_metadata(metadata)]))

    def commit(
        self,
        reference_id: str,
        amount_minor: int | None = None,
        metadata: dict[str, Any] | None = None,
        currency: str = "",
    ) -> Op[HoldResult]:
        """currency: the one amount_minor was converted with; the script refuses (41) if the
        hold's account is in another (the reference -> account cache may be stale)."""
        if amount_minor is not None:
            _check_minor(amount_minor)
        amount_arg: str | int = "" if amount_minor is None else amount_minor
        return (yield from self._end_hold(
            "commit", reference_id, [amount_arg, encode_metadata(metadata), currency]))

    def get_hold(self, reference_id: str) -> Op[Hold]:
        check_reference(reference_id)
        label = yield from self.hold_label(reference_id)
        account = yield from self.account_of_label(label)
        raw = yield Call("hget", (self.keys.account(label).holds, reference_id))
        if raw is None:
            raise_for_code(ResultCode.hold_not_found, reference_id=reference_id)
        state, amount, committed, created, expires, ended, op = str(raw).split("|", 6)
        hold_state = HoldState(state)
        expires_ms = int(expires)
        if hold_state is HoldState.pending and 0 < expires_ms <= self.clock_ms():
            hold_state = HoldState.expired  # past its TTL: the next script or sweep ends it
        return Hold(reference_id, account, hold_state, int(amount), int(committed), int(created),
                    expires_ms, int(ended), op)

    # -- transfers ----------------------------------------------------------------------------

    def _transfer(
        self,
        script: str,
        spec: AccountSpec,
        amount_minor: int,
        reference: str,
        field: str,
        metadata: dict[str, Any] | None,
    ) -> Op[TransferResult]:
        check_reference(reference, field)
        _check_minor(amount_minor)
        meta = encode_metadata(metadata)
        account = yield from self.open_account(spec)
        k = self.keys.account(spec.label)
        keys, _ = self._script_keys(k, reference)
        args: list[str | int] = [*self._common(k.shard), spec.label, reference, amount_minor, meta,
                                 self.retention_ms]
        if script == "withdraw":
            args.append(limits.expire_per_call_max)
        args.append(limits.prune_per_call_max)
        command = Script(script, keys, args)
        reply = yield command
        if reply[0] == ResultCode.ledger_not_loaded:
            reply = yield from self._not_loaded(k.shard, command)
        if reply[0] == ResultCode.account_not_found:
            self._accounts.pop(spec.label, None)
            account = yield from self.open_account(spec)
            reply = yield Script(script, keys, args)
        code = ResultCode(reply[0])
        balance = Balance(account, int(reply[1]), int(reply[2]))
        if code is ResultCode.exceeds_available:
            raise self._insufficient(balance, amount_minor)
        if code is ResultCode.reference_conflict:
            raise ReferenceConflict(
                f"{field} {reference} was already used with a different amount or operation",
                code="reference_conflict",
            )
        raise_for_code(code, reference_id=reference, account=spec.label)
        applied = code is ResultCode.ok
        # A repeat is answered like every other repeat (holds too): nothing new was journalled,
        # so no transaction id; the balance is the current one.
        return TransferResult(reference, amount_minor, balance, applied,
                              int(reply[3]) if applied else None)

    def top_up(
        self, spec: AccountSpec, amount_minor: int, source_reference: str,
        metadata: dict[str, Any] | None = None,
    ) -> Op[TransferResult]:
        return (yield from self._transfer("top_up", spec, amount_minor, source_reference,
                                          "source_reference", metadata))

    def withdraw(
        self, spec: AccountSpec, amount_minor: int, destination_reference: str,
        metadata: dict[str, Any] | None = None,
    ) -> Op[TransferResult]:
        return (yield from self._transfer("withdraw", spec, amount_minor, destination_reference,
                                          "destination_reference", metadata))

    # -- audit --------------------------------------------------------------------------------

    def audit(self, actor: str, action: str, ip: str, detail: dict[str, Any]) -> Op[int]:
        """An admin action that moves no money (cache clear, token created) into the journal of
        shard 0, so that it reaches the audit log by the same path as everything else.
        Money changes carry their audit data in their own event's meta instead."""
        meta = json.dumps({"actor": actor, "action": action, "ip": ip, **detail},
                          separators=(",", ":"), sort_keys=True, default=str)
        script = Script("audit", [self.keys.stream(0), self.keys.seq(0)],
                        [*self._common(0), action, meta])
        reply = yield script
        if reply[0] == ResultCode.ledger_not_loaded:
            reply = yield from self._not_loaded(0, script)
            raise_for_code(RESULT_CODES[reply[0]])
        event_id = int(reply[1])
        return event_id

    # -- expiry -------------------------------------------------------------------------------

    def sweep(self) -> Op[SweepResult]:
        """End every hold past its TTL and prune old records, account by account (bounded)."""
        labels = yield from self.list_labels()
        expired = pruned = 0
        for label in labels:
            k = self.keys.account(label)
            for _ in range(limits.sweep_rounds_max):
                keys, _ = self._script_keys(k, label)  # the index rides along when in the slot
                script = Script(
                    "expire", keys,
                    [*self._common(k.shard), label, self.retention_ms,
                     limits.sweep_per_account_max, limits.sweep_per_account_max],
                )
                reply = yield script
                if reply[0] == ResultCode.ledger_not_loaded:
                    reply = yield from self._not_loaded(k.shard, script)
                    raise_for_code(RESULT_CODES[reply[0]])
                expired += int(reply[1])
                pruned += int(reply[2])
                if int(reply[1]) < limits.sweep_per_account_max and int(
                    reply[2]
                ) < limits.sweep_per_account_max:
                    break
        return SweepResult(expired, pruned, len(labels))

    # -- the seed's currency-level operations (Decimal amounts) --------------------------------

    def get_reserve_account(self, currency: str, account_type: str | None = None) -> Op[Account]:
        return (yield from self.open_account(self.reserve_spec(currency, account_type)))

    def get_reserve_balance(self, currency: str, account_type: str | None = None) -> Op[Balance]:
        return (yield from self.balance(self.reserve_spec(currency, account_type)))

    def check_reserve_sufficiency(
        self, currency: str, amount: Any, account_type: str | None = None,
        operation_type: str = "check",
    ) -> Op[dict[str, Any]]:
        check_operation_type(operation_type)
        spec = self.reserve_spec(currency, account_type)
        amount_minor = to_minor(amount, spec.currency.decimals, spec.currency.code)
        balance = yield from self.balance(spec)
        return balance.sufficiency(amount_minor)

    def reserve_amount(
        self, currency: str, amount: Any, account_type: str | None, reference_id: str,
        operation_type: str, ttl_s: int | None = None, metadata: dict[str, Any] | None = None,
    ) -> Op[HoldResult]:
        spec = self.reserve_spec(currency, account_type)
        amount_minor = to_minor(amount, spec.currency.decimals, spec.currency.code)
        return (yield from self.reserve(spec, amount_minor, reference_id, operation_type, ttl_s,
                                        metadata))

    def commit_reserve(
        self, reference_id: str, amount: Any = None, metadata: dict[str, Any] | None = None,
    ) -> Op[HoldResult]:
        if amount is None:
            return (yield from self.commit(reference_id, None, metadata))
        check_reference(reference_id)
        for attempt in range(2):
            # the amount becomes minor units with the decimals of the account the cache names;
            # the script checks that currency against the account it acts on (41 if stale)
            label = yield from self.hold_label(reference_id)
            account = yield from self.account_of_label(label)
            cur = account.currency
            amount_minor = to_minor(amount, cur.decimals, cur.code)
            try:
                return (yield from self.commit(reference_id, amount_minor, metadata, cur.code))
            except CurrencyMismatch:
                if attempt:
                    raise
                self._hold_labels.pop(reference_id, None)  # stale: ask the index again
        raise AssertionError("unreachable")

    def top_up_reserve(
        self, currency: str, amount: Any, account_type: str | None, source_reference: str,
        metadata: dict[str, Any] | None = None,
    ) -> Op[TransferResult]:
        spec = self.reserve_spec(currency, account_type)
        amount_minor = to_minor(amount, spec.currency.decimals, spec.currency.code)
        return (yield from self.top_up(spec, amount_minor, source_reference, metadata))

    def withdraw_from_reserve(
        self, currency: str, amount: Any, account_type: str | None, destination_reference: str,
        metadata: dict[str, Any] | None = None,
    ) -> Op[TransferResult]:
        spec = self.reserve_spec(currency, account_type)
        amount_minor = to_minor(amount, spec.currency.decimals, spec.currency.code)
        return (yield from self.withdraw(spec, amount_minor, destination_reference, metadata))

    def all_reserve_balances(self) -> Op[list[Balance]]:
        """Every reserve of the registry (opened on first look), in one round trip."""
        specs = [self.reserve_spec(c.code, c.account_type) for c in self.registry]
        return (yield from self.balances(specs))


def _check_minor(amount_minor: int) -> None:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise InvalidRequest("amount must be an integer number of minor units")
    if amount_minor <= 0:
        raise InvalidRequest("amount must be greater than zero")
    if amount_minor > limits.amount_minor_max:
        raise InvalidRequest("amount exceeds the largest supported amount")


def _ttl_ms(ttl_s: Any) -> int:
    if ttl_s is None:
        return 0
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | Decimal):
        raise InvalidRequest("ttl_seconds must be an integer number of seconds")
    if ttl_s != int(ttl_s) or not limits.hold_ttl_s_min <= int(ttl_s) <= limits.hold_ttl_s_max:
        raise InvalidRequest(
            f"ttl_seconds must be a whole number from {limits.hold_ttl_s_min} to {limits.hold_ttl_s_max}"
        )
    return int(ttl_s) * 1000
