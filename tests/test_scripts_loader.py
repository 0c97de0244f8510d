"""The Lua script registry: every script has its contract header, includes are inlined, and a
script flushed from Redis is loaded again on NOSCRIPT, alone and inside a pipeline."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import Any

import pytest

from engine.commands import Batch, Call, Op, Script
from engine.drivers import AsyncDriver
from engine.errors import ResultCode
from engine.scripts import SOURCES, load_sources
from tests.engine_helpers import make_service

LUA = resources.files("lua")
SCRIPT_NAMES = sorted(e.name.removesuffix(".lua") for e in LUA.iterdir() if e.name.endswith(".lua"))


def header(name: str) -> str:
    text = LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    assert text.startswith("--[["), f"{name}.lua must open with its contract header"
    return text[:text.index("]]")]


def test_every_script_is_registered() -> None:
    assert {"commit", "expire", "open_account", "release", "reserve", "reserve_many", "top_up",
            "withdraw"} <= set(SCRIPT_NAMES)
    assert sorted(SOURCES) == SCRIPT_NAMES
    assert load_sources() == SOURCES  # loading is deterministic


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_header_lists_keys_argv_and_return_codes(name: str) -> None:
    head = header(name)
    assert re.search(r"^KEYS\[", head, re.MULTILINE), f"{name}: no KEYS in the header"
    assert re.search(r"^ARGV\[", head, re.MULTILINE), f"{name}: no ARGV in the header"
    assert "Returns" in head
    returns = head[head.index("Returns"):]
    codes = re.findall(r"^\s+(\d+) (\w+)", returns, re.MULTILINE)
    assert codes, f"{name}: no return codes listed"
    for number, code_name in codes:  # the header and ResultCode agree
        assert ResultCode(int(number)).name == code_name, (name, number, code_name)


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_key_and_argument_used_is_in_the_header(name: str) -> None:
    text = LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    head, body = header(name), text[len(header(name)):]
    listed_keys = _listed(head, "KEYS")
    listed_argv = _listed(head, "ARGV")
    for index in {int(i) for i in re.findall(r"KEYS\[(\d+)\]", body)}:
        assert index in listed_keys, f"{name}.lua uses KEYS[{index}] without listing it"
    for index in {int(i) for i in re.findall(r"ARGV\[(\d+)\]", body)}:
        assert index in listed_argv, f"{name}.lua uses ARGV[{index}] without listing it"


def _listed(head: str, name: str) -> set[int]:
    """Indices the header lists: KEYS[3] or a range KEYS[1..8]."""
    found: set[int] = set()
    for first, last in re.findall(rf"^{name}\[(\d+)(?:\.\.(\d+))?\]", head, re.MULTILINE):
        found.update(range(int(first), int(last or first) + 1))
    return found


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_includes_are_inlined(name: str) -> None:
    script = SOURCES[name]
    assert "@include" not in script.source
    assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()
    assert "local rcall = redis.call" in script.source
    assert "INCRBYFLOAT" not in script.source.upper()


def test_lib_helpers_have_headers() -> None:
    for entry in LUA.joinpath("lib").iterdir():
        if entry.name.endswith(".lua"):
            assert entry.read_text(encoding="utf-8").startswith("--"), entry.name


def test_a_call_after_script_flush_loads_the_script_again(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    service.top_up_reserve("UGX", "100", "fiat", "seed")
    backend["sync"].script_flush()
    assert backend["sync"].script_exists(SOURCES["reserve"].sha) == [False]
    assert service.reserve_amount("UGX", "10", "fiat", "h1", "swap")["locked_balance"] == 10
    assert backend["sync"].script_exists(SOURCES["reserve"].sha) == [True]


def _expire_and_balance(service: Any) -> Op[list[Any]]:
    k = service.ops.keys.account("RESERVE_UGX_FIAT")
    replies = yield Batch((
        Script("expire", k.script_keys(),
               [service.ops.clock_ms(), 1, 1, k.label, 60_000, 10, 10]),
        Call("hmget", (k.acct, "total", "locked")),
        Script("expire", k.script_keys(),
               [service.ops.clock_ms(), 1, 1, k.label, 60_000, 10, 10]),
    ))
    return list(replies)


def test_a_pipeline_after_script_flush_loads_the_script_again(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    service.top_up_reserve("UGX", "100", "fiat", "seed")
    backend["sync"].script_flush()
    replies = service.run(_expire_and_balance(service))
    assert replies == [[0, 0, 0, 0], ["100", "0"], [0, 0, 0, 0]]


async def test_async_pipeline_after_script_flush(backend: dict[str, Any],
                                                 async_redis: Any) -> None:
    service = make_service(backend)
    service.top_up_reserve("UGX", "100", "fiat", "seed")
    driver = AsyncDriver(async_redis)
    assert (await driver.run(_expire_and_balance(service)))[1] == ["100", "0"]
    backend["sync"].script_flush()
    assert await driver.run(_expire_and_balance(service)) == [
        [0, 0, 0, 0], ["100", "0"], [0, 0, 0, 0]]
    backend["sync"].script_flush()
    # "nope" as the shard's event counter: missing, so the shard is not loaded
    reply = await driver.execute(Script("expire", ["nope"] * 7, [1, 1, 1, "X", 1, 1, 1]))
    assert reply == [ResultCode.ledger_not_loaded, 0, 0, 0]
