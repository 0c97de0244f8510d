"""User wallets: accounts USER_<user_id>_<CUR> in the same engine, credited by a service."""

from __future__ import annotations

from typing import Any

from engine.commands import Batch, Call
from engine.engine import ReserveEngine
from engine.money import to_minor
from engine.ops import check_reference


class Users:
    def __init__(self, engine: ReserveEngine) -> None:
        self.engine = engine

    async def deposit(self, user_id: Any, currency: Any, amount: Any, reference_id: Any,
                      audit: dict[str, Any] | None = None) -> dict[str, Any]:
        """audit: who asked, from where (api.endpoint.audit_meta), kept in the event's meta."""
        check_reference(reference_id)
        if not isinstance(currency, str):
            raise_invalid("currency is required")
        spec = self.engine.ops.user_spec(user_id, currency)
        amount_minor = to_minor(amount, spec.currency.decimals, spec.currency.code)
        result = await self.engine.run(self.engine.ops.top_up(
            spec, amount_minor, reference_id, {"flow": "deposit", **(audit or {})}))
        balance = result.balance
        return {
            "success": True,
            "user_id": user_id,
            "currency": spec.currency.code,
            "deposited_amount": balance.major(result.amount_minor),
            "new_total_balance": balance.major(balance.total_minor),
            "available_balance": balance.major(balance.available_minor),
            "transaction_id": result.transaction_id,
            "applied": result.applied,
        }

    async def balances(self, user_id: Any) -> dict[str, Any]:
        """The user's existing wallets (looking does not open the others)."""
        ops = self.engine.ops
        specs = [ops.user_spec(user_id, c.code) for c in self.engine.registry]
        exists = await self.engine.run(_exists([ops.keys.account(s.label).acct for s in specs]))
        held = [s for s, found in zip(specs, exists, strict=True) if found]
        balances = await self.engine.run(ops.balances(held)) if held else []
        return {
            "success": True,
            "user_id": user_id,
            "balances": {
                b.account.currency.code: {
                    "currency": b.account.currency.code,
                    "account_type": b.account.currency.account_type.value,
                    "total_balance": b.major(b.total_minor),
                    "available_balance": b.major(b.available_minor),
                    "locked_balance": b.major(b.locked_minor),
                    "account_number": b.account.account_number,
                }
                for b in balances
            },
        }


def _exists(keys: list[str]):  # type: ignore[no-untyped-def]
    return (yield Batch(tuple(Call("exists", (k,)) for k in keys)))


def raise_invalid(message: str) -> None:
    from engine.errors import InvalidRequest

    raise InvalidRequest(message)
