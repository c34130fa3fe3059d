"""The JSON codec of listings (:mod:`tidepool.core.jsoncodec`) against the standard library's: the
same documents, the same values back, the same errors for what is not JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tidepool.core import jsoncodec

DOCS: list[Any] = [
    {"name": "ds/d041/f0001234.bin", "size": 1024, "type": "file", "mtime": 1765126800.123456},
    {"name": "ds/été/ファイル.bin", "version": '"5d41402abc4b2a76b9719d911017c592"', "etag": None},
    [1, 2.5, -3, True, False, None, "x\u0000y", {"nested": [{}]}],
    {"big": 1 << 70, "u64": (1 << 64) - 1, "neg": -(1 << 63)},  # beyond 64 bits: the fallback
    {1: "an int key", "s": "kept as a string key"},
    [0.1, 1e-7, 1e21, 123456789.123456789],
]


@pytest.mark.parametrize("doc", DOCS)
def test_same_document_as_the_standard_library(doc: Any) -> None:
    ours = jsoncodec.dumps(doc)
    theirs = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(ours) == json.loads(theirs)
    assert jsoncodec.loads(ours) == json.loads(theirs)
    assert jsoncodec.loads(ours.encode()) == jsoncodec.loads(theirs)
    assert jsoncodec.dumpb(doc) == ours.encode()


def test_what_only_the_standard_library_reads_is_still_read() -> None:
    assert jsoncodec.loads('{"a": NaN}')["a"] != jsoncodec.loads('{"a": NaN}')["a"]
    assert jsoncodec.loads("[Infinity]") == [float("inf")]


@pytest.mark.parametrize("raw", ["", "{", "[1,]", "nul", b"\xff\xfe", '{"a" 1}'])
def test_not_json_is_a_value_error(raw: str | bytes) -> None:
    with pytest.raises(ValueError):
        jsoncodec.loads(raw)
