"""The client's read policy, written once: retries, failover along the ring, version pinning.

The policy is a generator that yields the :class:`~tidepool.client.transport.Request` to send and
receives what came back — a :class:`~tidepool.client.transport.Response` or one of the
transport errors — so it does no I/O itself (sans-IO, like h11). :func:`run_sync` drives it with
the blocking transport, :func:`run_async` with aiohttp; tests drive it with plain values.

The rules, in one place:

* targets are tried in the order the router gave (the file's owners first); a target that cannot
  be reached is reported once through ``on_down`` and the next one is tried; when every target
  failed the last error is raised, naming the workers;
* a pooled keep-alive connection that the worker had closed is retried once on the same target;
* an answer cut short (or of the wrong length) is asked for once more, then reported as ``EIO``;
* a read that knows its file's version sends it (``If-Match``); the worker answers 412 when that
  version is gone from origin and cache, and the read raises
  :class:`~tidepool.core.errors.VersionGoneError` (``ESTALE``) — bytes of two versions are never
  stitched together. A read that does not know the version yet (a whole file read in one request,
  metadata learned from the answer's headers) is unpinned: a 412 there means the object changed
  while the worker read it, and it is asked once more;
* any other error status becomes the exception of the one error table
  (:func:`~tidepool.core.errors.from_http`).
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from tidepool.client.transport import (
    TRANSPORT_ERRORS,
    Request,
    Response,
    StaleConnection,
    Truncated,
    Unreachable,
    header,
)
from tidepool.core import jsoncodec
from tidepool.core.errors import from_http

T = TypeVar("T")
Outcome = Response | Unreachable | StaleConnection | Truncated
Steps = Generator[Request, Outcome, T]

VERSION = "X-Tidepool-Version"
SIZE = "X-Tidepool-Size"
MTIME = "X-Tidepool-Mtime"


@dataclass(frozen=True, slots=True)
class Answer:
    """The bytes of a read and the file metadata its headers carried."""

    data: bytes
    size: int
    version: str
    mtime: float | None


def file_target(dataset: str, rel: str) -> str:
    return f"/v1/datasets/{quote(dataset)}/files/{quote(rel)}"


def error_from(resp: Response, path: str) -> Exception:
    """The exception of the error table for a worker's error answer."""
    try:
        data = jsoncodec.loads(resp.body)
    except ValueError:
        data = {"message": resp.body[:200].decode(errors="replace")}
    return from_http(resp.status, data if isinstance(data, dict) else {}, path)


def unreachable(bases: list[str], exc: BaseException) -> ConnectionError:
    where = ", ".join(dict.fromkeys(bases)) or "?"
    return ConnectionError(
        errno.ECONNREFUSED,
        f"cannot reach the Tidepool worker at {where} ({exc}); is `tidepool up` running? "
        "set TIDEPOOL_ENDPOINT to its address",
    )


def read_steps(
    targets: list[str],
    path: str,
    dataset: str,
    rel: str,
    start: int,
    end: int | None,
    version: str | None,
    on_down: Callable[[str], None],
) -> Steps[Answer]:
    """Read ``[start, end)`` of a file (``end=None``: the whole file, size learned from the answer).

    ``version`` pins the read (sent as ``If-Match``); ``path`` names the file in errors."""
    headers: dict[str, str] = {}
    if end is not None:
        headers["Range"] = f"bytes={start}-{end - 1}"
    if version is not None:
        headers["If-Match"] = f'"{version}"'
    target = file_target(dataset, rel)
    last: BaseException = Unreachable("no worker to ask")
    for base in targets:
        stale = short = changed = 1
        while True:
            outcome = yield Request(base, target, headers)
            if isinstance(outcome, StaleConnection) and stale:
                stale -= 1
                continue
            if isinstance(outcome, Unreachable | StaleConnection):
                last = outcome
                on_down(base)
                break
            if isinstance(outcome, Truncated):
                if short:
                    short -= 1
                    continue
                raise OSError(errno.EIO, f"read of {path} was cut short: {outcome}", path)
            resp = outcome
            if resp.status == 412:
                if version is None and changed:
                    changed -= 1  # the object changed while the worker read it: once more
                    continue
                raise error_from(resp, path)
            if resp.status >= 400:
                raise error_from(resp, path)
            answer = _answer(resp, version)
            want = (end - start) if end is not None else answer.size
            if len(resp.body) != want:
                if short:
                    short -= 1
                    continue
                raise OSError(
                    errno.EIO, f"read of {path} returned {len(resp.body)} bytes, expected {want}"
                )
            return answer
    raise unreachable(targets, last) from last


def _answer(resp: Response, pinned: str | None) -> Answer:
    h: Mapping[str, str] = resp.headers
    version = header(h, VERSION) or pinned or ""
    size_text = header(h, SIZE)
    mtime_text = header(h, MTIME)
    return Answer(
        data=resp.body,
        size=int(size_text) if size_text is not None else len(resp.body),
        version=version,
        mtime=float(mtime_text) if mtime_text else None,
    )


def json_steps(
    targets: list[str],
    target: str,
    path: str,
    on_down: Callable[[str], None],
    *,
    method: str = "GET",
    body: bytes | None = None,
) -> Steps[Any]:
    """A JSON call (metadata, administration) with the same failover rules as reads."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    last: BaseException = Unreachable("no worker to ask")
    for base in targets:
        stale = short = 1
        while True:
            outcome = yield Request(base, target, headers, method, body)
            if isinstance(outcome, StaleConnection) and stale:
                stale -= 1
                continue
            if isinstance(outcome, Unreachable | StaleConnection):
                last = outcome
                on_down(base)
                break
            if isinstance(outcome, Truncated):
                if short:
                    short -= 1
                    continue
                raise OSError(errno.EIO, f"answer about {path} was cut short: {outcome}", path)
            if outcome.status >= 400:
                raise error_from(outcome, path)
            return jsoncodec.loads(outcome.body)
    raise unreachable(targets, last) from last


def run_sync(steps: Steps[T], send: Callable[[Request], Response]) -> T:
    """Drive a policy with a blocking transport."""
    try:
        request = next(steps)
        while True:
            try:
                outcome: Outcome = send(request)
            except TRANSPORT_ERRORS as exc:
                outcome = exc
            request = steps.send(outcome)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(steps: Steps[T], send: Callable[[Request], Awaitable[Response]]) -> T:
    """Drive a policy with the asyncio transport."""
    try:
        request = next(steps)
        while True:
            try:
                outcome: Outcome = await send(request)
            except TRANSPORT_ERRORS as exc:
                outcome = exc
            request = steps.send(outcome)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
