"""Redis key layout. All keys of one account share its shard's hash tag, so that in a
Redis Cluster every script over one account runs in one slot.

    {prefix}:{s<N>}:a:<label>    account hash: label, currency, account_type, kind, account_id,
                                  account_number, created_ms, total, locked (integer minor units)
    {prefix}:{s<N>}:h:<label>    holds: reference -> hold record
    {prefix}:{s<N>}:x:<label>    pending holds by expiry time (zset, ms)
    {prefix}:{s<N>}:e:<label>    ended records by end time, pruned after the retention (zset, ms)
    {prefix}:{s<N>}:o:<label>    top-up / withdrawal records: reference -> result
    {prefix}:{s<N>}:journal      the shard's journal stream (consumed by the persister)
    {prefix}:{s<N>}:seq          the shard's event counter (event ids)
    {prefix}:{s<N>}:accounts     labels of the shard's accounts
    {prefix}:{s<N>}:account_seq  the shard's account counter (account ids)
    {prefix}:{s<M>}:index        reference -> account label, in the shard of the reference
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from engine import limits
from engine.caches import FifoCache


@dataclass(frozen=True, slots=True)
class AccountKeys:
    label: str
    shard: int
    acct: str
    holds: str
    expiry: str
    ended: str
    ops: str
    stream: str
    seq: str

    def script_keys(self) -> list[str]:
        """KEYS[1..7] of the per-account scripts (see lua/reserve.lua)."""
        return [self.acct, self.holds, self.expiry, self.ended, self.ops, self.stream, self.seq]


class KeySpace:
    def __init__(self, prefix: str, shard_count: int) -> None:
        assert 1 <= shard_count <= 1024
        self.prefix = prefix
        self.shard_count = shard_count
        self._accounts: FifoCache[str, AccountKeys] = FifoCache(limits.account_cache_max)
        self._index_keys = [f"{self.tag(shard)}:index" for shard in range(shard_count)]

    def shard_of(self, name: str) -> int:
        if self.shard_count == 1:
            return 0
        return zlib.crc32(name.encode()) % self.shard_count

    def tag(self, shard: int) -> str:
        return f"{self.prefix}:{{s{shard}}}"

    def account(self, label: str) -> AccountKeys:
        keys = self._accounts.get(label)
        if keys is None:
            shard = self.shard_of(label)
            t = self.tag(shard)
            keys = AccountKeys(
                label=label,
                shard=shard,
                acct=f"{t}:a:{label}",
                holds=f"{t}:h:{label}",
                expiry=f"{t}:x:{label}",
                ended=f"{t}:e:{label}",
                ops=f"{t}:o:{label}",
                stream=f"{t}:journal",
                seq=f"{t}:seq",
            )
            self._accounts[label] = keys
        return keys

    def index(self, reference_id: str) -> tuple[int, str]:
        shard = self.shard_of(reference_id)
        return shard, self._index_keys[shard]

    def stream(self, shard: int) -> str:
        return f"{self.tag(shard)}:journal"

    def streams(self) -> list[str]:
        return [self.stream(shard) for shard in range(self.shard_count)]

    def accounts_set(self, shard: int) -> str:
        return f"{self.tag(shard)}:accounts"

    def account_seq(self, shard: int) -> str:
        return f"{self.tag(shard)}:account_seq"

    def seq(self, shard: int) -> str:
        return f"{self.tag(shard)}:seq"
