"""A report as one self-contained HTML page: the figures (the CSV's columns, the same text) and
charts drawn as inline SVG here, with no script, no external asset and no network.

Chart geometry is integer pixels computed from integer minor units and exact Decimals: no float.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from html import escape

from engine.money import from_minor, json_number, utilization_percent
from persistence.report import COLUMNS, CurrencyFigures, Report, row_values

BAR_W_PX = 420  # the longest bar
LABEL_W_PX = 110
ROW_H_PX = 30
STATUS_COLOURS = {"healthy": "#2e7d32", "moderate": "#f9a825", "warning": "#ef6c00",
                  "critical": "#c62828"}
FLOW_COLOURS = {"reserved": "#90a4ae", "committed": "#5e35b1", "released": "#b0bec5",
                "topped_up": "#2e7d32", "withdrawn": "#c62828", "volume": "#1565c0"}
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #212121; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
svg text { font: 12px system-ui, sans-serif; fill: #212121; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; }
.wide { overflow-x: auto; }
"""


def _px(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def _utilization_chart(rows: list[CurrencyFigures]) -> str:
    """Per currency: utilization at the end of the period (filled, coloured by status) and the
    peak of the period (outlined), on 0-100 %, with the 50 / 75 / 90 % status lines."""
    height = ROW_H_PX * len(rows) + 30
    width = LABEL_W_PX + BAR_W_PX + 180
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}">',
             "<title>Utilization per currency: end of period and peak</title>"]
    for threshold in (50, 75, 90, 100):
        x = LABEL_W_PX + BAR_W_PX * threshold // 100
        parts.append(f'<line x1="{x}" y1="0" x2="{x}" y2="{height - 20}" stroke="#bbb" '
                     f'stroke-dasharray="4 3"/><text x="{x - 10}" y="{height - 6}">'
                     f"{threshold}%</text>")
    for i, f in enumerate(rows):
        y = i * ROW_H_PX + 4
        now_pct = utilization_percent(f.locked_minor, f.total_minor)
        peak_pct = utilization_percent(f.peak_locked_minor, f.peak_total_minor)
        status = row_values(f)["status"]
        parts.append(f'<text x="0" y="{y + 15}">{escape(f.currency)}</text>')
        parts.append(f'<rect x="{LABEL_W_PX}" y="{y}" width="{_px(peak_pct * BAR_W_PX / 100)}" '
                     f'height="20" fill="none" stroke="#616161"/>')
        parts.append(f'<rect x="{LABEL_W_PX}" y="{y + 4}" width="{_px(now_pct * BAR_W_PX / 100)}"'
                     f' height="12" fill="{STATUS_COLOURS.get(status, "#616161")}"/>')
        parts.append(f'<text x="{LABEL_W_PX + BAR_W_PX + 6}" y="{y + 15}">{now_pct}% '
                     f"(peak {peak_pct}%)</text>")
    parts.append("</svg>")
    return "".join(parts)


def _flows_chart(f: CurrencyFigures) -> str:
    """One currency's flows of the period and its volume, bars scaled to the largest."""
    bars: list[tuple[str, int, int | None]] = [
        (kind, flow.amount_minor, flow.count) for kind, flow in f.flows.items()]
    bars.append(("volume", f.volume_minor, None))
    largest = max(amount for _, amount, _ in bars)
    height = ROW_H_PX * len(bars) + 4
    width = LABEL_W_PX + BAR_W_PX + 160
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}">',
             f"<title>{escape(f.currency)}: flows of the period</title>"]
    for i, (kind, amount_minor, count) in enumerate(bars):
        y = i * ROW_H_PX + 4
        bar_px = amount_minor * BAR_W_PX // largest if largest else 0
        label = json_number(from_minor(amount_minor, f.decimals))
        if count is not None:
            label += f" ({count})"
        parts.append(f'<text x="0" y="{y + 15}">{kind.replace("_", " ")}</text>')
        parts.append(f'<rect x="{LABEL_W_PX}" y="{y}" width="{bar_px}" height="20" '
                     f'fill="{FLOW_COLOURS[kind]}"/>')
        parts.append(f'<text x="{LABEL_W_PX + bar_px + 6}" y="{y + 15}">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _figures_table(report: Report) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body = []
    for f in report.rows:
        values = row_values(f)
        body.append("<tr>" + "".join(f"<td>{escape(str(values[c]))}</td>" for c in COLUMNS)
                    + "</tr>")
    return (f'<div class="wide"><table id="figures"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div>")


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_html(report: Report) -> str:
    source = ("current, from Redis" if report.balances_source == "redis"
              else "as persisted in the ledger at the end of the period")
    title = f"Reserves report ({report.period}): {_when(report.since)} to {_when(report.until)}"
    moving = [f for f in report.rows
              if f.volume_minor or any(flow.count for flow in f.flows.values())]
    flows = "".join(f"<figure><figcaption>{escape(f.currency)}</figcaption>{_flows_chart(f)}"
                    "</figure>" for f in moving)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>Balances: {source}. Amounts in each currency's major units. Flows show the amount "
        "and, in parentheses, the number of operations; released includes expired holds. "
        "Volume = topped up + withdrawn + committed (money that moved). Net change = topped up "
        "- withdrawn - committed.</p>",
        "<h2>Utilization</h2>",
        f"<p>Filled: at the end of the period. Outlined: the peak of the period. Dashed: the "
        f"moderate, warning and critical levels, and 100 %.</p>{_utilization_chart(report.rows)}",
        "<h2>Flows of the period</h2>",
        f'<div class="charts">{flows}</div>' if flows else "<p>No flows in this period.</p>",
        "<h2>Figures</h2>",
        _figures_table(report),
        "</body></html>",
        "",
    ])
