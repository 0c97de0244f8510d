"""reserves: a Redis-native reservation engine for wallet liquidity reserves.

The data path: api -> engine -> lua (inside Redis) -> journal stream -> persistence -> Postgres.
"""

__version__ = "0.1.0"
