"""`RESERVES_GC_FREEZE`: the app built by `reserves serve` freezes its start-up heap out of the
garbage collector's walks; an app built inside another program (or a test) leaves the
process's collector alone unless asked."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import replace

import fakeredis
import pytest

from api.app import create_app
from api.context import ApiConfig
from engine.config import Settings
from engine.engine import ReserveEngine


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # what a test froze goes back to the collector


@pytest.mark.parametrize(("value", "wanted"), [(None, False), ("0", False), ("1", True),
                                               ("true", True)])
def test_the_switch_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                               wanted: bool) -> None:
    if value is None:
        monkeypatch.delenv("RESERVES_GC_FREEZE", raising=False)
    else:
        monkeypatch.setenv("RESERVES_GC_FREEZE", value)
    assert ApiConfig.from_env(Settings()).gc_freeze is wanted


@pytest.mark.parametrize("freeze", [False, True])
async def test_start_up_freezes_only_when_asked(unfrozen: None, freeze: bool) -> None:
    settings = replace(Settings(), key_prefix="gcfreeze", database_url="sqlite://")
    engine = ReserveEngine(fakeredis.FakeAsyncRedis(decode_responses=True), settings)
    app = create_app(settings, engine=engine,
                     config=ApiConfig(background_tasks=False, gc_freeze=freeze))
    try:
        assert gc.get_freeze_count() == 0
        async with app.router.lifespan_context(app):
            frozen_count = gc.get_freeze_count()
        if freeze:
            assert frozen_count > 1_000  # modules, app and engine: thousands of objects
        else:
            assert frozen_count == 0
    finally:
        await engine.close()
