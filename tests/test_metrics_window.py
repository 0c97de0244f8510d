"""The HTTP layer's request window (api/metrics.py), which feeds the monitor's error-rate,
refusal-rate and p99 alerts: p99 from a bucketed histogram, never below the exact (nearest-rank)
one and at most one bucket (5 %) above it; seconds leave the window on time; its state does not
grow with the traffic; refusals are 409s of the money routes."""

from __future__ import annotations

import random

from api.metrics import LATENCY_BUCKET_MAX_S, LATENCY_BUCKET_RATIO, MONEY_ROUTES, Window


class Clock:
    def __init__(self, now_s: float = 1_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def _exact_p99_ms(durations_s: list[float]) -> float:
    """The nearest-rank 99th percentile: the ceil(0.99 n)-th smallest."""
    ordered = sorted(durations_s)
    return ordered[(len(ordered) * 99 + 99) // 100 - 1] * 1000


def test_p99_is_the_bucket_of_the_exact_one() -> None:
    rng = random.Random(7)
    for scale_s in (0.0005, 0.004, 0.2):
        window = Window(clock=Clock())
        durations = [rng.expovariate(1 / scale_s) for _ in range(20_000)]
        for d in durations:
            window.add(d, False)
        requests, failures, p99_ms = window.snapshot()
        exact_ms = _exact_p99_ms(durations)
        assert (requests, failures) == (20_000, 0)
        assert p99_ms is not None
        # int() of the bucket's upper bound in ms: not below the exact one's whole ms, nor above
        # the next bucket's bound
        assert int(exact_ms) <= p99_ms <= exact_ms * LATENCY_BUCKET_RATIO + 1


def test_a_few_slow_requests_move_p99_only_past_one_percent() -> None:
    window = Window(clock=Clock())
    for _ in range(991):
        window.add(0.001, False)
    for _ in range(9):
        window.add(2.0, True)
    assert window.snapshot()[2] <= 2  # under 1 % slow: the 99th percentile is a fast one
    for _ in range(2):
        window.add(2.0, True)
    requests, failures, p99_ms = window.snapshot()
    assert (requests, failures) == (1_002, 11)
    assert 2_000 <= p99_ms <= 2_100


def test_seconds_leave_the_window_on_time() -> None:
    clock = Clock(500.2)
    window = Window(window_s=60, clock=clock)
    window.add(0.5, True)
    clock.now_s = 530.0
    window.add(0.001, False)
    clock.now_s = 559.9  # the first second (500) is still inside
    assert window.snapshot()[:2] == (2, 1)
    clock.now_s = 560.0
    assert window.snapshot()[:2] == (1, 0)
    clock.now_s = 589.99
    assert window.snapshot()[:2] == (1, 0)
    clock.now_s = 590.0
    assert window.snapshot() == (0, 0, None)


def test_a_long_quiet_spell_empties_it_and_it_fills_again() -> None:
    clock = Clock()
    window = Window(window_s=20, clock=clock)
    for i in range(100):
        clock.now_s += 0.1
        window.add(0.002 * (i % 5 + 1), i % 10 == 0)
    assert window.snapshot()[:2] == (100, 10)
    clock.now_s += 3_600
    assert window.snapshot() == (0, 0, None)
    window.add(0.003, False)
    assert window.snapshot() == (1, 0, 3)


def test_slower_than_the_last_bucket_still_counts() -> None:
    window = Window(clock=Clock())
    window.add(LATENCY_BUCKET_MAX_S * 10, True)
    requests, failures, p99_ms = window.snapshot()
    assert (requests, failures) == (1, 1)
    assert p99_ms >= LATENCY_BUCKET_MAX_S * 1000


def test_state_does_not_grow_with_traffic() -> None:
    clock = Clock()
    window = Window(window_s=5, clock=clock)
    sizes = []
    for _ in range(3):
        for _ in range(5_000):
            clock.now_s += 0.001
            window.add(0.001, False)
        sizes.append((len(window._slot_counts), sum(map(len, window._slot_counts))))
    assert sizes[0] == sizes[1] == sizes[2]
    assert window.snapshot()[0] == 5_000  # the last 5 s of 15 s at 1,000 requests/s


def test_one_slow_request_of_a_hundred_is_not_the_p99() -> None:
    # nearest rank: the 99th of 100 sorted requests, not the slowest
    window = Window(clock=Clock())
    for _ in range(99):
        window.add(0.001, False)
    window.add(5.0, False)
    assert window.snapshot() == (100, 0, 1)
    window.add(5.0, False)  # 2 of 101: the 100th is slow
    requests, _, p99_ms = window.snapshot()
    assert requests == 101
    assert p99_ms is not None and 5_000 <= p99_ms <= 5_250


def test_refusals_are_409s_of_money_routes_and_never_errors() -> None:
    clock = Clock(700.0)
    window = Window(window_s=60, clock=clock)
    window.add_response(0.001, 200, "reserve")
    window.add_response(0.001, 409, "reserve")  # insufficient reserve: a refusal
    window.add_response(0.001, 409, "commit_hold")  # hold already ended: a refusal
    window.add_response(0.001, 400, "reserve")  # bad input: a money request, no refusal
    window.add_response(0.001, 503, "top_up")  # an error, not a refusal
    window.add_response(0.001, 409, "reserves_status")  # not a money route: not counted
    window.add_response(0.001, 200, "balances")
    assert window.refusals() == (5, 2)
    assert window.snapshot()[:2] == (7, 1)  # 409s are not 5xx errors
    clock.now_s = 730.0
    window.add_response(0.001, 409, "create_swap")
    clock.now_s = 760.0  # the first second left the window
    assert window.refusals() == (1, 1)
    clock.now_s = 790.0
    assert window.refusals() == (0, 0)


def test_money_routes_are_routes_of_the_app() -> None:
    from api.app import create_app

    names = {getattr(getattr(r, "endpoint", None), "__name__", "") for r in create_app().routes}
    assert names >= MONEY_ROUTES
