"""ServerLimits: defaults, validation and the environment, without servers."""

from __future__ import annotations

import pytest

from tidepool.serving import ServerLimits, busy_response


def test_defaults_and_aiohttp_arguments() -> None:
    limits = ServerLimits()
    kwargs = limits.server_kwargs()
    assert kwargs["keepalive_timeout"] == limits.idle_timeout == 75.0
    assert kwargs["handler_cancellation"] is True
    assert kwargs["max_line_size"] == kwargs["max_field_size"] == 8190
    assert limits.header_timeout < limits.idle_timeout


def test_environment_overrides_and_refusals() -> None:
    env = {"TIDEPOOL_MAX_CONNECTIONS": "20", "TIDEPOOL_HEADER_TIMEOUT": "2.5", "OTHER": "x"}
    limits = ServerLimits.from_env(env)
    assert (limits.max_connections, limits.header_timeout) == (20, 2.5)
    assert ServerLimits.from_env({"TIDEPOOL_STREAM_MEMORY_MIB": "64"}).stream_memory_mib == 64
    for name, value in [
        ("TIDEPOOL_MAX_CONNECTIONS", "²"),
        ("TIDEPOOL_MAX_CONNECTIONS", "0"),
        ("TIDEPOOL_IDLE_TIMEOUT", "-1"),
        ("TIDEPOOL_STALL_TIMEOUT", "1e9"),
        ("TIDEPOOL_HEADER_TIMEOUT", "٣"),
        ("TIDEPOOL_STREAM_MEMORY_MIB", "0"),
    ]:
        with pytest.raises(ValueError, match=name):
            ServerLimits.from_env({name: value})
    with pytest.raises(ValueError, match="positive"):
        ServerLimits(header_timeout=0)


def test_busy_response_is_complete_http() -> None:
    raw = busy_response(b"{}", "application/json")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Content-Length: 2" in head
    assert b"Connection: close" in head and body == b"{}"
