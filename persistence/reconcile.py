"""`reserves reconcile`: the Redis balances against the ledger, account by account.

For each account: Redis total / locked against the sums of d_total / d_locked of its persisted
events, the ledger's sums against the balances its last event recorded, and the pending holds
of both sides. Run it when the persister has caught up (the command reports the lag it saw):
events still in the stream show up as differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config import Settings
from engine.keys import KeySpace
from persistence.store import Store


@dataclass(frozen=True, slots=True)
class Difference:
    account: str
    what: str
    redis: str
    ledger: str

    def __str__(self) -> str:
        return f"{self.account}: {self.what}: redis={self.redis} ledger={self.ledger}"


def _redis_state(client: Any, keys: KeySpace) -> tuple[dict[str, tuple[int, int]],
                                                      dict[str, dict[str, int]]]:
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.shard_count):
        pipe.smembers(keys.accounts_set(shard))
    labels = sorted(label for members in pipe.execute() for label in members)
    pipe = client.pipeline(transaction=False)
    for label in labels:
        k = keys.account(label)
        pipe.hmget(k.acct, "total", "locked")
        pipe.hgetall(k.holds)
    replies = pipe.execute()
    balances: dict[str, tuple[int, int]] = {}
    pending: dict[str, dict[str, int]] = {}
    for i, label in enumerate(labels):
        total, locked = replies[2 * i]
        balances[label] = (int(total or 0), int(locked or 0))
        pending[label] = {
            ref: int(raw.split("|")[1]) for ref, raw in replies[2 * i + 1].items()
            if raw.startswith("pending|")
        }
    return balances, pending


def reconcile(redis_client: Any, settings: Settings, database_url: str) -> list[Difference]:
    keys = KeySpace(settings.key_prefix, settings.shard_count)
    balances, redis_pending = _redis_state(redis_client, keys)
    store = Store(database_url)
    try:
        ledger = store.ledger_sums()
        ledger_pending: dict[str, dict[str, int]] = {}
        for row in store.holds(["pending"]):
            ledger_pending.setdefault(row.account, {})[row.reference] = int(row.amount_minor)
    finally:
        store.close()
    differences: list[Difference] = []
    for label in sorted(set(balances) | set(ledger)):
        in_redis, in_ledger = balances.get(label), ledger.get(label)
        if in_redis is None:
            differences.append(Difference(label, "account", "missing", "present"))
            continue
        if in_ledger is None:
            differences.append(Difference(label, "account", "present", "missing"))
            continue
        for what, r, s in (("total_minor", in_redis[0], in_ledger.total_minor),
                           ("locked_minor", in_redis[1], in_ledger.locked_minor)):
            if r != s:
                differences.append(Difference(label, what, str(r), str(s)))
        if (in_ledger.total_minor, in_ledger.locked_minor) != (
                in_ledger.last_total_minor, in_ledger.last_locked_minor):
            differences.append(Difference(
                label, "ledger sums vs last event balances",
                f"{in_ledger.last_total_minor}/{in_ledger.last_locked_minor}",
                f"{in_ledger.total_minor}/{in_ledger.locked_minor}"))
        ours, theirs = redis_pending.get(label, {}), ledger_pending.get(label, {})
        for ref in sorted(set(ours) | set(theirs)):
            if ours.get(ref) != theirs.get(ref):
                differences.append(Difference(label, f"pending hold {ref}",
                                              str(ours.get(ref, "none")), str(theirs.get(ref, "none"))))
    return differences
