"""The fsspec API of ``tidepool://`` against a real worker and S3 origin, byte for byte.

Covers listing and stat, whole and ranged reads, file objects, the ``fsspec.specs`` entry point,
configuration from the environment, the read-only contract, and the errors a user sees (missing
path, unreachable worker, bearer token), which must name the path or endpoint and never the token.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import fsspec
import pytest
from tests.conftest import ThreadWorker

from tidepool.client import TidepoolFileSystem
from tidepool.core.errors import AuthError
from tidepool_lab.testbed.s3server import free_port

from .conftest import Serve, client

pytestmark = pytest.mark.integration

PAGE = 64 << 10
rng = random.Random(1234)
FILES: dict[str, bytes] = {
    "a.txt": b"hello, tidepool\n" * 3,
    "empty.bin": b"",
    "dir/b.bin": rng.randbytes(300_000),
    "dir/sub/c.bin": rng.randbytes(5_000),
    "dir/sub/d.csv": b"x,y\n" + b"".join(f"{i},{i * i}\n".encode() for i in range(500)),
    "big.bin": rng.randbytes(5 * PAGE + 1234),
}
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def worker(serve: Serve) -> ThreadWorker:
    return serve({"ds": FILES, "other": {"x.bin": b"x" * 10}}, page_size=PAGE)


@pytest.fixture(params=[True, False], ids=["local", "http"])
def fs(request: pytest.FixtureRequest, worker: ThreadWorker) -> TidepoolFileSystem:
    return client(worker, local_reads=request.param)


# ---- metadata ----------------------------------------------------------------------------


def test_ls_root_lists_datasets(fs: TidepoolFileSystem) -> None:
    assert fs.ls("", detail=False) == ["ds", "other"]
    assert fs.ls("tidepool://", detail=False) == ["ds", "other"]


def test_ls_dataset_and_dirs(fs: TidepoolFileSystem) -> None:
    entries = {e["name"]: e for e in fs.ls("ds")}
    assert sorted(entries) == ["ds/a.txt", "ds/big.bin", "ds/dir", "ds/empty.bin"]
    assert entries["ds/dir"]["type"] == "directory"
    assert entries["ds/a.txt"] == {
        **entries["ds/a.txt"],
        "type": "file",
        "size": len(FILES["a.txt"]),
    }
    assert fs.ls("tidepool://ds/dir/sub/", detail=False) == ["ds/dir/sub/c.bin", "ds/dir/sub/d.csv"]
    assert fs.ls("ds/dir", detail=False) == ["ds/dir/b.bin", "ds/dir/sub"]
    # ls of a file is the file itself (fsspec convention)
    assert fs.ls("ds/dir/b.bin", detail=False) == ["ds/dir/b.bin"]


def test_info(fs: TidepoolFileSystem) -> None:
    for rel, data in FILES.items():
        info = fs.info(f"ds/{rel}")
        assert (info["name"], info["type"], info["size"]) == (f"ds/{rel}", "file", len(data))
    assert fs.info("ds/dir")["type"] == "directory"
    assert fs.info("ds")["type"] == "directory"
    assert fs.size("ds/big.bin") == len(FILES["big.bin"])
    assert fs.ukey("ds/a.txt") == fs.info("ds/a.txt")["version"] != ""


def test_open_of_a_listed_file_asks_nothing_more_until_its_ttl_ends(
    fs: TidepoolFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``open`` (and ``info``) of a file the client learned from a listing is answered from what
    it holds, without a call through fsspec's I/O thread; once the TTL ends, the worker is asked
    again, and ``info`` with options always asks."""
    fs.find("ds")
    real, asked = fs._info, []

    async def counting(path: str, **kw: Any) -> dict[str, Any]:
        asked.append((path, kw))
        return await real(path, **kw)

    monkeypatch.setattr(fs, "_info", counting)
    # (windows of the files held on the worker's host would answer too: test_held_windows.py)
    monkeypatch.setattr(fs, "_local_info", lambda path: None)
    for rel, data in FILES.items():
        with fs.open(f"ds/{rel}") as f:
            assert f.read() == data
        assert fs.info(f"ds/{rel}")["size"] == len(data)
    assert asked == []
    fs._infos["ds/a.txt"] = (fs._infos["ds/a.txt"][0], 0.0)  # its TTL ended
    assert fs.info("ds/a.txt")["size"] == len(FILES["a.txt"])
    assert fs.info("ds/dir/b.bin", headers=True)["size"] == len(FILES["dir/b.bin"])
    assert asked == [("ds/a.txt", {}), ("ds/dir/b.bin", {"headers": True})]


