"""The currency registry: which currencies exist, their account type and decimal places."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path

from engine.errors import UnknownCurrency


class AccountType(StrEnum):
    crypto = "crypto"
    fiat = "fiat"


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    account_type: AccountType
    decimals: int
    name: str = ""


class CurrencyRegistry:
    def __init__(self, currencies: dict[str, Currency]) -> None:
        assert currencies, "a registry needs at least one currency"
        self._currencies = dict(currencies)

    @classmethod
    def load(cls, path: str | Path | None = None) -> CurrencyRegistry:
        if path:
            text = Path(path).read_text(encoding="utf-8")
        else:
            text = resources.files("engine").joinpath("currencies.toml").read_text(encoding="utf-8")
        data = tomllib.loads(text)
        currencies: dict[str, Currency] = {}
        for code, entry in data.get("currencies", {}).items():
            code_upper = code.upper()
            decimals = int(entry["decimals"])
            if not 0 <= decimals <= 18:
                raise ValueError(f"currency {code}: decimals must be 0..18, got {decimals}")
            currencies[code_upper] = Currency(
                code=code_upper,
                account_type=AccountType(entry["account_type"]),
                decimals=decimals,
                name=str(entry.get("name", "")),
            )
        return cls(currencies)

    def get(self, code: str) -> Currency:
        currency = self._currencies.get(str(code).upper())
        if currency is None:
            raise UnknownCurrency(f"Unknown currency: {code}", code="unknown_currency")
        return currency

    def resolve(self, code: str, account_type: str | AccountType | None) -> Currency:
        """The currency, checked against the account type the caller named."""
        currency = self.get(code)
        if account_type is None:
            return currency
        try:
            kind = AccountType(str(account_type).lower())
        except ValueError:
            raise UnknownCurrency(
                f"Unknown account type: {account_type} (expected crypto or fiat)",
                code="unknown_account_type",
            ) from None
        if kind is not currency.account_type:
            raise UnknownCurrency(
                f"{currency.code} is a {currency.account_type.value} currency, not {kind.value}",
                code="account_type_mismatch",
            )
        return currency

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._currencies.values())

    def __len__(self) -> int:
        return len(self._currencies)
