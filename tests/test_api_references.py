"""Every reference the API accepts can be read and ended through every route that takes one
(issue 15, item 8), and amounts given as strings follow the JSON number grammar over HTTP
(item 10). Through the real server (uvicorn, httpx), as a client sends them."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.routing import Route

from api.app import route_modules
from engine import limits as engine_limits
from tests.api_server import ADMIN, SERVICE
from tests.test_api_flows import Api, exact, serve

pytestmark = pytest.mark.real

HOLD = "/wallet/reserves/holds/{reference_id}"
SWAP = "/wallet/swaps/{reference_id}"
OPERATION = "/wallet/mobile-money/{reference_id}"
# every route that takes a reference in its path: the walk below covers each
ROUTES = {("GET", HOLD), ("POST", HOLD + "/release"), ("POST", HOLD + "/commit"),
          ("GET", SWAP), ("GET", OPERATION), ("POST", OPERATION + "/settle")}
# a route whose references the engine makes (liquidity:<account>:<window start ms>), never a caller
DISMISS = "/wallet/reserves/liquidity/requests/{reference_id}/dismiss"
GENERATED = {("POST", DISMISS)}
# the longest, each allowed character, and slashes wherever they may stand
REFERENCES = ["R" * engine_limits.reference_length_max, "AZaz09",
              *[f"c{ch}x" for ch in "_.:@/+=-"], "a/b/c", "x/release", "x/commit", "x/settle",
              "/lead", "trail/", "a//b", "...", ".a/b.", "_.:@+=-"]


ENDED_CODE = {"commit": "hold_already_committed", "release": "hold_already_released"}


def _path(template: str, ref: str, encode: bool) -> str:
    return template.replace("{reference_id}", quote(ref, safe="") if encode else ref)


@pytest.fixture
def api(tmp_path: Path, redis_url: str, fresh_database_url: str) -> Iterator[Api]:
    with serve(tmp_path, redis_url, fresh_database_url) as started:
        started.top_up("USDT", "crypto", "1000")
        started.top_up("UGX", "fiat", "10000000")
        started.deposit("u1", "USDT", "100", "dep1")
        yield started


def test_the_walk_covers_every_route_that_takes_a_reference(api: Api) -> None:
    routes = {(method, route.path.replace(":reference", ""))
              for module in route_modules() for route in module.routes
              if isinstance(route, Route) and "{reference_id" in route.path
              for method in route.methods or () if method != "HEAD"}
    assert routes == ROUTES | GENERATED
    paths = exact(api.get("/openapi.json"))["paths"]
    documented = {(method.upper(), path) for path, item in paths.items()
                  if "{reference_id}" in path for method in item}
    assert documented == ROUTES | GENERATED
    # the generated ones take the same path convertor: a "/" reaches the handler, which
    # answers that no such request exists (not the router's bare 404)
    r = api.post(_path(DISMISS, "a/b", False), {}, ADMIN)
    assert r.status_code == 404, r.text
    assert exact(r).get("code") is not None, r.text
    for path, item in paths.items():
        for method in item.values():
            for param in method.get("parameters", []):
                if param["name"] == "reference_id":
                    assert param["schema"]["maxLength"] == engine_limits.reference_length_max


@pytest.mark.parametrize("encode", [False, True], ids=["raw", "percent-encoded"])
def test_every_accepted_reference_is_read_and_ended_through_every_route(
        api: Api, encode: bool) -> None:
    """A hold "a/b" answered 404 on GET, commit and release: without a TTL it stayed locked."""
    for i, ref in enumerate(REFERENCES):
        r = api.post("/wallet/reserves/UGX/fiat/reserve",
                     {"amount": "5", "reference_id": ref, "operation_type": "walk"})
        assert r.status_code == 200, (ref, r.text)
        r = api.get(_path(HOLD, ref, encode))
        assert r.status_code == 200, (ref, r.text)
        assert (exact(r)["hold"]["reference_id"], exact(r)["hold"]["state"]) == (ref, "pending")
        # each reference ends through one route and is found ended through the other
        first, second = ("commit", "release") if i % 2 else ("release", "commit")
        r = api.http.post(_path(HOLD + "/" + first, ref, encode), headers=SERVICE)
        assert (r.status_code, exact(r)["reference_id"]) == (200, ref), (ref, r.text)
        r = api.http.post(_path(HOLD + "/" + second, ref, encode), headers=SERVICE)
        assert (r.status_code, exact(r)["code"]) == (409, ENDED_CODE[first]), (ref, r.text)
        state = exact(api.get(_path(HOLD, ref, encode)))["hold"]["state"]
        assert state == ("committed" if first == "commit" else "released")

    for ref in REFERENCES:  # a swap ends itself: read it
        r = api.swap(ref, "1")
        assert r.status_code == 200, (ref, r.text)
        r = api.get(_path(SWAP, ref, encode))
        assert r.status_code == 200, (ref, r.text)
        assert (exact(r)["swap"]["reference_id"], exact(r)["swap"]["state"]) == (ref, "completed")

    for ref in REFERENCES:  # a buy is ended by its callback: read it before and after, settle it
        r = api.buy(ref, "3700")
        assert r.status_code == 200, (ref, r.text)
        operation = exact(r)["operation"]
        r = api.get(_path(OPERATION, ref, encode))
        assert r.status_code == 200, (ref, r.text)
        assert exact(r)["operation"]["reference_id"] == ref
        assert api.callback(operation, "success").status_code == 200
        r = api.get(_path(OPERATION, ref, encode))
        assert exact(r)["operation"]["state"] == "completed", (ref, r.text)
        # an operator settles only a flagged operation: reached, and refused as not flagged
        r = api.post(_path(OPERATION + "/settle", ref, encode), {"action": "refunded"}, ADMIN)
        assert (r.status_code, exact(r)["code"]) == (409, "not_settleable"), (ref, r.text)
        assert exact(r)["error"].startswith(f"Operation {ref} is completed"), r.text
    balances = api.balances("u1")
    assert balances["RESERVE_UGX"][1] == D(0)  # every hold of the walk ended
    assert balances["RESERVE_USDT"][1] == D(0)


UNREACHABLE = [".", "..", "a/../b", "./x", "x/.", "~swap.user", "a b", "a\n",
               "R" * (engine_limits.reference_length_max + 1)]


def test_references_no_route_could_reach_are_refused(api: Api) -> None:
    """Dot segments (HTTP clients rewrite them), the flows' prefix, the rest of the grammar."""
    before = api.balances("u1")
    for ref in UNREACHABLE:
        for path, body in (("/wallet/reserves/UGX/fiat/reserve",
                            {"amount": "5", "reference_id": ref, "operation_type": "walk"}),
                           ("/wallet/swaps", {"user_id": "u1", "from_currency": "USDT",
                                              "to_currency": "UGX", "from_amount": "1",
                                              "reference_id": ref}),
                           ("/wallet/users/u1/USDT/deposit", {"amount": "1", "reference_id": ref})):
            r = api.post(path, body)
            assert r.status_code == 400, (path, ref, r.text)
    assert api.balances("u1") == before


