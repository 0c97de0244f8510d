"""Automated and emergency top-ups: per-reserve policies, a liquidity provider interface with a
simulator, and the manager that triggers, sends, retries, flags and confirms requests."""
