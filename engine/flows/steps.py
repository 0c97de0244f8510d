"""Idempotent steps shared by the flows, each one engine operation keyed by its reference."""

from __future__ import annotations

from typing import Any

from engine.engine import ReserveEngine
from engine.errors import HoldAlreadyEnded, HoldNotFound, InsufficientReserve
from engine.money import json_number
from engine.ops import AccountSpec
from engine.references import InternalReference
from engine.types import Balance


async def commit_hold(engine: ReserveEngine, ref: str, amount_minor: int,
                      meta: dict[str, Any]) -> bool:
    """Commit the whole hold. True: committed (now or before); False: it was released/expired."""
    try:
        await engine.run(engine.ops.commit(ref, amount_minor, meta))
    except HoldAlreadyEnded as err:
        if err.details.get("state") == "committed":
            raise  # committed with another amount: a reference reused, never by the flows
        return False
    return True


async def undo_hold(engine: ReserveEngine, ref: str, refund: AccountSpec, refund_ref: str,
                    meta: dict[str, Any]) -> None:
    """Release a pending hold; a committed one is paid back to refund (top-up on refund_ref)."""
    try:
        await engine.run(engine.ops.release(ref, meta))
        return
    except HoldNotFound:
        return  # never held: nothing to undo
    except HoldAlreadyEnded as err:
        if err.details.get("state") != "committed":
            raise
    hold = await engine.run(engine.ops.get_hold(ref))
    await engine.run(engine.ops.top_up(refund, hold.committed_minor, refund_ref, meta))


async def hold_view(engine: ReserveEngine, ref: InternalReference) -> dict[str, Any]:
    """A flow's leg: its hold (or state "none"), with the leg's role in the flow."""
    try:
        view = (await engine.run(engine.ops.get_hold(ref))).to_dict()
    except HoldNotFound:
        view = {"reference_id": ref, "state": "none"}
    return {**view, "role": ref.leg}


def insufficient_reserve(balance: Balance, required_minor: int, leg: str) -> InsufficientReserve:
    """The seed's 409 body for a reserve that cannot cover a leg."""
    status = balance.sufficiency(required_minor)
    return InsufficientReserve(
        f"Insufficient reserve balance. Required: {json_number(status['required_amount'])}, "
        f"Available: {json_number(status['available_amount'])}",
        code="exceeds_available", reserve_status=status, leg=leg,
    )


def insufficient_funds(balance: Balance, required_minor: int) -> Exception:
    from engine.flows.errors import InsufficientFunds

    return InsufficientFunds(
        f"Insufficient funds. Required: {json_number(balance.major(required_minor))}, "
        f"Available: {json_number(balance.major(balance.available_minor))}",
        code="insufficient_funds",
        required_amount=balance.major(required_minor),
        available_amount=balance.major(balance.available_minor),
    )
