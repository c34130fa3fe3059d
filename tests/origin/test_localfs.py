"""``file://`` origins stay inside their mount root: links out of it (to a file or a directory)
are neither listed nor served; links inside it are followed; FIFOs and devices do not exist.

The backend is tested on its own (no servers), then through a real worker and an HTTP client.
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tidepool.core.errors import OriginUnavailableError
from tidepool.core.fileinfo import FileInfo
from tidepool.origin.funnel import Origin
from tidepool.origin.localfs import ConfinedLocalFileSystem
from tidepool.spec.config import DatasetConfig, MountConfig, RuntimeConfig, TierConfig

SECRET = b"the contents of a file outside the dataset"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A dataset root with plain files, links that stay inside, links that leave, a cycle, a FIFO.

    ::

        outside/secret.txt                    SECRET
        outside/dir/deep.txt                  SECRET
        root/a.txt                            "a"
        root/sub/b.txt                        "b"
        root/inside -> sub/b.txt              (followed)
        root/subdir-link -> sub               (followed)
        root/loop -> .                        (followed; find does not enter it)
        root/escape -> ../outside/secret.txt  (absent)
        root/abs-escape -> <tmp>/outside/secret.txt
        root/escape-dir -> ../outside/dir     (absent)
        root/sub/up -> ../../outside          (absent)
        root/dangling -> nowhere              (absent)
        root/fifo                             (absent)
    """
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "dir" / "deep.txt").write_bytes(SECRET)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a")
    (root / "sub" / "b.txt").write_bytes(b"b")
    (root / "inside").symlink_to("sub/b.txt")
    (root / "subdir-link").symlink_to("sub")
    (root / "loop").symlink_to(".")
    (root / "escape").symlink_to("../outside/secret.txt")
    (root / "abs-escape").symlink_to(outside / "secret.txt")
    (root / "escape-dir").symlink_to("../outside/dir")
    (root / "sub" / "up").symlink_to("../../outside")
    (root / "dangling").symlink_to("nowhere")
    os.mkfifo(root / "fifo")
    return root


ABSENT = [
    "escape",
    "abs-escape",
    "escape-dir",
    "escape-dir/deep.txt",
    "sub/up",
    "sub/up/secret.txt",
    "dangling",
    "fifo",
    "../outside/secret.txt",
    "sub/../../outside/secret.txt",
]


@pytest.mark.parametrize("rel", ABSENT)
def test_what_leaves_the_root_does_not_exist(tree: Path, rel: str) -> None:
    fs = ConfinedLocalFileSystem(str(tree))
    path = f"{tree}/{rel}"
    with pytest.raises(FileNotFoundError):
        fs.info(path)
    with pytest.raises(FileNotFoundError):
        fs.cat_file(path)
    with pytest.raises(FileNotFoundError):
        fs.open(path, "rb")


def test_listings_hide_what_leaves_the_root(tree: Path) -> None:
    fs = ConfinedLocalFileSystem(str(tree))
    names = {Path(e["name"]).name: e["type"] for e in fs.ls(str(tree), detail=True)}
    assert names == {
        "a.txt": "file",
        "sub": "directory",
        "inside": "file",
        "subdir-link": "directory",
        "loop": "directory",
    }
    assert {Path(n).name for n in fs.ls(f"{tree}/sub")} == {"b.txt"}
    found = fs.find(str(tree))
    assert all(fs.cat_file(p) != SECRET for p in found)
    rel = {p[len(str(tree)) + 1 :] for p in found}
    # every name that stays inside, each once; the loop (root/loop -> .) is not entered
    assert rel == {"a.txt", "sub/b.txt", "inside", "subdir-link/b.txt"}


@pytest.mark.parametrize("rel", ["", "sub", "subdir-link", "loop", "loop/sub"])
def test_a_listing_stats_each_entry_as_info_does(tree: Path, rel: str) -> None:
    """Differential: ``ls`` stats an entry that is not a link where it is (one ``lstat``) and
    resolves only links; what it answers is exactly what ``info`` says of each entry it can
    see, whichever way the directory itself was reached."""
    fs = ConfinedLocalFileSystem(str(tree))
    path = f"{tree}/{rel}".rstrip("/")
    slow = []
    for name in sorted(os.listdir(path)):
        try:
            slow.append(fs.info(f"{path}/{name}"))
        except FileNotFoundError:
            continue
    assert sorted(fs.ls(path, detail=True), key=lambda i: i["name"]) == slow
    assert sorted(fs.ls(path)) == [i["name"] for i in slow]


