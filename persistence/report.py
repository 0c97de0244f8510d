"""Daily, weekly and monthly reports: utilization, volume and top-up figures per currency, from
the ledger (the database) and the current balances, as Markdown or CSV (HTML: report_html.py).

Periods end at `until`: daily and weekly are the 24 h / 7 days before it, monthly the calendar
month before it (until - 1 month, the day clamped: Mar 31 -> Feb 28/29), in UTC. The scheduled
reports (report_schedule.py) end on a boundary (aligned_end), so theirs are calendar days, ISO
weeks (Monday 00:00 UTC) and calendar months.

Per currency (its reserve account):
    balances now          total / available / locked / utilization / status: from Redis when
                          given, else the ledger's last event (what was persisted)
    peak utilization      the highest locked / total over the period: entering it, after each
                          of its events, and now (balances from Redis)
    flows of the period   count and amount per kind: reserved (locks), committed, released
                          (releases and expiries), topped up, withdrawn
    volume                money that moved: the amounts of analytics.VOLUME_OPERATIONS (top-ups,
                          withdrawals, commits; not locks, releases, expiries), as the
                          total_volume of GET /wallet/reserves/analytics
    net change            the change of the total over the period (sum of the events' d_total):
                          topped up - withdrawn - committed

Amounts are integer minor units until they are written, then exact Decimals.
"""

from __future__ import annotations

import calendar
import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from engine.errors import InvalidRequest
from engine.journal import MONEY_OPERATIONS
from engine.money import from_minor, json_number, reserve_status, utilization_percent
from engine.registry import CurrencyRegistry
from engine.types import Balance
from persistence.analytics import VOLUME_OPERATIONS
from persistence.errors import translate
from persistence.schema import reserve_accounts, transactions
from persistence.store import shared_engine

PERIODS = ("daily", "weekly", "monthly")
_SPANS = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
# Flow kinds and the journal operations they add up.
FLOWS: dict[str, tuple[str, ...]] = {
    "reserved": ("reserve_lock",),
    "committed": ("reserve_commit",),
    "released": ("reserve_release", "reserve_expire"),
    "topped_up": ("reserve_topup",),
    "withdrawn": ("reserve_withdrawal",),
}
STREAM_ROWS = 1000  # rows fetched per round trip while scanning the period for the peak


@dataclass
class Flow:
    count: int = 0
    amount_minor: int = 0


@dataclass
class CurrencyFigures:
    currency: str
    account_type: str
    decimals: int
    total_minor: int = 0
    locked_minor: int = 0
    peak_locked_minor: int = 0  # locked / total at the period's peak utilization
    peak_total_minor: int = 0
    flows: dict[str, Flow] = field(default_factory=lambda: {k: Flow() for k in FLOWS})
    volume_minor: int = 0  # money that moved (VOLUME_OPERATIONS)
    net_change_minor: int = 0

    def raise_peak(self, locked_minor: int, total_minor: int) -> None:
        """Keep the higher utilization; exact (cross-multiplied), an empty reserve is 0 %."""
        if total_minor <= 0:
            return
        if self.peak_total_minor <= 0 or (
                locked_minor * self.peak_total_minor > self.peak_locked_minor * total_minor):
            self.peak_locked_minor, self.peak_total_minor = locked_minor, total_minor


@dataclass
class Report:
    period: str
    since: datetime
    until: datetime
    balances_source: str  # "redis" | "ledger"
    rows: list[CurrencyFigures]


