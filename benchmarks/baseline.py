"""Scenario 2: the same cycles as a conventional SQL implementation (kept here only).

Postgres, one transaction per operation: SELECT ... FOR UPDATE on the account row, check,
update, insert the hold and the transaction row, COMMIT; psycopg 3 async with a connection
pool. Tables live in a schema of their own, dropped after the run."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from benchmarks.stats import Cell

POOL_CONNECTIONS_MAX = 64  # Postgres allows 100 by default; other users need some
POOL_WAIT_S = 30.0
FIRST_ERRORS_MAX = 3


class Refused(Exception):
    pass


def conninfo(database_url: str) -> str:
    """psycopg conninfo from the SQLAlchemy URL (postgresql+psycopg://...)."""
    import sqlalchemy as sa

    url = sa.make_url(database_url)
    parts = [f"host={url.host or '127.0.0.1'}", f"port={url.port or 5432}",
             f"dbname={url.database}", f"user={url.username or 'postgres'}"]
    if url.password:
        parts.append(f"password={url.password}")
    return " ".join(parts)


def _ddl(schema: str) -> list[str]:
    return [
        f"CREATE SCHEMA {schema}",
        (f"CREATE TABLE {schema}.accounts (id integer PRIMARY KEY, total bigint NOT NULL, "
         "locked bigint NOT NULL)"),
        (f"CREATE TABLE {schema}.holds (ref text PRIMARY KEY, account_id integer NOT NULL, "
         "amount bigint NOT NULL, committed bigint NOT NULL DEFAULT 0, state text NOT NULL)"),
        (f"CREATE TABLE {schema}.transactions (id bigserial PRIMARY KEY, "
         "account_id integer NOT NULL, ref text NOT NULL, op text NOT NULL, "
         "amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"),
    ]


async def reserve(conn: Any, s: str, account_id: int, ref: str, amount: int) -> None:
    async with conn.transaction():
        cur = await conn.execute(
            f"SELECT total, locked FROM {s}.accounts WHERE id = %s FOR UPDATE", (account_id,))
        total, locked = await cur.fetchone()
        if amount > total - locked:
            raise Refused(f"insufficient: {amount} > {total - locked}")
        await conn.execute(f"INSERT INTO {s}.holds (ref, account_id, amount, state) "
                           "VALUES (%s, %s, %s, 'pending')", (ref, account_id, amount))
        await conn.execute(f"UPDATE {s}.accounts SET locked = locked + %s WHERE id = %s",
                           (amount, account_id))
        await conn.execute(f"INSERT INTO {s}.transactions (account_id, ref, op, amount) "
                           "VALUES (%s, %s, 'reserve_lock', %s)", (account_id, ref, amount))


async def end(conn: Any, s: str, ref: str, commit: bool) -> int:
    """Commit (all of it) or release a pending hold; returns the amount committed."""
    async with conn.transaction():
        cur = await conn.execute(
            f"SELECT account_id, amount, state FROM {s}.holds WHERE ref = %s FOR UPDATE", (ref,))
        row = await cur.fetchone()
        if row is None or row[2] != "pending":
            raise Refused(f"hold {ref} is not pending")
        account_id, amount, _ = row
        await conn.execute(f"SELECT 1 FROM {s}.accounts WHERE id = %s FOR UPDATE", (account_id,))
        committed = amount if commit else 0
        state = "committed" if commit else "released"
        await conn.execute(f"UPDATE {s}.holds SET state = %s, committed = %s WHERE ref = %s",
                           (state, committed, ref))
        await conn.execute(f"UPDATE {s}.accounts SET total = total - %s, locked = locked - %s "
                           "WHERE id = %s", (committed, amount, account_id))
        await conn.execute(f"INSERT INTO {s}.transactions (account_id, ref, op, amount) "
                           "VALUES (%s, %s, %s, %s)",
                           (account_id, ref, "reserve_commit" if commit else "reserve_release",
                            committed or amount))
        return committed


async def run_cell(database_url: str, schema: str, clients: int, accounts: int, cycle: str,
                   warmup_s: float, cell_s: float, balance_minor: int, label: str) -> Cell:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    info = conninfo(database_url)
    async with await psycopg.AsyncConnection.connect(info, autocommit=True) as admin:
        for statement in _ddl(schema):
            await admin.execute(statement)
        await admin.execute(
            f"INSERT INTO {schema}.accounts SELECT g, %s, 0 FROM generate_series(1, %s) g",
            (balance_minor, accounts))
    cell = Cell("baseline", label, clients, accounts)
    committed: dict[int, int] = {}
    latencies: list[int] = []
    reserve_ns: list[int] = []
    errors: list[str] = []
    applied = 0
    measured = 0
    commit = cycle == "commit"
    pool = AsyncConnectionPool(info, min_size=min(clients, POOL_CONNECTIONS_MAX),
                               max_size=min(clients, POOL_CONNECTIONS_MAX), open=False,
                               timeout=POOL_WAIT_S)
    await pool.open(wait=True)
    clock = time.perf_counter_ns
    start_ns = clock()
    measure_from_ns = start_ns + int(warmup_s * 1e9)
    end_ns = measure_from_ns + int(cell_s * 1e9)

    async def client(index: int) -> None:
        nonlocal applied, measured
        n = 0
        while True:
            start = clock()
            if start >= end_ns:
                return
            account_id = 1 + (index + n * clients) % accounts
            ref = f"c{index}-{n}"
            n += 1
            try:
                async with pool.connection() as conn:
                    await reserve(conn, schema, account_id, ref, 1)
                middle = clock()
                async with pool.connection() as conn:
                    amount = await end(conn, schema, ref, commit)
                stop = clock()
            except Exception as exc:  # any refusal is a failure here: balances are ample
                if len(errors) < FIRST_ERRORS_MAX:
                    errors.append(f"{type(exc).__name__}: {exc}")
                cell.errors += 1
                continue
            committed[account_id] = committed.get(account_id, 0) + amount
            applied += 2
            if start >= measure_from_ns:
                measured += 2
                latencies.extend((middle - start, stop - middle))
                reserve_ns.append(middle - start)

    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
        finished = clock()
    finally:
        await pool.close()
    cell.ops = measured
    cell.extra["load_1m"] = round(os.getloadavg()[0], 2)
    cell.duration_s = max(1e-9, (finished - measure_from_ns) / 1e9)
    cell.set_latencies(latencies, reserve_ns)
    if errors:
        cell.extra["first_errors"] = errors
    async with await psycopg.AsyncConnection.connect(info, autocommit=True) as admin:
        cur = await admin.execute(f"SELECT id, total, locked FROM {schema}.accounts")
        for account_id, total, locked in await cur.fetchall():
            if total < locked or locked < 0:
                cell.violations.append(f"oversold: account {account_id} ({total}, {locked})")
            if total != balance_minor - committed.get(account_id, 0) or locked != 0:
                cell.violations.append(f"conservation: account {account_id} ({total}, {locked})")
        cur = await admin.execute(f"SELECT count(*) FROM {schema}.transactions")
        count_row = await cur.fetchone()
        assert count_row is not None
        rows = count_row[0]
        if rows != applied:
            cell.violations.append(f"{rows} transaction rows for {applied} applied operations")
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    return cell


def run(database_url: str, run_id: str, plan: Any, tick: Callable[[str], None],
        run_async: Any = asyncio.run) -> list[Cell]:
    results = []
    i = 0
    for cycle in plan.cycles:
        for accounts in plan.accounts_counts:
            for clients in plan.clients_counts:
                tick(f"baseline: {cycle} cycle, {clients} clients, {accounts} account(s)")
                results.append(run_async(run_cell(
                    database_url, f"{run_id}_pg{i}", clients, accounts, cycle, plan.warmup_s,
                    plan.cell_s, plan.balance_minor, f"{cycle} cycle")))
                i += 1
    return results