def test_links_inside_the_root_are_followed(tree: Path) -> None:
    fs = ConfinedLocalFileSystem(str(tree))
    assert fs.cat_file(f"{tree}/inside") == b"b"
    assert fs.cat_file(f"{tree}/subdir-link/b.txt") == b"b"
    assert fs.cat_file(f"{tree}/loop/loop/a.txt") == b"a"
    info = fs.info(f"{tree}/inside")
    assert (info["name"], info["type"], info["size"]) == (f"{tree}/inside", "file", 1)
    assert fs.cat_file(f"{tree}/a.txt", start=0, end=1) == b"a"
    with fs.open(f"{tree}/sub/b.txt", "rb") as f:
        assert f.read() == b"b"


def test_a_link_swapped_in_after_the_check_is_not_followed(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the path is checked, then a component becomes a link out before the open."""
    fs = ConfinedLocalFileSystem(str(tree))
    real_resolve = fs.resolve

    def resolve_then_swap(path: str) -> str:
        real = real_resolve(path)
        os.rename(tree / "sub", tree / "sub-old")
        (tree / "sub").symlink_to("../outside/dir")
        (tree.parent / "outside" / "dir" / "b.txt").write_bytes(SECRET)
        return real

    monkeypatch.setattr(fs, "resolve", resolve_then_swap)
    with pytest.raises(FileNotFoundError):  # through a link: resolved, then opened
        fs.cat_file(f"{tree}/subdir-link/b.txt")


def test_a_link_swapped_in_during_a_plain_open_is_not_followed(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path with no link is opened along its own components (no ``realpath``); one that
    becomes a link out while it is walked is not followed (``O_NOFOLLOW``): the path is then
    resolved, and leads out."""
    import tidepool.origin.localfs as localfs

    fs = ConfinedLocalFileSystem(str(tree))
    real_open = os.open
    opened: list[str] = []

    def swap_then_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        opened.append(str(path))
        if path == "sub" and not (tree / "sub").is_symlink():
            os.rename(tree / "sub", tree / "sub-old")
            (tree / "sub").symlink_to("../outside/dir")
            (tree.parent / "outside" / "dir" / "b.txt").write_bytes(SECRET)
        return real_open(path, flags, *args, **kw)

    assert fs.cat_file(f"{tree}/sub/b.txt") == b"b"  # plain: no realpath
    monkeypatch.setattr(os.path, "realpath", lambda *a, **k: pytest.fail("realpath called"))
    assert fs.cat_file(f"{tree}/sub/b.txt") == b"b"
    monkeypatch.undo()
    monkeypatch.setattr(localfs.os, "open", swap_then_open)
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{tree}/sub/b.txt")
    assert "sub" in opened


@pytest.mark.parametrize(
    "rel", ["a.txt", "sub/b.txt", "inside", "subdir-link/b.txt", "loop/loop/a.txt", "sub", *ABSENT]
)
def test_a_plain_open_answers_as_a_resolved_one(
    tree: Path, rel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Differential: a path opened along its own components answers the same bytes or the
    same error as the same path resolved whole first (what every open did before)."""

    def outcome(fs: ConfinedLocalFileSystem) -> Any:
        try:
            fd = fs.open_beneath(f"{tree}/{rel}")
        except OSError as exc:
            return type(exc)
        try:
            return os.read(fd, 1 << 16)
        finally:
            os.close(fd)

    plain = outcome(ConfinedLocalFileSystem(str(tree)))
    resolved_only = ConfinedLocalFileSystem(str(tree))
    monkeypatch.setattr(resolved_only, "_open_plain", lambda path: None)
    assert plain == outcome(resolved_only)


def test_the_origin_is_read_only(tree: Path) -> None:
    fs = ConfinedLocalFileSystem(str(tree))
    for call in (
        lambda: fs.rm(f"{tree}/a.txt"),
        lambda: fs.mkdir(f"{tree}/new"),
        lambda: fs.open(f"{tree}/a.txt", "wb"),
    ):
        with pytest.raises(PermissionError):
            call()
    assert (tree / "a.txt").read_bytes() == b"a"


def local_config(root: Path, cache: Path) -> DatasetConfig:
    mount = MountConfig(name="loc", url=f"file://{root}", protocol="file", root=str(root), path="")
    return DatasetConfig(
        name="loc",
        mounts=(mount,),
        runtime=RuntimeConfig(tiers=(TierConfig("SSD", str(cache), 1 << 26),)),
    )


def test_the_funnel_uses_the_confined_backend(tree: Path, tmp_path: Path) -> None:
    async def go() -> tuple[list[FileInfo], bytes]:
        origin = Origin("loc", local_config(tree, tmp_path / "cache").mounts[0])
        await origin.start()
        try:
            with pytest.raises(FileNotFoundError):
                await origin.read("escape", 0, 10)
            with pytest.raises(FileNotFoundError):
                await origin.info("escape-dir/deep.txt")
            return await origin.find(""), await origin.read("inside", 0, 1)
        finally:
            await origin.close()

    found, inside = asyncio.run(go())
    assert inside == b"b"
    assert {f["name"] for f in found} >= {"a.txt", "sub/b.txt", "inside"}
    assert not any("secret" in f["name"] or "deep" in f["name"] for f in found)


def read_file(endpoint: str, rel: str) -> tuple[int, bytes]:
    """Status and body of a worker's answer for file ``rel`` of dataset ``loc``."""
    try:
        with urllib.request.urlopen(f"{endpoint}/v1/datasets/loc/files/{rel}") as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.integration
def test_a_worker_serves_nothing_from_outside_the_root(
    tree: Path, tmp_path: Path, start_worker: Any
) -> None:
    w = start_worker([local_config(tree, tmp_path / "cache")])

    def get(rel: str) -> tuple[int, bytes]:
        return read_file(w.endpoint, rel)

    assert get("inside") == (200, b"b")
    assert get("subdir-link/b.txt") == (200, b"b")
    for rel in ("escape", "abs-escape", "escape-dir/deep.txt", "sub/up/secret.txt", "fifo"):
        status, body = get(rel)
        assert status == 404, rel
        assert SECRET not in body
    with urllib.request.urlopen(f"{w.endpoint}/v1/datasets/loc/find/") as r:
        listing = r.read()
    assert b"secret" not in listing and b"deep" not in listing and b"inside" in listing


def test_a_missing_root_is_an_unavailable_origin_not_deleted_files(
    tree: Path, tmp_path: Path
) -> None:
    """A file missing under the root is missing; with the root itself gone (an unmounted disk,
    a renamed directory) the origin is unavailable, so a worker serves what it knows."""
    away = tmp_path / "away"

    async def go() -> None:
        origin = Origin("loc", local_config(tree, tmp_path / "cache").mounts[0])
        await origin.start()
        try:
            with pytest.raises(FileNotFoundError):
                await origin.info("no-such-file")
            tree.rename(away)
            for call in (
                lambda: origin.info("a.txt"),
                lambda: origin.read("a.txt", 0, 1),
                lambda: origin.find(""),
            ):
                with pytest.raises(OriginUnavailableError, match=r"root directory .* is missing"):
                    await call()
            away.rename(tree)
            assert await origin.read("a.txt", 0, 1) == b"a"
        finally:
            await origin.close()

    asyncio.run(go())


@pytest.mark.integration
def test_a_worker_serves_its_cache_when_the_root_is_gone(
    tree: Path, tmp_path: Path, start_worker: Any
) -> None:
    """Metadata always stale (TTL 0): with the root moved away, a cached file is still served
    and the dataset still listed; a file never cached is unavailable (503), not missing."""
    cfg = local_config(tree, tmp_path / "cache")
    cfg = replace(cfg, runtime=replace(cfg.runtime, metadata_ttl=0.0))
    w = start_worker([cfg])

    def get(rel: str) -> tuple[int, bytes]:
        return read_file(w.endpoint, rel)

    assert get("a.txt") == (200, b"a")
    with urllib.request.urlopen(f"{w.endpoint}/v1/datasets/loc/find/") as r:
        assert b"sub/b.txt" in r.read()
    tree.rename(tmp_path / "away")
    assert get("a.txt") == (200, b"a")
    status, body = get("inside")
    assert status == 503, body
    with urllib.request.urlopen(f"{w.endpoint}/v1/datasets/loc/find/") as r:
        assert b"sub/b.txt" in r.read()
