from decimal import Decimal

from engine.engine import ReserveEngine
from engine.service import ReserveService


def test_service_round_trip(backend):
    service = ReserveService(backend["sync"], backend["settings"])
    service.top_up_reserve("USDT", Decimal("100"), "crypto", "seed")
    result = service.reserve_amount("USDT", Decimal("40"), "crypto", "h1", "swap")
    assert result["locked_balance"] == Decimal("40")
    assert service.get_reserve_balance("USDT", "crypto")["available_balance"] == Decimal("60")


async def test_async_engine(backend, async_redis):
    engine = ReserveEngine(async_redis, backend["settings"])
    await engine.top_up_reserve("UGX", "1000", "fiat", "seed")
    hold = await engine.reserve_amount("UGX", "10", "fiat", "h1", "swap")
    assert hold.balance.locked_minor == 10
