"""The journal: what every script appends to its shard's stream, in the same atomic step.

Stream `{prefix}:{s<N>}:journal` (one per shard; KeySpace.streams() lists them). Each entry's
fields are strings:

    id      event id: a positive integer, unique across shards, increasing within a shard.
            It is also the `transaction_id` the API returns.
    op      account_open | reserve_lock | reserve_release | reserve_commit | reserve_expire |
            reserve_topup | reserve_withdrawal | audit
    acct    account label (RESERVE_USDT_CRYPTO, USER_42_USDT); "" for audit
    ref     the reference (hold reference_id, source / destination reference); "" for opens
    amt     amount in minor units (>= 0): locked, released, expired, committed, topped up, withdrawn
    dt      signed change of the account's total (minor units)
    dl      signed change of the account's locked (minor units)
    total   the account's total after the event
    locked  the account's locked after the event
    ts      milliseconds since the epoch (the engine's clock)
    meta    JSON object text or "" (operation metadata; admin changes carry actor, ip, request)
  only on some operations:
    exp     reserve_lock: the hold's expiry (ms since the epoch; "0" = none)
    optype  reserve_lock: the operation type (swap, buy, sell, ...)
    held    reserve_commit: the hold's full amount (locked fell by this; amt is what left)
    cur, type, kind, aid, num   account_open: currency, crypto|fiat, reserve|user, account id,
                                account number

Per account, summing dt over its events gives its total and summing dl gives its locked: the
reconciliation the persistence layer checks. The id counter key is `{prefix}:{s<N>}:seq`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MONEY_OPERATIONS = (
    "reserve_lock",
    "reserve_release",
    "reserve_commit",
    "reserve_expire",
    "reserve_topup",
    "reserve_withdrawal",
)


# The fields every event has, in the order lua/lib/common.lua's apply() writes them (every money
# event): a flat list that starts so is read by position.
_HEAD = ("id", "op", "acct", "ref", "amt", "dt", "dl", "total", "locked", "ts", "meta")
_HEAD_END = 2 * len(_HEAD)
_KNOWN_FIELDS = frozenset(_HEAD)


# Not frozen: the persister builds one per event, and a frozen dataclass's __init__ costs ~7x.
@dataclass(slots=True)
class JournalEvent:
    stream_id: str
    event_id: int
    op: str
    account: str
    reference: str
    amount_minor: int
    d_total_minor: int
    d_locked_minor: int
    total_minor: int
    locked_minor: int
    ts_ms: int
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, stream_id: str, fields: dict[str, str] | list[str]) -> JournalEvent:
        """An entry's fields, as a dict or as the flat [name, value, ...] list Redis sends."""
        if isinstance(fields, list) and tuple(fields[0:_HEAD_END:2]) == _HEAD:
            event = cls._from_head(stream_id, fields)
        else:
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2], strict=True))
            event = cls._from_dict(stream_id, fields)
        assert event.total_minor >= event.locked_minor >= 0 or event.op == "audit", event
        return event

    @classmethod
    def _from_dict(cls, stream_id: str, fields: dict[str, str]) -> JournalEvent:
        meta_text = fields.get("meta", "")
        return cls(
            stream_id=stream_id,
            event_id=int(fields["id"]),
            op=fields["op"],
            account=fields.get("acct", ""),
            reference=fields.get("ref", ""),
            amount_minor=int(fields.get("amt", 0)),
            d_total_minor=int(fields.get("dt", 0)),
            d_locked_minor=int(fields.get("dl", 0)),
            total_minor=int(fields.get("total", 0)),
            locked_minor=int(fields.get("locked", 0)),
            ts_ms=int(fields.get("ts", 0)),
            meta=json.loads(meta_text) if meta_text else {},
            extra={k: fields[k] for k in fields.keys() - _KNOWN_FIELDS},
        )

    @classmethod
    def _from_head(cls, stream_id: str, f: list[str]) -> JournalEvent:
        """The flat list of an event in _HEAD's order, its own fields after."""
        meta_text = f[21]
        return cls(stream_id, int(f[1]), f[3], f[5], f[7], int(f[9]), int(f[11]), int(f[13]),
                   int(f[15]), int(f[17]), int(f[19]), json.loads(meta_text) if meta_text else {},
                   dict(zip(f[_HEAD_END::2], f[_HEAD_END + 1::2], strict=True)))
