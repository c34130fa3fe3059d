"""One log line per failed request, and the request id that ties it to what the client saw.

Every answer carries ``X-Request-Id`` (the client's own when it sent a sane one, else a fresh
one); an error answer also has it in its JSON body. A failed request is logged as one line —
request id, method, dataset, path, status, error class and the (redacted) message, which for an
origin failure is the origin's own — at a level that follows its cause: a client mistake
(no such key, a bad range) at INFO, an origin failure at WARNING, a Tidepool bug at ERROR. The
traceback is added only when the worker runs with ``-v`` (the logger is enabled for INFO), so
a broken origin no longer writes a hundred lines per request.

Limits: the message is cut at 500 characters; ids the client sends are at most 64 characters of
``[A-Za-z0-9._:-]`` (anything else is replaced, never echoed).
"""

from __future__ import annotations

import itertools
import logging
import os
import re

from tidepool.core.errors import OriginError, http_status, redact

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_MESSAGE = 500


_ID_PREFIX = os.urandom(4).hex()
_ID_COUNT = itertools.count(1)


def request_id(sent: str | None) -> str:
    """The client's request id when it is sane, else a fresh one: 16 hex digits, this
    process's random prefix and a counter (a uuid4 per request cost a getrandom call each)."""
    if sent and _SANE_ID.fullmatch(sent):
        return sent
    return f"{_ID_PREFIX}{next(_ID_COUNT) & 0xFFFFFFFF:08x}"


def failure_level(exc: BaseException) -> int:
    """How loud a failed request is: a client mistake INFO, an origin failure WARNING, a bug
    (unmapped exception, 500) ERROR."""
    status, code = http_status(exc)
    if code == "InternalError":
        return logging.ERROR
    if isinstance(exc, OriginError) or status >= 500:
        return logging.WARNING
    return logging.INFO


def log_failure(
    log: logging.Logger, rid: str, method: str, dataset: str, path: str, exc: BaseException
) -> None:
    """Write the one line for a failed request (with the traceback only when ``-v``)."""
    level = failure_level(exc)
    if not log.isEnabledFor(level):
        return
    status, _ = http_status(exc)
    message = redact(str(exc)).replace("\n", " ")
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    log.log(
        level,
        "request %s %s dataset=%s path=%s -> %d %s: %s",
        rid,
        method,
        dataset or "-",
        redact(path) or "-",
        status,
        type(exc).__name__,
        message,
        exc_info=exc if level >= logging.WARNING and log.isEnabledFor(logging.INFO) else None,
    )


__all__ = ["REQUEST_ID_HEADER", "failure_level", "log_failure", "request_id"]
