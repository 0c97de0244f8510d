"""The currency registry: shipped defaults, account-type checks, override by path."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import fakeredis
import pytest

from engine.config import Settings
from engine.errors import UnknownCurrency
from engine.registry import AccountType, CurrencyRegistry
from engine.service import ReserveService

DEFAULTS = {
    "USDT": ("crypto", 6), "USDC": ("crypto", 6), "BTC": ("crypto", 8), "ETH": ("crypto", 8),
    "UGX": ("fiat", 0), "KES": ("fiat", 2), "USD": ("fiat", 2), "EUR": ("fiat", 2),
    "NGN": ("fiat", 2),
}


def test_default_currencies() -> None:
    registry = CurrencyRegistry.load()
    found = {c.code: (c.account_type.value, c.decimals) for c in registry}
    assert found == DEFAULTS
    assert len(registry) == len(DEFAULTS)


def test_lookup_is_case_insensitive() -> None:
    registry = CurrencyRegistry.load()
    assert registry.get("usdt").code == "USDT"
    assert registry.resolve("ugx", "FIAT").account_type is AccountType.fiat
    assert registry.resolve("BTC", None).decimals == 8


@pytest.mark.parametrize(("code", "account_type", "message", "error_code"), [
    ("XYZ", "crypto", "Unknown currency: XYZ", "unknown_currency"),
    ("", None, "Unknown currency: ", "unknown_currency"),
    ("USDT", "fiat", "USDT is a crypto currency, not fiat", "account_type_mismatch"),
    ("UGX", "crypto", "UGX is a fiat currency, not crypto", "account_type_mismatch"),
    ("USDT", "savings", "Unknown account type: savings (expected crypto or fiat)",
     "unknown_account_type"),
])
def test_resolve_errors(code: str, account_type: str | None, message: str,
                        error_code: str) -> None:
    registry = CurrencyRegistry.load()
    with pytest.raises(UnknownCurrency) as info:
        registry.resolve(code, account_type)
    assert info.value.message == message
    assert info.value.details["code"] == error_code
    assert info.value.status_code == 404
    assert info.value.to_dict() == {"success": False, "error": message, "code": error_code}


def test_override_by_path(tmp_path: Path) -> None:
    path = tmp_path / "currencies.toml"
    path.write_text('[currencies.xaf]\naccount_type = "fiat"\ndecimals = 0\nname = "CFA franc"\n'
                    '[currencies.SOL]\naccount_type = "crypto"\ndecimals = 9\n')
    registry = CurrencyRegistry.load(path)
    assert {c.code: (c.account_type.value, c.decimals, c.name) for c in registry} == {
        "XAF": ("fiat", 0, "CFA franc"), "SOL": ("crypto", 9, "")}
    with pytest.raises(UnknownCurrency, match="Unknown currency: USDT"):
        registry.get("USDT")


def test_service_uses_the_registry_named_in_settings(tmp_path: Path) -> None:
    path = tmp_path / "currencies.toml"
    path.write_text('[currencies.SOL]\naccount_type = "crypto"\ndecimals = 9\n')
    settings = replace(Settings(), currencies_path=str(path), key_prefix="reg")
    service = ReserveService(fakeredis.FakeRedis(decode_responses=True), settings)
    result = service.top_up_reserve("SOL", "0.000000001", "crypto", "seed")
    assert result["new_total_balance"] == Decimal("0.000000001")
    assert service.get_reserve_account("SOL", "crypto")["account_number"] == "RSOLc0001"
    with pytest.raises(UnknownCurrency, match="Unknown currency: USDT"):
        service.get_reserve_balance("USDT", "crypto")


def test_from_env_reads_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESERVES_CURRENCIES", "/etc/reserves/currencies.toml")
    monkeypatch.delenv("RESERVES_REDIS_URL", raising=False)
    assert Settings.from_env().currencies_path == "/etc/reserves/currencies.toml"


@pytest.mark.parametrize(("body", "message"), [
    ('[currencies.X]\naccount_type = "fiat"\ndecimals = 19\n',
     "currency X: decimals must be 0..18, got 19"),
    ('[currencies.X]\naccount_type = "fiat"\ndecimals = -1\n',
     "currency X: decimals must be 0..18, got -1"),
    ('[currencies.X]\naccount_type = "stock"\ndecimals = 2\n',
     "'stock' is not a valid AccountType"),
])
def test_bad_registry_file_is_refused(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "currencies.toml"
    path.write_text(body)
    with pytest.raises(ValueError) as info:
        CurrencyRegistry.load(path)
    assert str(info.value) == message


def test_empty_registry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "currencies.toml"
    path.write_text("# nothing\n")
    with pytest.raises(AssertionError, match="a registry needs at least one currency"):
        CurrencyRegistry.load(path)
