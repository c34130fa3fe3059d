"""A pool member's answer is checked before its bytes are taken (issue 15, item 6).

A worker asks a peer for at most a few pages. A member that is broken or hostile (it holds the
peer credential, but its software or its disk is not to be trusted) may announce or send far
more than that, or a size that is not a number. The worker refuses such an answer after reading
at most what it asked for, plus one byte, and the origin is asked instead (:class:`PeerError`).

The peer here is a raw asyncio server speaking HTTP/1.1 on loopback, which counts the bytes
the worker let it send.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tidepool.core.ring import Member
from tidepool.pool.static import StaticMembership
from tidepool.worker.placement import PeerError, Placement

ASKED = 64 << 10
FLOOD = 256 << 20


class Peer:
    """Answers every request with ``head`` and then ``body_bytes`` bytes (chunked when the head
    says so), counting what the socket took."""

    def __init__(self, head: bytes, body_bytes: int, *, chunked: bool = False) -> None:
        self.head, self.body_bytes, self.chunked = head, body_bytes, chunked
        self.sent = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.head)
            block = b"x" * (64 << 10)
            while self.sent < self.body_bytes:
                data = b"%x\r\n%s\r\n" % (len(block), block) if self.chunked else block
                writer.write(data)
                await writer.drain()
                self.sent += len(block)
        writer.close()


@contextlib.asynccontextmanager
async def serving(peer: Peer) -> AsyncIterator[Member]:
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Member("rogue", f"http://127.0.0.1:{port}")
    finally:
        server.close()


def head(length: str | None, size: str = str(FLOOD), version: str = "v1") -> bytes:
    lines = ["HTTP/1.1 206 Partial Content", f"X-Tidepool-Size: {size}"]
    lines.append(f"X-Tidepool-Version: {version}")
    lines.append(f"Content-Length: {length}" if length else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("answer", "chunked"),
    [
        (head(str(FLOOD)), False),  # announces the whole file for one page
        (head(None), True),  # announces nothing and never stops
        (head(str(ASKED), size="1" * 40), False),  # a size that is no file size
        (head(str(ASKED), size="٣٣"), False),
    ],
)
async def test_an_oversized_or_malformed_peer_answer_is_refused_unread(
    answer: bytes, chunked: bool
) -> None:
    peer = Peer(answer, FLOOD, chunked=chunked)
    me = Member("me", "http://127.0.0.1:1")
    async with serving(peer) as rogue:
        placement = Placement(me, StaticMembership([me, rogue]), peer_token="p" * 20)
        try:
            with pytest.raises(PeerError):
                await placement.read(rogue, "ds", "f.bin", "v1", 0, ASKED)
        finally:
            await placement.close()
    assert peer.sent < 16 << 20  # what sockets and buffers hold, not the 256 MiB it offered


async def test_a_right_answer_is_taken() -> None:
    peer = Peer(head(str(ASKED)), ASKED)
    me = Member("me", "http://127.0.0.1:1")
    async with serving(peer) as rogue:
        placement = Placement(me, StaticMembership([me, rogue]), peer_token="p" * 20)
        try:
            got = await placement.read(rogue, "ds", "f.bin", "v1", 0, ASKED)
        finally:
            await placement.close()
    assert got.data == b"x" * ASKED and got.size == FLOOD and got.version == "v1"


def json_head(length: str | None) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}" if length else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("answer", "chunked"), [(json_head(str(FLOOD)), False), (json_head(None), True)]
)
async def test_an_oversized_metadata_answer_is_refused_before_it_is_buffered(
    answer: bytes, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing asked of a peer is read up to a cap (``MAX_PEER_JSON``, lowered here): one
    that announces more, or never ends, is refused (the origin is asked instead)."""
    import tidepool.worker.placement as placement_mod

    monkeypatch.setattr(placement_mod, "MAX_PEER_JSON", 1 << 20)
    peer = Peer(answer, FLOOD, chunked=chunked)
    me = Member("me", "http://127.0.0.1:1")
    async with serving(peer) as rogue:
        placement = Placement(me, StaticMembership([me, rogue]), peer_token="p" * 20)
        try:
            with pytest.raises(PeerError):
                await placement.fetch_json(rogue, "ds", "list", "d")
        finally:
            await placement.close()
    assert peer.sent < 16 << 20
