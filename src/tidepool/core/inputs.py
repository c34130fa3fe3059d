"""Pure parsers for the scalar values a client sends, and the one shape of their error message.

Every surface that takes a number or a short string from the network (the worker's API, the S3
gateway, the command line) parses it here, so the rules hold everywhere: integers are ASCII
digits only (``str.isdigit`` also accepts ``²`` and ``٣``, and ``int`` takes ``_`` and any
Unicode digit), have a bounded number of digits (Python refuses to convert more than 4,300, with
a ``ValueError`` that used to surface as a 500) and lie between stated bounds. A bad value is a
:class:`~tidepool.core.errors.BadRequestError` whose message names the field, echoes the value
truncated and escaped (:func:`echo`), and says what would be valid (:func:`bad_value`).

Limits: these parsers never raise anything but :class:`BadRequestError` for any ``str`` input;
the hypothesis tests in ``tests/core`` hold them to that with full Unicode.
"""

from __future__ import annotations

import re

from tidepool.core.errors import BadRequestError

__all__ = ["ECHO_LIMIT", "bad_value", "echo", "parse_bool", "parse_int"]

ECHO_LIMIT = 40
"""Characters of a bad value repeated in an error message (the rest is cut)."""

_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of a client's value cut short: safe to put in a message or a log line.

    ``repr`` escapes control characters (CR, LF, NUL) so an echo can never split a header or a
    log line; at most ``limit`` characters of the value are shown, in at most ``3 * limit``
    characters of text (escapes are long), and a cut value says how long the whole was.
    """
    size = len(value) if isinstance(value, (str, bytes)) else None
    shown = value[:limit] if isinstance(value, (str, bytes)) else value
    if isinstance(shown, int) and shown.bit_length() > 256:
        return f"an integer of {shown.bit_length()} bits"  # repr refuses past 4,300 digits
    text = repr(shown)
    cut = size is not None and size > limit
    if len(text) > 3 * limit:
        text, cut = text[: 3 * limit], True
    if not cut:
        return text
    unit = "bytes" if isinstance(value, bytes) else "characters"
    return f"{text}… ({size if size is not None else len(repr(value))} {unit})"


def bad_value(field: str, value: object, valid: str) -> BadRequestError:
    """The error for ``field`` holding ``value``; ``valid`` says what would be accepted."""
    return BadRequestError(f"{field}: got {echo(value)}; expected {valid}")


def parse_int(text: str, field: str, *, lo: int, hi: int) -> int:
    """``text`` as an integer in ``[lo, hi]`` (ASCII digits only, no sign, no spaces)."""
    valid = f"a whole number from {lo} to {hi} (ASCII digits)"
    if not _DIGITS.fullmatch(text) or len(text) > len(str(hi)) + 1:
        # a leading zero may add one digit; a longer string can never be in range
        raise bad_value(field, text, valid)
    value = int(text)
    if not lo <= value <= hi:
        raise bad_value(field, text, valid)
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str, field: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (ASCII, any case)."""
    lowered = text.lower() if text.isascii() else text
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise bad_value(field, text, "one of 1, 0, true, false")