def test_find_glob_exists_isdir(fs: TidepoolFileSystem) -> None:
    assert fs.find("ds") == sorted(f"ds/{k}" for k in FILES)
    assert fs.find("tidepool://ds/dir") == ["ds/dir/b.bin", "ds/dir/sub/c.bin", "ds/dir/sub/d.csv"]
    assert fs.find("ds/dir/b.bin") == ["ds/dir/b.bin"]
    assert fs.find("ds/nothing-here") == []
    detail = fs.find("ds/dir", detail=True)
    assert {k: v["size"] for k, v in detail.items()} == {
        f"ds/{k}": len(v) for k, v in FILES.items() if k.startswith("dir/")
    }
    assert fs.find("ds", maxdepth=1) == ["ds/a.txt", "ds/big.bin", "ds/empty.bin"]
    assert "ds/dir/sub" in fs.find("ds", withdirs=True)
    assert fs.glob("ds/dir/**/*.bin") == ["ds/dir/b.bin", "ds/dir/sub/c.bin"]
    assert fs.glob("ds/*.txt") == ["ds/a.txt"]
    assert fs.glob("tidepool://ds/dir/sub/?.csv") == ["ds/dir/sub/d.csv"]
    assert fs.exists("ds/a.txt") and fs.exists("ds/dir") and fs.exists("ds")
    assert not fs.exists("ds/nope.txt") and not fs.exists("nods/a.txt")
    assert fs.isdir("ds/dir/sub") and not fs.isdir("ds/a.txt") and not fs.isdir("ds/nope")
    assert fs.isfile("ds/dir/sub/c.bin") and not fs.isfile("ds/dir")


def test_du(fs: TidepoolFileSystem) -> None:
    assert fs.du("ds") == sum(len(v) for v in FILES.values())


# ---- data --------------------------------------------------------------------------------


def test_cat_every_file(fs: TidepoolFileSystem) -> None:
    for rel, data in FILES.items():
        assert fs.cat_file(f"ds/{rel}") == data
        assert fs.cat(f"tidepool://ds/{rel}") == data
    # like LocalFileSystem, cat(dir, recursive=True) would also try the directories; a glob won't
    got = fs.cat("ds/dir/**/*.*")
    assert got == {f"ds/{k}": v for k, v in FILES.items() if k.startswith("dir/")}
    assert fs.cat(["ds/a.txt", "ds/empty.bin"]) == {
        "ds/a.txt": FILES["a.txt"],
        "ds/empty.bin": b"",
    }


RANGES = [
    (0, 1),
    (0, None),
    (None, 10),
    (10, 20),
    (PAGE - 5, PAGE + 5),
    (PAGE, 2 * PAGE),
    (3, 4 * PAGE + 7),
    (-100, None),
    (-PAGE - 3, -2),
    (5, -5),
    (None, -1),
    (-(10**9), 10),
    (len(FILES["big.bin"]) - 1, None),
    (len(FILES["big.bin"]), None),
    (len(FILES["big.bin"]) + 10, len(FILES["big.bin"]) + 20),
    (50, 10),
    (0, 10**12),
]


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_cat_file_ranges(fs: TidepoolFileSystem, start: int | None, end: int | None) -> None:
    data = FILES["big.bin"]
    assert fs.cat_file("ds/big.bin", start=start, end=end) == data[start:end]
    # twice: the second read is served from the worker's cache (or this host's page files)
    assert fs.cat_file("ds/big.bin", start=start, end=end) == data[start:end]


