"""The deployment's generation marker: is Redis holding the ledger's state, or did it lose it?

Redis carries the marker in two forms (engine/keys.py): `{prefix}:generation`, written when a
deployment is initialised and by `reserves rebuild`, and each shard's event counter, which every
write script requires (lua/lib/common.lua check_seq: missing = code 40, ledger_not_loaded), so a
Redis flushed under a running process is refused by the scripts themselves. A process with the
ledger guard (engine/config.py) never recreates them: only `initialise_if_new` below (when the
ledger is empty, a brand-new deployment) or `reserves rebuild` does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa

from engine.config import Settings
from engine.keys import KeySpace
from persistence.store import Store

log = logging.getLogger("reserves.generation")


def is_loaded(client: Any, settings: Settings) -> bool:
    """Whether Redis holds the deployment's state: every shard's event counter (what the
    scripts check) and the marker."""
    keys = KeySpace(settings.key_prefix, settings.shard_count)
    return bool(client.exists(keys.generation())) and _counters_present(client, keys)


def _counters_present(client: Any, keys: KeySpace) -> bool:
    return all(client.exists(keys.seq(shard)) for shard in range(keys.shard_count))


def mark_loaded(client: Any, settings: Settings, counters: dict[int, int], label: str) -> None:
    """Write each shard's event counter (at least the given value) and the marker, last."""
    keys = KeySpace(settings.key_prefix, settings.shard_count)
    for shard in range(keys.shard_count):
        key, value = keys.seq(shard), counters.get(shard, 0)
        current = client.get(key)
        if current is None or int(current) < value:
            client.set(key, value)
    client.set(keys.generation(), f"{label}:{time.time_ns() // 1_000_000}")


def initialise_if_new(client: Any, settings: Settings) -> bool:
    """At a process's start: True when Redis holds the ledger's state (then the marker is
    written, if missing). Shard by shard: an event counter present is loaded; one missing where
    the ledger has no event of that shard (a new deployment, a shard never used) is started at
    0; one missing where the ledger has events of it is Redis that lost that shard's data: left
    missing, so its writes answer 503 ledger_not_loaded until an operator runs `reserves
    rebuild`, and then False."""
    keys = KeySpace(settings.key_prefix, settings.shard_count)
    missing = [s for s in range(keys.shard_count) if not client.exists(keys.seq(s))]
    if missing:
        store = Store(settings.database_url)
        try:
            used = store.max_event_ids(keys.shard_count) if store.has_history() else {}
        finally:
            store.close()
        lost = [s for s in missing if s in used]
        for shard in missing:
            if shard not in lost:
                client.set(keys.seq(shard), 0, nx=True)
        if lost:
            log.error("Redis does not hold the ledger's state (shards %s have no event counter "
                      "while the ledger %s has their events): their writes are refused (503 "
                      "ledger_not_loaded) until `reserves rebuild` runs", lost,
                      sa.make_url(settings.database_url).render_as_string(hide_password=True))
            return False
    if client.set(keys.generation(), f"checked:{time.time_ns() // 1_000_000}", nx=True):
        log.info("generation marker written (%d shard(s) started)", len(missing))
    return True
