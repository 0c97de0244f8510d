"""What a benchmark run needs, checked before its first cell: the load generators and servers of
the chosen scenarios, the `bench` extra's packages, and Redis and Postgres answering. Whatever
is missing is named at once, with the command that installs it, instead of a scenario failing
or being skipped minutes into the run."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import limit
from benchmarks.plan import Plan

# The Debian package of each executable the scenarios start.
TOOLS = {"redis-benchmark": "redis-tools", "redis-cli": "redis-tools",
         "redis-server": "redis-server", "wrk": "wrk"}
SCENARIO_TOOLS = {"limit": ("redis-benchmark",), "paired": ("redis-benchmark",),
                  "http": ("wrk",), "cluster": ("redis-server", "redis-cli")}
OWN_REDIS_TOOLS = ("redis-server", "redis-cli")
POSTGRES_SCENARIOS = ("baseline", "persister")
# The `bench` extra: the event loop the figures are measured on, and the latency plot.
PACKAGES = ("uvloop", "matplotlib")
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Missing:
    problem: str
    fix: str
    scenarios: tuple[str, ...] = ()  # the scenarios that need it; () for the whole run


class MissingPrerequisites(RuntimeError):
    def __init__(self, missing: list[Missing], plan: Plan) -> None:
        self.missing = missing
        lines = ["cannot start the benchmark run:"]
        for m in missing:
            needed = f" (for {', '.join(m.scenarios)})" if m.scenarios else ""
            lines.append(f"- {m.problem}{needed}: {m.fix}")
        if all(m.scenarios for m in missing):
            blocked = {s for m in missing for s in m.scenarios}
            rest = [s for s in plan.scenarios if s not in blocked]
            if rest:
                lines.append("or run only the others: --scenarios " + " ".join(rest))
        super().__init__("\n".join(lines))


def _install_extra() -> str:
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").exists():  # a checkout
        return f'{sys.executable} -m pip install -e "{root}[bench]"'
    return f'{sys.executable} -m pip install "reserves[bench]"'


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def missing(plan: Plan, redis_url: str, database_url: str,
            use_own_redis: bool = False) -> list[Missing]:
    out: list[Missing] = []
    needed: dict[str, list[str]] = {}
    for scenario in plan.scenarios:
        for tool in SCENARIO_TOOLS.get(scenario, ()):
            needed.setdefault(tool, []).append(scenario)
    for tool in OWN_REDIS_TOOLS if use_own_redis else ():
        needed.setdefault(tool, [])
    for tool, scenarios in needed.items():
        if shutil.which(tool) is None:
            whole_run = use_own_redis and tool in OWN_REDIS_TOOLS
            out.append(Missing(f"{tool} is not installed", f"apt-get install -y {TOOLS[tool]}",
                               () if whole_run else tuple(scenarios)))
    packages = [p for p in PACKAGES if plan.bench_extra and importlib.util.find_spec(p) is None]
    if "engine" in plan.scenarios and plan.profile_s > 0 and py_spy() is None:
        packages.append("py-spy")
    if packages:
        out.append(Missing(f"the bench extra is not installed ({', '.join(packages)} missing)",
                           _install_extra()))
    ceiling = tuple(s for s in ("limit", "paired") if s in plan.scenarios)
    if ceiling and not use_own_redis:
        try:
            limit.connection_args(redis_url)
        except limit.UnsupportedURL as exc:
            out.append(Missing(str(exc), "use a URL redis-benchmark can be given "
                               "(host, port, db, user and password, TLS files)", ceiling))
    if not use_own_redis:
        problem = _redis_problem(redis_url)
        if problem:
            out.append(Missing(problem, "start it, or set RESERVES_REDIS_URL (or use --own-redis)"))
    postgres = tuple(s for s in POSTGRES_SCENARIOS if s in plan.scenarios)
    if postgres:
        problem = _postgres_problem(database_url)
        if problem:
            out.append(Missing(problem, "start Postgres, or set RESERVES_DATABASE_URL to a "
                               "postgresql+psycopg:// URL that answers", postgres))
    return out


def check(plan: Plan, redis_url: str, database_url: str, use_own_redis: bool = False) -> None:
    found = missing(plan, redis_url, database_url, use_own_redis)
    if found:
        raise MissingPrerequisites(found, plan)


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and RESULTS.md."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _redis_problem(url: str) -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                      socket_timeout=CONNECT_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any error (a bad URL option is a TypeError): reported
        return f"Redis at {safe_url(url)} does not answer ({type(exc).__name__}: {exc})"
    return None


def _postgres_problem(url: str) -> str | None:
    if not url.startswith("postgresql"):
        return f"the database URL is not Postgres ({safe_url(url)})"
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # any driver's error: reported, the run does not start
        return f"Postgres at {safe_url(url)} does not answer ({type(exc).__name__})"
    return None
