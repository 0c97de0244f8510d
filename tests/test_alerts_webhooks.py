"""Alert webhooks against a real local HTTP receiver: signature, retries with backoff (the
backoff sleeps are recorded, not slept), bounded attempts, a bounded queue that never blocks."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine.engine import ReserveEngine
from engine.monitoring.config import MonitorConfig
from engine.monitoring.monitor import Monitor
from engine.monitoring.webhooks import SIGNATURE_HEADER, WebhookSender, backoff_s, sign, verify

SECRET = "s3cret"


class Receiver:
    """Answers `fail_status` to the first `fail_count` requests, then 200."""

    def __init__(self, fail_count: int, fail_status: int = 500) -> None:
        self.fail_count = fail_count
        self.fail_status = fail_status
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append((body, dict(self.headers)))
                    failing = len(receiver.requests) <= receiver.fail_count
                self.send_response(receiver.fail_status if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    started: list[Receiver] = []

    def make(fail_count: int, fail_status: int = 500) -> Receiver:
        started.append(Receiver(fail_count, fail_status))
        return started[-1]

    yield make
    for r in started:
        r.close()


def _sender(urls: list[str], sleeps: list[float], **kwargs: Any) -> WebhookSender:
    async def record_sleep(delay_s: float) -> None:
        sleeps.append(delay_s)

    return WebhookSender(urls, SECRET, sleep=record_sleep, backoff_s_base=0.5,
                         backoff_s_max=30.0, **kwargs)


def test_signature_and_backoff() -> None:
    body = b'{"a":1}'
    # the RFC 4231-style check: the digest of the body under the secret, as hex
    assert sign(SECRET, body) == ("sha256=" +
                                  hmac.new(b"s3cret", body, hashlib.sha256).hexdigest())
    assert verify(SECRET, body, sign(SECRET, body))
    assert not verify(SECRET, body + b" ", sign(SECRET, body))
    assert not verify("other", body, sign(SECRET, body))
    assert [backoff_s(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_retries_until_delivered(receiver_factory: Any) -> None:
    receiver = receiver_factory(fail_count=3)
    sleeps: list[float] = []
    sender = _sender([receiver.url], sleeps)
    sender.start()
    sender.submit({"type": "alert_raised", "key": "RESERVE_USDT_CRYPTO|utilization"})
    await sender.join()
    await sender.stop()
    assert len(receiver.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert (sender.delivered_count, sender.failed_count) == (1, 0)
    bodies = {body for body, _ in receiver.requests}
    assert len(bodies) == 1  # every attempt sends the same signed body
    for body, headers in receiver.requests:
        assert verify(SECRET, body, headers[SIGNATURE_HEADER])
        assert headers["Content-Type"] == "application/json"
    assert json.loads(receiver.requests[0][0]) == {
        "type": "alert_raised", "key": "RESERVE_USDT_CRYPTO|utilization"}


async def test_attempts_are_bounded(receiver_factory: Any) -> None:
    receiver = receiver_factory(fail_count=100)
    sleeps: list[float] = []
    sender = _sender([receiver.url], sleeps, attempts_max=4)
    sender.start()
    sender.submit({"n": 1})
    await sender.join()
    await sender.stop()
    assert len(receiver.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]  # no sleep after the last attempt
    assert (sender.delivered_count, sender.failed_count) == (0, 1)


async def test_a_client_error_is_not_retried(receiver_factory: Any) -> None:
    receiver = receiver_factory(fail_count=100, fail_status=400)
    sleeps: list[float] = []
    sender = _sender([receiver.url], sleeps)
    sender.start()
    sender.submit({"n": 1})
    await sender.join()
    await sender.stop()
    assert len(receiver.requests) == 1
    assert sleeps == []
    assert sender.failed_count == 1


async def test_unreachable_url_is_retried_then_given_up(receiver_factory: Any) -> None:
    from tests.services import free_port

    sleeps: list[float] = []
    sender = _sender([f"http://127.0.0.1:{free_port()}/nobody"], sleeps, attempts_max=3)
    sender.start()
    sender.submit({"n": 1})
    await sender.join()
    await sender.stop()
    assert sleeps == [0.5, 1.0]
    assert sender.failed_count == 1


async def test_full_queue_drops_instead_of_blocking() -> None:
    sender = _sender(["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"], [], queue_count_max=2)
    sender.submit({"n": 1})  # one delivery per URL
    sender.submit({"n": 2})
    sender.submit({"n": 3})  # both queues are full: dropped for each URL
    assert sender.queued_count() == 4
    assert sender.dropped_count == 2


async def test_one_receiver_gets_its_payloads_in_order_through_retries(
        receiver_factory: Any) -> None:
    receiver = receiver_factory(fail_count=2)
    sleeps: list[float] = []
    sender = _sender([receiver.url], sleeps)
    sender.start()
    for n in (1, 2, 3):
        sender.submit({"n": n})
    await sender.join()
    await sender.stop()
    # the first payload is retried twice before the second is tried at all
    assert [json.loads(body)["n"] for body, _ in receiver.requests] == [1, 1, 1, 2, 3]
    assert sleeps == [0.5, 1.0]


async def test_monitor_delivers_raised_and_cleared_alerts(backend: dict[str, Any],
                                                          receiver_factory: Any) -> None:
    receiver = receiver_factory(fail_count=1)
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"])
    sleeps: list[float] = []
    config = MonitorConfig(webhook_urls=(receiver.url,), webhook_secret=SECRET)
    monitor = Monitor(engine, config, sender=_sender([receiver.url], sleeps))
    monitor.sender.start()
    await engine.top_up_reserve("USDT", "100", "crypto", "seed")
    await engine.reserve_amount("USDT", "91", "crypto", "r1", "swap")
    assert [a["level"] for a in await monitor.check_once()] == ["critical"]
    assert await monitor.check_once() == []  # raised once
    await engine.release_reserve("r1")
    assert [a["action"] for a in await monitor.check_once()] == ["clear"]
    await monitor.sender.join()
    await monitor.stop()
    payloads = [json.loads(body) for body, _ in receiver.requests]
    assert [p["type"] for p in payloads] == ["alert_raised", "alert_raised", "alert_cleared"]
    assert payloads[0] == payloads[1]  # the first attempt failed and was retried
    assert payloads[0]["message"] == "USDT reserve utilization 91.00% (>= 90%: critical)"
    assert payloads[2]["key"] == "RESERVE_USDT_CRYPTO|utilization"
    await client.aclose()


async def test_monitor_raises_and_clears_the_refusal_rate_alert(backend: dict[str, Any],
                                                                receiver_factory: Any) -> None:
    from prometheus_client import REGISTRY

    from engine.monitoring.alerts import MetricsSnapshot

    receiver = receiver_factory(fail_count=0)
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"])
    config = MonitorConfig(webhook_urls=(receiver.url,), webhook_secret=SECRET)
    monitor = Monitor(engine, config, sender=_sender([receiver.url], []))
    monitor.sender.start()
    labels = {"account": "SYSTEM", "kind": "refusal_rate", "level": "warning"}
    # 6 of 40 money requests refused (15 % > 10 %); no 5xx
    refused = MetricsSnapshot(requests_count=50, errors_count=0, money_requests_count=40,
                              refusals_count=6)
    assert [(a["action"], a["kind"]) for a in await monitor.check_once(refused)] == [
        ("raise", "refusal_rate")]
    assert REGISTRY.get_sample_value("reserves_alert_open", labels) == 1.0
    assert await monitor.check_once(refused) == []
    calm = MetricsSnapshot(requests_count=50, errors_count=0, money_requests_count=40,
                           refusals_count=3)  # 7.5 %: below 80 % of the threshold
    assert [(a["action"], a["kind"]) for a in await monitor.check_once(calm)] == [
        ("clear", "refusal_rate")]
    assert REGISTRY.get_sample_value("reserves_alert_open", labels) is None
    await monitor.sender.join()
    await monitor.stop()
    payloads = [json.loads(body) for body, _ in receiver.requests]
    assert [(p["type"], p["kind"]) for p in payloads] == [("alert_raised", "refusal_rate"),
                                                          ("alert_cleared", "refusal_rate")]
    assert payloads[0]["message"] == "refusal rate 6/40 money requests exceeds 10%"
    assert payloads[1]["key"] == "SYSTEM|refusal_rate"
    await client.aclose()
