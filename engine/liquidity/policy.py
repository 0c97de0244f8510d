"""Top-up policies: per reserve, when to ask a liquidity provider for funds and how much.

A TOML file named by RESERVES_LIQUIDITY_POLICIES (example: engine/liquidity/policies.example.toml):

    [[policy]]
    currency = "USDT"
    account_type = "crypto"       # optional: the currency's own type
    utilization_pct = 75          # trigger: utilization at or above this (1-100)
    seconds_to_empty_max = 3600   # trigger: the forecast's time to empty below this
    amount = "5000"               # optional: a fixed amount (default: the forecast's
                                  # suggested top-up, back to 50 % utilization)
    daily_cap = "20000"           # at most this much requested per reserve per UTC day
    window_s = 3600               # one request per reserve per window (default 3600)

At least one trigger is required. Amounts are major units (strings or numbers, exact). A bad
file is a PolicyError naming the file and the field.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.errors import ReserveError
from engine.liquidity import limits
from engine.money import from_minor, to_minor
from engine.registry import CurrencyRegistry

FIELDS = ("currency", "account_type", "utilization_pct", "seconds_to_empty_max", "amount",
          "daily_cap", "window_s")


class PolicyError(ValueError):
    """The policies file cannot be used: the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Policy:
    account: str  # RESERVE_<CUR>_<TYPE>
    currency: str
    account_type: str
    decimals: int
    utilization_pct: int | None
    seconds_to_empty_max: int | None
    amount_minor: int | None  # None: the forecast's suggested top-up
    daily_cap_minor: int
    window_s: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "account": self.account, "currency": self.currency,
            "account_type": self.account_type, "utilization_pct": self.utilization_pct,
            "seconds_to_empty_max": self.seconds_to_empty_max,
            "amount": (None if self.amount_minor is None
                       else from_minor(self.amount_minor, self.decimals)),
            "daily_cap": from_minor(self.daily_cap_minor, self.decimals),
            "window_s": self.window_s,
        }


@dataclass(frozen=True)
class PolicySet:
    path: str | None
    by_account: Mapping[str, Policy]

    def __iter__(self) -> Iterator[Policy]:
        return iter(self.by_account.values())

    def __len__(self) -> int:
        return len(self.by_account)

    @classmethod
    def empty(cls) -> PolicySet:
        return cls(None, {})

    @classmethod
    def load(cls, path: str | Path, registry: CurrencyRegistry) -> PolicySet:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"liquidity policies {path}: cannot read: {exc.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"liquidity policies {path}: not valid TOML: {exc}") from None
        return cls.parse(data, registry, str(path))

    @classmethod
    def parse(cls, data: Mapping[str, Any], registry: CurrencyRegistry,
              path: str = "<policies>") -> PolicySet:
        unknown = set(data) - {"policy"}
        if unknown:
            raise PolicyError(f"liquidity policies {path}: unknown table {sorted(unknown)[0]!r} "
                              "(expected [[policy]] entries)")
        entries = data.get("policy", [])
        if not isinstance(entries, list):
            raise PolicyError(f"liquidity policies {path}: policy must be an array of tables "
                              "([[policy]])")
        if len(entries) > limits.policies_count_max:
            raise PolicyError(f"liquidity policies {path}: at most "
                              f"{limits.policies_count_max} policies")
        by_account: dict[str, Policy] = {}
        for i, entry in enumerate(entries):
            where = f"liquidity policies {path}: policy[{i}]"
            policy = _policy(entry, registry, where)
            if policy.account in by_account:
                raise PolicyError(f"{where}.currency: a second policy for {policy.account}")
            by_account[policy.account] = policy
        return cls(path, by_account)


def _policy(entry: Any, registry: CurrencyRegistry, where: str) -> Policy:
    if not isinstance(entry, dict):
        raise PolicyError(f"{where}: must be a table")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise PolicyError(f"{where}.{unknown[0]}: unknown field (expected one of "
                          f"{', '.join(FIELDS)})")
    code = entry.get("currency")
    if not isinstance(code, str):
        raise PolicyError(f"{where}.currency: required, a currency code")
    try:
        registry.get(code)
    except ReserveError as exc:
        raise PolicyError(f"{where}.currency: {exc.message}") from None
    try:
        currency = registry.resolve(code, entry.get("account_type"))
    except ReserveError as exc:
        raise PolicyError(f"{where}.account_type: {exc.message}") from None
    utilization = _whole(entry, "utilization_pct", 1, 100, where)
    to_empty = _whole(entry, "seconds_to_empty_max", 1, 365 * 24 * 3600, where)
    if utilization is None and to_empty is None:
        raise PolicyError(f"{where}.utilization_pct: a trigger is required "
                          "(utilization_pct and / or seconds_to_empty_max)")
    window_s = _whole(entry, "window_s", limits.trigger_window_s_min,
                      limits.trigger_window_s_max, where)
    if "daily_cap" not in entry:
        raise PolicyError(f"{where}.daily_cap: required, the most requested per UTC day")
    cap = _amount(entry, "daily_cap", currency.code, currency.decimals, where)
    amount = _amount(entry, "amount", currency.code, currency.decimals, where)
    label = f"RESERVE_{currency.code}_{currency.account_type.value.upper()}"
    assert cap is not None
    return Policy(label, currency.code, currency.account_type.value, currency.decimals,
                  utilization, to_empty, amount, cap,
                  window_s if window_s is not None else limits.trigger_window_s_default)


def _whole(entry: dict[str, Any], name: str, low: int, high: int, where: str) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PolicyError(f"{where}.{name}: must be a whole number from {low} to {high}, "
                          f"got {value!r}")
    return value


def _amount(entry: dict[str, Any], name: str, code: str, decimals: int,
            where: str) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PolicyError(f"{where}.{name}: must be an amount, got {value!r}")
    # a TOML float is read by its shortest text (0.1 is 0.1), as the facade reads floats
    text = repr(value) if isinstance(value, float) else str(value)
    try:
        return to_minor(Decimal(text) if isinstance(value, float) else text, decimals, code,
                        field=name)
    except ReserveError as exc:
        raise PolicyError(f"{where}.{name}: {exc.message}") from None
