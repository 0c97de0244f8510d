"""The checks every scenario ends with: a fast wrong answer is a failure.

No oversell (total >= locked >= 0 on every account), conservation (what left an account is
exactly what its callers saw committed; what stays locked is what they left pending), and the
journal adds up to the balances (each applied operation wrote exactly one event)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.journal import MONEY_OPERATIONS
from engine.keys import KeySpace

XRANGE_CHUNK_COUNT = 10_000


def balances(client: Any, keys: KeySpace, labels: Iterable[str]) -> dict[str, tuple[int, int]]:
    labels = list(labels)
    pipe = client.pipeline(transaction=False)
    for label in labels:
        pipe.hmget(keys.account(label).acct, "total", "locked")
    return {label: (int(total or 0), int(locked or 0))
            for label, (total, locked) in zip(labels, pipe.execute(), strict=True)}


def check_balances(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                   committed_minor: dict[str, int], pending_minor: dict[str, int]) -> list[str]:
    violations = []
    for label, (total, locked) in after.items():
        if total < locked:
            violations.append(f"oversold: {label} total {total} < locked {locked}")
        if locked < 0:
            violations.append(f"negative locked: {label} locked {locked}")
        total_before, locked_before = before[label]
        want_total = total_before - committed_minor.get(label, 0)
        want_locked = locked_before + pending_minor.get(label, 0)
        if total != want_total:
            violations.append(f"conservation: {label} total {total}, callers saw {want_total}")
        if locked != want_locked:
            violations.append(f"conservation: {label} locked {locked}, callers saw {want_locked}")
    return violations


def journal_sums(client: Any, keys: KeySpace) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Per account the sums of d_total / d_locked over every event of every shard's stream,
    and the number of events per operation."""
    sums: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    for stream in keys.streams():
        start = "-"
        while True:
            entries = client.xrange(stream, min=start, count=XRANGE_CHUNK_COUNT)
            for _, fields in entries:
                op = fields["op"]
                counts[op] = counts.get(op, 0) + 1
                if op in MONEY_OPERATIONS:
                    acc = sums.setdefault(fields["acct"], [0, 0])
                    acc[0] += int(fields["dt"])
                    acc[1] += int(fields["dl"])
            if len(entries) < XRANGE_CHUNK_COUNT:
                break
            start = "(" + entries[-1][0]
    return sums, counts


def check_journal(client: Any, keys: KeySpace, after: dict[str, tuple[int, int]],
                  applied_counts: dict[str, int]) -> list[str]:
    """The journal (untrimmed: no persister ran) adds up to the balances, and holds one event
    per applied operation (applied_counts: journal op -> operations the callers saw applied)."""
    sums, counts = journal_sums(client, keys)
    violations = []
    for label, (total, locked) in after.items():
        journal_total, journal_locked = sums.get(label, [0, 0])
        if (journal_total, journal_locked) != (total, locked):
            violations.append(f"journal: {label} events add up to ({journal_total}, "
                              f"{journal_locked}), balances are ({total}, {locked})")
    for op, applied in applied_counts.items():
        if counts.get(op, 0) != applied:
            violations.append(f"journal: {counts.get(op, 0)} {op} events for {applied} "
                              "applied operations")
    return violations


def delete_prefix(client: Any, prefix: str) -> None:
    batch: list[str] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
