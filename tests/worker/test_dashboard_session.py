"""The dashboard's login cookie: signed with the token, expiring, carrying no token. Pure."""

from __future__ import annotations

from tidepool.worker.dashboard import session

TOKEN = "worker-token-123456"


def test_issued_cookie_is_valid_until_it_expires() -> None:
    cookie = session.issue(TOKEN, now=1000.0, lifetime=60)
    assert session.valid(cookie, TOKEN, now=1000.0)
    assert session.valid(cookie, TOKEN, now=1059.0)
    assert not session.valid(cookie, TOKEN, now=1060.0)


def test_cookie_holds_no_token_and_differs_each_time() -> None:
    a, b = session.issue(TOKEN, 0.0), session.issue(TOKEN, 0.0)
    assert TOKEN not in a and a != b


def test_another_token_or_a_change_voids_it() -> None:
    cookie = session.issue(TOKEN, now=0.0)
    assert not session.valid(cookie, "another-token", now=1.0)
    message, _, mac = cookie.rpartition(".")
    _, expires, nonce = message.split(".")
    later = f"v1.{int(expires) + 3600}.{nonce}.{mac}"  # extended by hand
    assert not session.valid(later, TOKEN, now=1.0)
    flipped = cookie[:-1] + ("0" if cookie[-1] != "0" else "1")
    assert not session.valid(flipped, TOKEN, now=1.0)


def test_garbage_is_refused() -> None:
    for bad in (None, "", "v1", "v1.x.y.z", "v2.99999999999.n.m", "a" * 300, "...."):
        assert not session.valid(bad, TOKEN, now=0.0)


def test_token_comparison_bounds_the_input() -> None:
    assert session.token_matches(TOKEN, TOKEN)
    assert not session.token_matches(TOKEN + "x", TOKEN)
    assert not session.token_matches("x" * (session.MAX_TOKEN + 1), "x" * (session.MAX_TOKEN + 1))


def test_cookie_opens_no_data_or_write_route() -> None:
    assert "/v1/datasets/{ds}/files/{path}" not in session.READ_ONLY_ROUTES
    assert not any("load" in r and "loads" not in r for r in session.READ_ONLY_ROUTES)
    assert "/metrics" not in session.READ_ONLY_ROUTES
