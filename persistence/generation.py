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


def ledger_has_history(database_url: str) -> bool:
    """Whether the book of record holds any event (no table yet: none)."""
    store = Store(database_url)
    try:
        return store.has_history()
    finally:
        store.close()


def initialise_if_new(client: Any, settings: Settings) -> bool:
    """At a process's start: True when Redis holds the ledger's state, or when it is a brand-new
    deployment (an empty ledger), which is initialised here. False when Redis lacks the marker
    while the ledger has history: Redis lost its data, writes answer 503 ledger_not_loaded until
    an operator runs `reserves rebuild`."""
    keys = KeySpace(settings.key_prefix, settings.shard_count)
    if _counters_present(client, keys):
        # a deployment from before the marker: its counters say Redis has its state
        client.set(keys.generation(), f"adopted:{time.time_ns() // 1_000_000}", nx=True)
        return True
    if ledger_has_history(settings.database_url):
        log.error("Redis does not hold the ledger's state (no generation marker) while the "
                  "ledger %s has history: writes are refused (503 ledger_not_loaded) until "
                  "`reserves rebuild` runs",
                  sa.make_url(settings.database_url).render_as_string(hide_password=True))
        return False
    mark_loaded(client, settings, {}, "new")
    log.info("new deployment: generation marker written")
    return True