def test_a_flows_step_cannot_be_reached_through_the_hold_routes(api: Api) -> None:
    r = api.sell("sl1", "10")
    assert r.status_code == 200, r.text
    before = api.balances("u1")
    for leg in exact(r)["operation"]["legs"]:
        for method, template in (("GET", HOLD), ("POST", HOLD + "/release"),
                                 ("POST", HOLD + "/commit")):
            r = api.http.request(method, _path(template, leg["reference_id"], True),
                                 headers=SERVICE)
            assert (r.status_code, exact(r)["code"]) == (400, "invalid_reference"), r.text
    assert api.balances("u1") == before


BAD_AMOUNTS = ["1_000", "١", "１０", "+1", ".5", "5.", "01", "\u00a01"]


def test_decimal_strings_follow_the_json_number_grammar_over_http(api: Api) -> None:
    """'1_000' locked 1,000 UGX, '١' 1, '１０' 10."""
    before = api.balances("u1")
    for i, amount in enumerate(BAD_AMOUNTS):
        for path, body, headers in (
                ("/wallet/reserves/UGX/fiat/reserve",
                 {"amount": amount, "reference_id": f"bad{i}", "operation_type": "t"}, None),
                ("/wallet/reserves/UGX/fiat/topup",
                 {"amount": amount, "source_reference": f"bad{i}"}, ADMIN),
                ("/wallet/users/u1/USDT/deposit", {"amount": amount, "reference_id": f"bad{i}"},
                 None)):
            r = api.post(path, body, **({"headers": headers} if headers else {}))
            assert r.status_code == 400, (amount, r.text)
            assert exact(r)["error"] == (
                f"amount must be a number, got {amount!r} (a decimal string is written as a "
                'JSON number, in ASCII digits: "12.5", "1e3")')
    assert api.balances("u1") == before
    # an exponent is a JSON number's: the string and the number lock the same
    for ref, raw in (("e-string", '"1e3"'), ("e-number", "1e3")):
        r = api.http.post("/wallet/reserves/UGX/fiat/reserve", headers=SERVICE,
                          content=f'{{"amount": {raw}, "reference_id": "{ref}", '
                                  '"operation_type": "t"}')
        assert (r.status_code, exact(r)["reserved_amount"]) == (200, D(1000)), r.text
    assert api.balances("u1")["RESERVE_UGX"] == (before["RESERVE_UGX"][0], D(2000))