def test_cat_ranges(fs: TidepoolFileSystem) -> None:
    paths = ["ds/big.bin", "ds/dir/b.bin", "ds/a.txt", "ds/big.bin", "ds/empty.bin"]
    starts = [PAGE - 1, 0, 3, -200, 0]
    ends = [3 * PAGE, 1000, -3, None, None]
    got = fs.cat_ranges(paths, starts, ends)
    want = [FILES[p[3:]][s:e] for p, s, e in zip(paths, starts, ends, strict=True)]
    assert got == want
    # an error for one path is returned in place by default, raised with on_error="raise"
    got = fs.cat_ranges(["ds/a.txt", "ds/nope"], 0, 5)
    assert got[0] == FILES["a.txt"][:5] and isinstance(got[1], FileNotFoundError)
    with pytest.raises(FileNotFoundError, match="ds/nope"):
        fs.cat_ranges(["ds/a.txt", "ds/nope"], 0, 5, on_error="raise")


def test_open_seek_read(fs: TidepoolFileSystem) -> None:
    data = FILES["big.bin"]
    with fs.open("ds/big.bin", block_size=PAGE) as f:
        assert f.size == len(data)
        assert f.read(10) == data[:10]
        f.seek(PAGE - 3)
        assert f.tell() == PAGE - 3
        assert f.read(6) == data[PAGE - 3 : PAGE + 3]
        f.seek(-7, os.SEEK_END)
        assert f.read() == data[-7:]
        assert f.read(5) == b""
        f.seek(-PAGE, os.SEEK_CUR)
        assert f.read(PAGE) == data[-PAGE:]
        f.seek(2 * PAGE + 11)
        assert f.read(3 * PAGE) == data[2 * PAGE + 11 : 5 * PAGE + 11]
        f.seek(0)
        assert f.read() == data
    with fs.open("tidepool://ds/dir/sub/d.csv", "rt") as t:
        assert t.readline() == "x,y\n"
        assert t.read() == FILES["dir/sub/d.csv"].decode()[4:]
    with fs.open("ds/empty.bin") as f:
        assert f.read() == b""


def test_head_tail(fs: TidepoolFileSystem) -> None:
    data = FILES["big.bin"]
    assert fs.head("ds/big.bin", 100) == data[:100]
    assert fs.tail("ds/big.bin", 100) == data[-100:]
    assert fs.head("ds/big.bin", 2 * PAGE + 1) == data[: 2 * PAGE + 1]
    assert fs.tail("ds/big.bin", 2 * PAGE + 1) == data[-2 * PAGE - 1 :]
    assert fs.head("ds/a.txt", 10**6) == FILES["a.txt"]
    assert fs.tail("ds/a.txt", 10**6) == FILES["a.txt"]


def test_get_file_to_local(fs: TidepoolFileSystem, tmp_path: Any) -> None:
    fs.get("ds/dir", str(tmp_path / "out"), recursive=True)
    for rel, data in FILES.items():
        if rel.startswith("dir/"):
            assert (tmp_path / "out" / rel[4:]).read_bytes() == data
    fs.get_file("ds/big.bin", str(tmp_path / "big"))
    assert (tmp_path / "big").read_bytes() == FILES["big.bin"]


# ---- entry point and configuration -------------------------------------------------------


