"""The Lua script registry: built from the lua/ folder, one script per command.

A script may pull shared helpers from lua/lib/ with a line `-- @include name`. Each script is
registered once per client through redis-py's Script objects, which run EVALSHA and re-load the
script on NOSCRIPT (in pipelines too, where redis-py loads missing scripts before executing).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

_INCLUDE = re.compile(r"^-- @include (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    sha: str


def _read(folder: Any, name: str) -> str:
    return folder.joinpath(name).read_text(encoding="utf-8")


def load_sources() -> dict[str, LuaScript]:
    root = resources.files("lua")
    lib = root.joinpath("lib")
    scripts: dict[str, LuaScript] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".lua"):
            continue
        name = entry.name.removesuffix(".lua")
        text = entry.read_text(encoding="utf-8")

        def inline(match: re.Match[str]) -> str:
            return _read(lib, f"{match.group(1)}.lua")

        source = _INCLUDE.sub(inline, text)
        assert "@include" not in _INCLUDE.sub("", source), f"nested include in {name}"
        sha = hashlib.sha1(source.encode()).hexdigest()
        scripts[name] = LuaScript(name=name, source=source, sha=sha)
    return scripts


SOURCES = load_sources()


class ScriptRegistry:
    """The registered Script objects of one client (sync, asyncio or cluster)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._scripts = {name: client.register_script(s.source) for name, s in SOURCES.items()}

    def __getitem__(self, name: str) -> Any:
        return self._scripts[name]
