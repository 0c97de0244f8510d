"""Monitoring settings: balance floors per currency, webhooks. From the environment, or a TOML
file named by RESERVES_ALERT_CONFIG:

    [floors]            # available balance below which a reserve alerts, in major units
    USDT = "1000"
    UGX = "5000000"

    [webhooks]
    urls = ["http://127.0.0.1:9000/hook"]
    secret = "..."

    [thresholds]        # system alerts; each defaults to its bound in limits.py
    latency_requests_min = 100
    refusal_rate_pct_max = 10

RESERVES_ALERT_FLOORS="USDT=1000,UGX=5000000", RESERVES_ALERT_WEBHOOKS (comma-separated URLs),
RESERVES_ALERT_WEBHOOK_SECRET and RESERVES_ALERT_THRESHOLDS="latency_requests_min=50,..."
override the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engine.errors import InvalidRequest
from engine.monitoring import limits
from engine.money import to_minor
from engine.registry import CurrencyRegistry


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The system alerts' thresholds (integers, units in the names)."""

    persister_lag_s_max: int = limits.persister_lag_s_max
    error_rate_pct_max: int = limits.error_rate_pct_max
    error_rate_requests_min: int = limits.error_rate_requests_min
    latency_p99_ms_max: int = limits.latency_p99_ms_max
    latency_requests_min: int = limits.latency_requests_min
    refusal_rate_pct_max: int = limits.refusal_rate_pct_max
    refusal_rate_requests_min: int = limits.refusal_rate_requests_min

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Thresholds:
        """From {name: integer} (TOML integers or environment text); unknown names refused."""
        names = [f.name for f in fields(cls)]
        values: dict[str, int] = {}
        for name, value in raw.items():
            if name not in names:
                raise InvalidRequest(f"unknown alert threshold {name!r}; known: {', '.join(names)}")
            text = str(value).strip()
            if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
                raise InvalidRequest(f"alert threshold {name} must be a whole number >= 0, "
                                     f"got {value!r}")
            values[name] = int(text)
            if name.endswith("_pct_max") and values[name] > 100:
                raise InvalidRequest(f"alert threshold {name} must be at most 100, got {value!r}")
        return replace(cls(), **values)


@dataclass(frozen=True)
class MonitorConfig:
    floors_minor: dict[str, int] = field(default_factory=dict)  # currency code -> minor units
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str = ""
    thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def from_env(cls, registry: CurrencyRegistry,
                 environ: Mapping[str, str] | None = None) -> MonitorConfig:
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        path = env.get("RESERVES_ALERT_CONFIG")
        if path:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        floors_raw: dict[str, Any] = dict(data.get("floors", {}))
        for part in env.get("RESERVES_ALERT_FLOORS", "").split(","):
            if part.strip():
                code, sep, amount = part.partition("=")
                if not sep:
                    raise InvalidRequest(f"RESERVES_ALERT_FLOORS: expected CODE=amount, got {part!r}")
                floors_raw[code.strip()] = amount.strip()
        floors: dict[str, int] = {}
        for code, amount in floors_raw.items():
            currency = registry.get(code)
            floors[currency.code] = to_minor(str(amount), currency.decimals, currency.code,
                                             field=f"floor of {currency.code}")
        hooks = data.get("webhooks", {})
        urls_env = env.get("RESERVES_ALERT_WEBHOOKS")
        urls = ([u.strip() for u in urls_env.split(",") if u.strip()] if urls_env is not None
                else list(hooks.get("urls", [])))
        if len(urls) > limits.webhook_urls_count_max:
            raise InvalidRequest(f"at most {limits.webhook_urls_count_max} alert webhooks")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise InvalidRequest(f"alert webhook must be an http(s) URL, got {url!r}")
        secret = env.get("RESERVES_ALERT_WEBHOOK_SECRET", str(hooks.get("secret", "")))
        thresholds_raw: dict[str, Any] = dict(data.get("thresholds", {}))
        for part in env.get("RESERVES_ALERT_THRESHOLDS", "").split(","):
            if part.strip():
                name, sep, value = part.partition("=")
                if not sep:
                    raise InvalidRequest(
                        f"RESERVES_ALERT_THRESHOLDS: expected name=value, got {part!r}")
                thresholds_raw[name.strip()] = value.strip()
        return cls(floors, tuple(urls), secret, Thresholds.parse(thresholds_raw))