def test_fsspec_entry_point(worker: ThreadWorker) -> None:
    assert fsspec.get_filesystem_class("tidepool") is TidepoolFileSystem
    fs = fsspec.filesystem("tidepool", endpoint=worker.endpoint)
    assert isinstance(fs, TidepoolFileSystem)
    assert fs.cat_file("ds/dir/b.bin") == FILES["dir/b.bin"]
    with fsspec.open("tidepool://ds/big.bin", endpoint=worker.endpoint) as f:
        f.seek(PAGE + 1)
        assert f.read(PAGE) == FILES["big.bin"][PAGE + 1 : 2 * PAGE + 1]
    with fsspec.open("tidepool://ds/dir/sub/d.csv", "rt", endpoint=worker.endpoint) as t:
        assert t.read() == FILES["dir/sub/d.csv"].decode()
    files = fsspec.open_files("tidepool://ds/dir/**/*.bin", endpoint=worker.endpoint)
    assert sorted(f.path for f in files) == ["ds/dir/b.bin", "ds/dir/sub/c.bin"]
    for of in files:
        with of as f:
            assert f.read() == FILES[of.path[3:]]
    url_fs, path = fsspec.core.url_to_fs("tidepool://ds/a.txt", endpoint=worker.endpoint)
    assert isinstance(url_fs, TidepoolFileSystem) and path == "ds/a.txt"


def test_endpoint_and_local_reads_from_environment(
    worker: ThreadWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEPOOL_ENDPOINT", worker.endpoint + "/")
    monkeypatch.setenv("TIDEPOOL_LOCAL_READS", "0")
    fs = TidepoolFileSystem(skip_instance_cache=True)
    assert fs.endpoint == worker.endpoint
    assert fs.local_reads is False
    assert fs.cat_file("ds/a.txt") == FILES["a.txt"]
    assert fs._local is None
    # fsspec's instance cache keys on arguments, not the environment: start clean
    TidepoolFileSystem.clear_instance_cache()
    with fsspec.open("tidepool://ds/dir/b.bin") as f:
        assert f.read() == FILES["dir/b.bin"]
    TidepoolFileSystem.clear_instance_cache()
    monkeypatch.setenv("TIDEPOOL_LOCAL_READS", "1")
    assert TidepoolFileSystem(skip_instance_cache=True).local_reads is True
    # explicit arguments win over the environment
    assert TidepoolFileSystem(
        "http://h:1", local_reads=False, skip_instance_cache=True
    ).endpoint == ("http://h:1")


# ---- read-only ---------------------------------------------------------------------------


def test_writes_are_refused_naming_the_path(fs: TidepoolFileSystem, tmp_path: Any) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"data")
    attempts: list[tuple[str, Any]] = [
        ("ds/new.txt", lambda: fs.pipe_file("ds/new.txt", b"x")),
        ("ds/new.txt", lambda: fs.pipe("ds/new.txt", b"x")),
        ("ds/new.txt", lambda: fs.open("ds/new.txt", "wb")),
        ("ds/a.txt", lambda: fs.open("ds/a.txt", "ab")),
        ("ds/new.txt", lambda: fs.touch("ds/new.txt")),
        ("ds/a.txt", lambda: fs.rm_file("ds/a.txt")),
        ("ds/a.txt", lambda: fs.rm("ds/a.txt")),
        ("ds/dir", lambda: fs.rm("ds/dir", recursive=True)),
        ("ds/newdir", lambda: fs.mkdir("ds/newdir")),
        ("ds/newdir/x", lambda: fs.makedirs("ds/newdir/x")),
        ("ds/up.txt", lambda: fs.put_file(str(local), "ds/up.txt")),
        ("ds/up.txt", lambda: fs.put(str(local), "ds/up.txt")),
        ("ds/copy.txt", lambda: fs.cp_file("ds/a.txt", "ds/copy.txt")),
        ("ds/moved.txt", lambda: fs.mv("ds/a.txt", "ds/moved.txt")),
    ]
    for path, attempt in attempts:
        with pytest.raises(PermissionError) as info:
            attempt()
        assert path in str(info.value), (path, info.value)
    # nothing changed
    assert fs.cat_file("ds/a.txt") == FILES["a.txt"]
    assert not fs.exists("ds/new.txt") and not fs.exists("ds/moved.txt")


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["ds/nope.txt", "ds/dir/nope/deeper.bin", "nods/a.txt", "other/a.txt"]
)
def test_missing_path_raises_file_not_found_with_the_path(
    fs: TidepoolFileSystem, path: str
) -> None:
    calls = [fs.info, fs.cat_file, fs.open, lambda p: fs.cat_file(p, 1, 5), fs.ls, fs.size]
    for call in calls:
        with pytest.raises(FileNotFoundError) as info:
            call(f"tidepool://{path}")
        assert info.value.filename == path
        assert path in str(info.value)


