"""Parse the ``If-Match`` header a pinned read carries: pure, no I/O.

A client reading one file in several requests sends the version it started with as a strong
entity tag (``If-Match: "<version>"``). ``*`` matches any version (the header then pins nothing);
a weak tag (``W/"…"``) never matches, as RFC 9110 requires strong comparison for ``If-Match``.
Only one tag is accepted: a read is pinned to one version.
"""

from __future__ import annotations

from tidepool.core.errors import BadRequestError

MAX_TAG = 1024


def parse_if_match(header: str | None) -> str | None:
    """The version a read is pinned to, or None (no header, or ``*``).

    A weak tag is returned with its ``W/`` prefix so that it matches no version."""
    if header is None:
        return None
    text = header.strip()
    if text in ("", "*"):
        return None
    if len(text) > MAX_TAG or "," in text:
        raise BadRequestError(
            f"If-Match must be one entity tag of at most {MAX_TAG} characters, like '\"abc\"'"
        )
    weak = text.startswith("W/")
    tag = text[2:] if weak else text
    if len(tag) < 2 or not (tag.startswith('"') and tag.endswith('"')):
        raise BadRequestError(
            f"If-Match {header[:80]!r} must be a quoted entity tag, like '\"abc\"'"
        )
    return ("W/" if weak else "") + tag[1:-1]