def months_before(when: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months earlier, the day clamped to the month."""
    index = when.year * 12 + when.month - 1 - months
    year, month = divmod(index, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    return when.replace(year=year, month=month + 1, day=day)


def period_bounds(period: str, until: datetime | None = None) -> tuple[datetime, datetime]:
    if period not in PERIODS:
        raise InvalidRequest(f"period must be one of {', '.join(PERIODS)}")
    end = until or datetime.now(UTC)
    if end.tzinfo is None:
        raise InvalidRequest("the end of the period needs a time zone (e.g. 2026-11-25T00:00Z)")
    if period == "monthly":
        end = end.astimezone(UTC)  # calendar months of UTC
        return months_before(end, 1), end
    return end - _SPANS[period], end


def aligned_end(period: str, when: datetime) -> datetime:
    """The last boundary of the period at or before `when` (UTC): midnight, Monday's midnight,
    the first of the month's midnight."""
    if when.tzinfo is None:
        raise InvalidRequest("a time zone is needed")
    midnight = when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return midnight
    if period == "weekly":
        return midnight - timedelta(days=midnight.weekday())
    if period == "monthly":
        return midnight.replace(day=1)
    raise InvalidRequest(f"period must be one of {', '.join(PERIODS)}")


def closed_periods(period: str, now: datetime, count_max: int) -> list[tuple[datetime, datetime]]:
    """(start, end) of the last count_max periods that ended at or before now, oldest first."""
    assert count_max >= 0
    end = aligned_end(period, now)
    out = []
    for _ in range(count_max):
        start = period_bounds(period, end)[0]
        out.append((start, end))
        end = start
    return out[::-1]


def _read(engine: sa.Engine, stmt: Any) -> list[sa.Row[Any]]:
    try:
        with engine.connect() as conn:
            return list(conn.execute(stmt))
    except sa.exc.SQLAlchemyError as exc:
        raise translate(exc) from exc


def _ledger(engine: sa.Engine, rows: dict[str, CurrencyFigures], since: datetime,
            until: datetime) -> None:
    """Flows, net change and peak utilization of the period, per reserve account."""
    t, a = transactions, reserve_accounts
    in_period = (a.c.kind == "reserve", t.c.operation.in_(MONEY_OPERATIONS),
                 t.c.created_at >= since, t.c.created_at < until)
    totals = (sa.select(a.c.currency, t.c.operation, sa.func.count().label("n"),
                        sa.func.sum(t.c.amount_minor).label("amount_minor"),
                        sa.func.sum(t.c.d_total_minor).label("d_total_minor"))
              .join(a, a.c.label == t.c.account).where(*in_period)
              .group_by(a.c.currency, t.c.operation))
    kind_of = {op: kind for kind, ops in FLOWS.items() for op in ops}
    for r in _read(engine, totals):
        figures = rows.get(r.currency)
        if figures is None:
            continue  # a currency no longer in the registry
        kind = kind_of.get(r.operation)  # an operation without a column still counts below
        if kind is not None:
            figures.flows[kind].count += int(r.n)
            figures.flows[kind].amount_minor += int(r.amount_minor)
        if r.operation in VOLUME_OPERATIONS:
            figures.volume_minor += int(r.amount_minor)
        figures.net_change_minor += int(r.d_total_minor)
    peaks = (sa.select(a.c.currency, t.c.total_after_minor, t.c.locked_after_minor)
             .join(a, a.c.label == t.c.account).where(*in_period))
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS)
            for r in result.execute(peaks):
                if r.currency in rows:
                    rows[r.currency].raise_peak(int(r.locked_after_minor), int(r.total_after_minor))
    except sa.exc.SQLAlchemyError as exc:
        raise translate(exc) from exc


def _balances_at(engine: sa.Engine, when: datetime) -> dict[str, tuple[int, int]]:
    """currency -> (total, locked) of its reserve after its last persisted event before `when`."""
    t, a = transactions, reserve_accounts
    last = (sa.select(t.c.account, sa.func.max(t.c.event_id).label("last"))
            .where(t.c.created_at < when).group_by(t.c.account).subquery())
    stmt = (sa.select(a.c.currency, t.c.total_after_minor, t.c.locked_after_minor)
            .join(last, last.c.last == t.c.event_id).join(a, a.c.label == t.c.account)
            .where(a.c.kind == "reserve"))
    return {r.currency: (int(r.total_after_minor), int(r.locked_after_minor))
            for r in _read(engine, stmt)}