def test_directory_is_not_a_file(fs: TidepoolFileSystem) -> None:
    for call in (fs.cat_file, fs.open):
        with pytest.raises(IsADirectoryError) as info:
            call("ds/dir")
        assert "ds/dir" in str(info.value)


def test_unreachable_endpoint_names_it_and_suggests_tidepool_up() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    fs = TidepoolFileSystem(endpoint, skip_instance_cache=True)
    for call in (fs.ls, fs.info, fs.cat_file, fs.open, fs.exists):
        with pytest.raises(ConnectionError) as info:
            call("ds/a.txt")
        message = str(info.value)
        assert endpoint in message and "tidepool up" in message and "TIDEPOOL_ENDPOINT" in message


def test_worker_gone_after_metadata_was_cached(serve: Serve) -> None:
    """A read whose stat was cached still reports the endpoint when the worker has gone."""
    worker = serve({"gone": {"f.bin": b"abc" * 1000}})
    fs = TidepoolFileSystem(worker.endpoint, local_reads=False, skip_instance_cache=True)
    assert fs.info("gone/f.bin")["size"] == 3000
    worker.stop()
    with pytest.raises(ConnectionError) as info:
        fs.cat_file("gone/f.bin")
    assert worker.endpoint in str(info.value) and "tidepool up" in str(info.value)


@pytest.fixture(scope="module")
def token_worker(serve: Serve) -> ThreadWorker:
    return serve({"ds": {"a.txt": FILES["a.txt"], "big.bin": FILES["big.bin"]}}, token=TOKEN)


@pytest.mark.parametrize("token", [None, "wrong-token-value"])
def test_token_is_required(
    token_worker: ThreadWorker,
    token: str | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("TIDEPOOL_TOKEN", raising=False)
    fs = TidepoolFileSystem(token_worker.endpoint, token=token, skip_instance_cache=True)
    calls = [
        lambda: fs.ls("ds"),
        lambda: fs.info("ds/a.txt"),
        lambda: fs.cat_file("ds/a.txt"),
        lambda: fs.open("ds/big.bin"),
        lambda: fs.datasets(),
    ]
    for call in calls:
        with pytest.raises(PermissionError) as info:
            call()
        assert isinstance(info.value, AuthError)
        text = f"{info.value!s} {info.value!r}"
        assert "bearer" in text.lower() and "TIDEPOOL_TOKEN" in text
        assert TOKEN not in text
        if token is not None:
            assert token not in text
    assert caplog.records, "expected the refusals to be logged at debug"
    assert TOKEN not in caplog.text
    if token is not None:
        assert token not in caplog.text


def test_token_is_accepted_and_never_shown(
    token_worker: ThreadWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = TidepoolFileSystem(token_worker.endpoint, token=TOKEN, skip_instance_cache=True)
    assert fs.ls("ds", detail=False) == ["ds/a.txt", "ds/big.bin"]
    assert fs.cat_file("ds/big.bin", PAGE - 1, 2 * PAGE) == FILES["big.bin"][PAGE - 1 : 2 * PAGE]
    with fs.open("ds/big.bin") as f:
        assert f.read() == FILES["big.bin"]
    with pytest.raises(FileNotFoundError) as info:
        fs.cat_file("ds/nope")
    assert TOKEN not in f"{info.value!s} {info.value!r}"
    assert TOKEN not in repr(fs) and TOKEN not in str(fs)
    monkeypatch.setenv("TIDEPOOL_TOKEN", TOKEN)
    env_fs = TidepoolFileSystem(token_worker.endpoint, skip_instance_cache=True)
    assert env_fs.cat_file("ds/a.txt") == FILES["a.txt"]
