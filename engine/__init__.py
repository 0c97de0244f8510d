"""reserves: a Redis-native reservation engine for wallet liquidity reserves.

The data path: api -> engine -> lua (inside Redis) -> journal stream -> persistence -> Postgres.
"""

__version__ = "0.1.0"

# Every `reserves` command's log lines (engine/cli.py; `reserves serve` hands it to uvicorn too).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