def build_report(database_url: str, registry: CurrencyRegistry, period: str,
                 balances: Sequence[Balance] | None = None,
                 until: datetime | None = None) -> Report:
    """balances: the current ones (from Redis); None: the ledger's, as of the period's end."""
    since, end = period_bounds(period, until)
    rows = {c.code: CurrencyFigures(c.code, c.account_type.value, c.decimals) for c in registry}
    engine = shared_engine(database_url)
    for code, (total, locked) in _balances_at(engine, since).items():  # entering the period
        if code in rows:
            rows[code].raise_peak(locked, total)
    _ledger(engine, rows, since, end)
    if balances is None:
        for code, (total, locked) in _balances_at(engine, end).items():
            if code in rows:
                rows[code].total_minor, rows[code].locked_minor = total, locked
    else:
        for b in balances:
            figures = rows[b.account.currency.code]
            figures.total_minor, figures.locked_minor = b.total_minor, b.locked_minor
            if until is None:  # now is the end of the period
                figures.raise_peak(b.locked_minor, b.total_minor)
    for figures in rows.values():
        assert figures.total_minor >= figures.locked_minor, figures
        assert figures.locked_minor >= 0, figures
    return Report(period, since, end, "ledger" if balances is None else "redis",
                  list(rows.values()))


# -- rendering --------------------------------------------------------------------------------

COLUMNS = ("currency", "account_type", "total", "available", "locked", "utilization_pct",
           "status", "peak_utilization_pct", "reserved_count", "reserved", "committed_count",
           "committed", "released_count", "released", "topped_up_count", "topped_up",
           "withdrawn_count", "withdrawn", "volume", "net_change")


def row_values(f: CurrencyFigures) -> dict[str, Any]:
    def money(minor: int) -> str:
        return json_number(from_minor(minor, f.decimals))

    values: dict[str, Any] = {
        "currency": f.currency, "account_type": f.account_type,
        "total": money(f.total_minor), "available": money(f.total_minor - f.locked_minor),
        "locked": money(f.locked_minor),
        "utilization_pct": str(utilization_percent(f.locked_minor, f.total_minor)),
        "status": reserve_status(f.locked_minor, f.total_minor),
        "peak_utilization_pct": str(utilization_percent(f.peak_locked_minor, f.peak_total_minor)),
    }
    for kind, flow in f.flows.items():
        values[f"{kind}_count"] = flow.count
        values[kind] = money(flow.amount_minor)
    values["volume"] = money(f.volume_minor)
    values["net_change"] = money(f.net_change_minor)
    return values


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for f in report.rows:
        writer.writerow(row_values(f))
    return out.getvalue()


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], numeric_from: int) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i >= numeric_from else "---"
                            for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(report: Report) -> str:
    rows = [row_values(f) for f in report.rows]
    source = ("current, from Redis" if report.balances_source == "redis"
              else "as persisted in the ledger at the end of the period")
    lines = [f"# Reserves report ({report.period})", "",
             f"Period: {_when(report.since)} to {_when(report.until)}. "
             f"Balances: {source}. Amounts in each currency's major units.", "",
             "## Utilization", ""]
    lines += _table(["currency", "type", "status", "total", "available", "locked",
                     "utilization %", "peak in period %"],
                    ([v["currency"], v["account_type"], v["status"], v["total"], v["available"],
                      v["locked"], v["utilization_pct"], v["peak_utilization_pct"]]
                     for v in rows), numeric_from=3)
    lines += ["", "## Volume and top-ups", ""]
    lines += _table(["currency", "reserved", "committed", "released", "topped up", "withdrawn",
                     "volume", "net change"],
                    ([v["currency"], *(f"{v[k]} ({v[k + '_count']})" for k in FLOWS),
                      v["volume"], v["net_change"]] for v in rows), numeric_from=1)
    lines += ["", "Flows show the amount and, in parentheses, the number of operations; "
              "released includes expired holds. Volume = topped up + withdrawn + committed "
              "(money that moved). Net change = topped up - withdrawn - committed.", ""]
    return "\n".join(lines)


def render(report: Report, fmt: str) -> str:
    if fmt == "csv":
        return render_csv(report)
    if fmt == "markdown":
        return render_markdown(report)
    raise InvalidRequest("format must be markdown or csv")

