"""The client's read policy with plain values: no server, no socket (it is sans-IO).

Each case scripts what the transport answers and checks what the policy sends next, which
workers it reports down, and what it returns or raises — the same rules for the blocking and
the asyncio drivers.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable

import pytest

from tidepool.client.reads import json_steps, read_steps, run_async, run_sync
from tidepool.client.transport import Request, Response, StaleConnection, Truncated, Unreachable
from tidepool.core.errors import OriginUnavailableError, VersionGoneError

Script = list[Response | Exception]


def ok(body: bytes, version: str = "v1", size: int | None = None) -> Response:
    headers = {"X-Tidepool-Version": version, "X-Tidepool-Size": str(size or len(body))}
    return Response(200, headers, body)


def error(status: int, code: str, **extra: str) -> Response:
    return Response(status, {}, json.dumps({"error": code, "message": code, **extra}).encode())


def scripted(script: Script) -> tuple[Callable[[Request], Response], list[Request]]:
    sent: list[Request] = []

    def send(req: Request) -> Response:
        sent.append(req)
        outcome = script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return send, sent


def drive(script: Script, mode: str, *, pin: str | None = "v1", end: int | None = 4):
    send, sent = scripted(script)
    down: list[str] = []
    steps = read_steps(["http://a", "http://b"], "ds/f", "ds", "f", 0, end, pin, down.append)
    if mode == "sync":
        answer = run_sync(steps, send)
    else:

        async def asend(req: Request) -> Response:
            return send(req)

        answer = asyncio.run(run_async(steps, asend))
    return answer, sent, down


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


@MODES
def test_a_pinned_read_sends_range_and_if_match(mode: str) -> None:
    answer, sent, down = drive([ok(b"abcd", size=10)], mode)
    assert answer.data == b"abcd" and answer.size == 10 and answer.version == "v1"
    assert sent[0].headers == {"Range": "bytes=0-3", "If-Match": '"v1"'}
    assert sent[0].target == "/v1/datasets/ds/files/f" and down == []


@MODES
def test_an_unreachable_owner_is_reported_once_and_the_next_is_asked(mode: str) -> None:
    answer, sent, down = drive([Unreachable("refused"), ok(b"abcd")], mode)
    assert answer.data == b"abcd"
    assert [r.base for r in sent] == ["http://a", "http://b"] and down == ["http://a"]


@MODES
def test_a_stale_keepalive_connection_is_retried_once_on_the_same_worker(mode: str) -> None:
    _answer, sent, down = drive([StaleConnection("closed"), ok(b"abcd")], mode)
    assert [r.base for r in sent] == ["http://a", "http://a"] and down == []
    _, sent, down = drive([StaleConnection("x"), StaleConnection("x"), ok(b"abcd")], mode)
    assert [r.base for r in sent] == ["http://a", "http://a", "http://b"] and down == ["http://a"]


@MODES
def test_every_worker_unreachable_names_them(mode: str) -> None:
    with pytest.raises(ConnectionError, match="http://a, http://b"):
        drive([Unreachable("x"), Unreachable("y")], mode)


@MODES
def test_a_short_answer_is_asked_again_once_then_eio(mode: str) -> None:
    answer, sent, _ = drive([ok(b"ab"), ok(b"abcd")], mode)
    assert answer.data == b"abcd" and len(sent) == 2
    answer, sent, _ = drive([Truncated("cut"), ok(b"abcd")], mode)
    assert answer.data == b"abcd" and len(sent) == 2
    with pytest.raises(OSError) as info:
        drive([Truncated("cut"), ok(b"ab")], mode)
    assert info.value.errno == errno.EIO


@MODES
def test_a_pinned_version_that_is_gone_raises_estale_at_once(mode: str) -> None:
    with pytest.raises(VersionGoneError) as info:
        drive([error(412, "PreconditionFailed")], mode)
    assert info.value.errno == errno.ESTALE and info.value.filename == "ds/f"


@MODES
def test_an_unpinned_read_that_saw_a_change_asks_once_more(mode: str) -> None:
    answer, sent, _ = drive(
        [error(412, "PreconditionFailed"), ok(b"new!", "v2")], mode, pin=None, end=None
    )
    assert answer.version == "v2" and answer.data == b"new!" and len(sent) == 2
    assert "If-Match" not in sent[0].headers and "Range" not in sent[0].headers


@MODES
def test_other_errors_map_through_the_one_table(mode: str) -> None:
    with pytest.raises(FileNotFoundError):
        drive([error(404, "NoSuchKey")], mode)
    with pytest.raises(OriginUnavailableError):  # the worker answered: no failover
        _, _sent, _ = drive([error(503, "OriginUnavailable")], mode)


def test_json_calls_fail_over_with_the_same_rules() -> None:
    send, _sent = scripted([Unreachable("x"), Response(200, {}, b'{"a": 1}')])
    down: list[str] = []
    steps = json_steps(["http://a", "http://b"], "/v1/node", "", down.append)
    assert run_sync(steps, send) == {"a": 1} and down == ["http://a"]
