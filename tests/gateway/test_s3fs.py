"""s3fs against the gateway: ls, find, info, cat, open+seek+read; bytes compared with the origin."""

from __future__ import annotations

import pytest

from tidepool_lab.testbed import s3util

from .conftest import ACCESS_KEY, CHUNK, ODD_KEYS, SECRET_KEY, Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def fs(stack: Stack) -> object:
    return s3util.s3fs_filesystem(stack.url, ACCESS_KEY, SECRET_KEY)


def test_ls_and_find(stack: Stack, fs: object) -> None:
    assert sorted(fs.ls("")) == ["ds", "offline"]  # type: ignore[attr-defined]
    top = fs.ls("ds", detail=True)  # type: ignore[attr-defined]
    names = {e["name"]: e["type"] for e in top}
    assert names["ds/small.txt"] == "file" and names["ds/many"] == "directory"
    assert fs.ls("ds/sym") == sorted(f"ds/{k}" for k in ODD_KEYS if k.startswith("sym/"))  # type: ignore[attr-defined]
    found = fs.find("ds/many")  # type: ignore[attr-defined]
    assert found == [f"ds/{k}" for k in stack.origin_keys("many/")]
    everything = fs.find("ds")  # type: ignore[attr-defined]
    assert everything == [f"ds/{k}" for k in stack.origin_keys()]
    info = fs.info("ds/mid/100k.bin")  # type: ignore[attr-defined]
    assert info["size"] == 100 * 1024 and info["type"] == "file"
    assert fs.isdir("ds/nested/deep") and not fs.exists("ds/nope")  # type: ignore[attr-defined]


def test_cat_every_file(stack: Stack, fs: object) -> None:
    keys = [k for k in stack.files if not k.startswith("many/")]
    got = fs.cat([f"ds/{k}" for k in keys])  # type: ignore[attr-defined]
    for key in keys:
        assert got[f"ds/{key}"] == stack.origin_bytes(key), key
    assert (
        fs.cat_file("ds/big/five.bin", start=10, end=CHUNK + 20)
        == (  # type: ignore[attr-defined]
            stack.origin_bytes("big/five.bin")[10 : CHUNK + 20]
        )
    )


def test_open_seek_read(stack: Stack, fs: object) -> None:
    expected = stack.origin_bytes("big/five.bin")
    with fs.open("ds/big/five.bin", "rb", block_size=256 * 1024) as f:  # type: ignore[attr-defined]
        assert f.read(100) == expected[:100]
        f.seek(3 * CHUNK - 50)
        assert f.read(100) == expected[3 * CHUNK - 50 : 3 * CHUNK + 50]
        f.seek(-10, 2)
        assert f.read() == expected[-10:]
        f.seek(0)
        assert f.read() == expected
    with pytest.raises(FileNotFoundError):
        fs.cat_file("ds/no/such.bin")  # type: ignore[attr-defined]
