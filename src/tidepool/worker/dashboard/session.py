"""The dashboard's login cookie: a signed, expiring proof that the browser once sent the token.

Off loopback the worker requires its bearer token. A browser cannot add an ``Authorization`` header
to a page load, and a token in the URL ends up in history, logs and ``Referer`` headers; so the
dashboard's login form POSTs the token once and gets this cookie back (``HttpOnly``: scripts cannot
read it; ``SameSite=Strict``: other sites cannot make the browser send it). The cookie holds no
token: ``v1.<expires>.<nonce>.<mac>``, the MAC an HMAC-SHA256 keyed by a hash of the token, so
every worker sharing the token (one dataset's pool) accepts it, and changing the token voids it.

It only opens the dashboard's read-only GET routes (:data:`READ_ONLY_ROUTES`); everything else,
every POST included, still needs the bearer header. Limits: stateless, so logging out clears the
browser's cookie but cannot revoke a copy taken from it before expiry (at most ``LIFETIME``).
Pure: the time is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "tidepool_dashboard"
LIFETIME = 8 * 3600
"""Seconds a login lasts."""

READ_ONLY_ROUTES = frozenset(
    {
        "/v1/node",
        "/v1/datasets",
        "/v1/datasets/{ds}/status",
        "/v1/loads",
        "/v1/loads/{id}",
        "/v1/pool",
        "/v1/history",
    }
)
"""Canonical routes a dashboard cookie may read (GET/HEAD only): status, never file data."""

MAX_TOKEN = 4096
"""Longest token a login may send (longer is refused before any comparison)."""


def _key(token: str) -> bytes:
    return hashlib.sha256(b"tidepool-dashboard-cookie\0" + token.encode()).digest()


def _mac(token: str, message: str) -> str:
    return hmac.new(_key(token), message.encode(), hashlib.sha256).hexdigest()


def issue(token: str, now: float, lifetime: int = LIFETIME) -> str:
    """A fresh cookie value valid until ``now + lifetime``."""
    message = f"v1.{int(now) + lifetime}.{secrets.token_urlsafe(12)}"
    return f"{message}.{_mac(token, message)}"


def valid(cookie: str | None, token: str, now: float) -> bool:
    """Whether ``cookie`` was issued with ``token`` and has not expired."""
    if not cookie or len(cookie) > 256:
        return False
    message, _, mac = cookie.rpartition(".")
    parts = message.split(".")
    if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit():
        return False
    if not hmac.compare_digest(mac.encode(), _mac(token, message).encode()):
        return False
    return now < int(parts[1])


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison of a submitted token with the worker's."""
    return len(given) <= MAX_TOKEN and hmac.compare_digest(given.encode(), token.encode())
