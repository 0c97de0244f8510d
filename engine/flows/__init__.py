"""Wallet flows on the engine: user wallets, quotes, swaps, mobile-money buys and sells.

Every flow is a small state machine whose steps are idempotent engine operations with references
derived from the flow's reference_id; its progress is recorded in a Redis hash so that a re-run
(a duplicate request, a callback, `recover()`) finishes or undoes a half-done flow.
"""
