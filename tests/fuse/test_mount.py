"""The FUSE mount with a real worker, a real S3 origin and real FUSE: unmodified programs work.

Every byte read through the mount is compared with what was uploaded to the origin.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from tests.fuse.conftest import MountFactory, fuse_mounted

from tidepool.fuse.mount import mount_entry
from tidepool_lab.testbed.images import make_jpegs
from tidepool_lab.testbed.s3util import upload

pytestmark = pytest.mark.integration

PAGE = 256 * 1024


def _tree() -> dict[str, bytes]:
    files = dict(make_jpegs(6, seed=5, target_kib=40))
    files["big/blob.bin"] = os.urandom(3 * (1 << 20) + 12345)  # spans many pages
    files["empty.txt"] = b""
    files["with space/a b.txt"] = b"hello, mount\n" * 100
    files["deep/a/b/c/d.txt"] = b"deep\n"
    return files


def _run(cmd: list[str], cwd: Path | None = None) -> bytes:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=120, check=False)
    assert res.returncode == 0, f"{cmd} failed: {res.stderr.decode(errors='replace')}"
    return res.stdout


@pytest.fixture
def served(make_dataset: Any, start_worker: Any) -> tuple[dict[str, bytes], Any]:
    files = _tree()
    w = start_worker([make_dataset(files, name="ds", page_size=PAGE)])
    return files, w


def test_unmodified_programs_read_every_byte(
    served: tuple[dict[str, bytes], Any], mount: MountFactory, tmp_path: Path
) -> None:
    files, w = served
    mp = mount(["ds"], w.endpoint).path
    want_files = set(files)
    want_dirs = {str(Path(p).parent) for p in files} - {"."}
    want_dirs |= {str(p) for d in want_dirs for p in Path(d).parents} - {"."}

    # ls -R: every name appears
    out = _run(["ls", "-R", str(mp)]).decode()
    for name in want_files:
        assert Path(name).name in out

    # find: exactly the tree
    found = _run(["find", ".", "-type", "f"], cwd=mp).decode().split("\n")
    assert {f[2:] for f in found if f} == want_files
    found_dirs = _run(["find", ".", "-mindepth", "1", "-type", "d"], cwd=mp).decode().split("\n")
    assert {f[2:] for f in found_dirs if f} == want_dirs

    # md5sum: every file
    names = sorted(want_files)
    lines = _run(["md5sum", "--", *names], cwd=mp).decode().splitlines()
    got = {line[34:].lstrip("*"): line[:32] for line in lines}
    assert got == {n: hashlib.md5(files[n]).hexdigest() for n in names}

    # cp -r: a byte-identical copy
    dest = tmp_path / "copy"
    _run(["cp", "-r", str(mp), str(dest)])
    for name, data in files.items():
        assert (dest / name).read_bytes() == data, name

    # tar c | tar t, and the archive's members carry the right bytes
    tar_bytes = _run(["tar", "c", "."], cwd=mp)
    listing = subprocess.run(
        ["tar", "t"], input=tar_bytes, capture_output=True, check=True
    ).stdout.decode()
    assert {n[2:] for n in listing.split() if n.startswith("./") and not n.endswith("/")} >= {
        n for n in want_files if " " not in n
    }
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for name, data in files.items():
            member = tar.extractfile(f"./{name}")
            assert member is not None and member.read() == data, name

    # Pillow opens and decodes a real JPEG in another process
    jpg = next(n for n in names if n.endswith(".jpg"))
    code = (
        "import sys; from PIL import Image; im = Image.open(sys.argv[1]); im.load(); "
        "print(im.format, im.size[0], im.size[1])"
    )
    fmt = _run([sys.executable, "-c", code, str(mp / jpg)]).decode().split()
    assert fmt[0] == "JPEG" and int(fmt[1]) > 0

    # python -c with plain open()
    code = "import sys, hashlib; print(hashlib.md5(open(sys.argv[1], 'rb').read()).hexdigest())"
    big = mp / "big/blob.bin"
    assert (
        _run([sys.executable, "-c", code, str(big)]).decode().strip()
        == hashlib.md5(files["big/blob.bin"]).hexdigest()
    )


def test_random_reads_stat_and_reopen(
    served: tuple[dict[str, bytes], Any], mount: MountFactory
) -> None:
    files, w = served
    mp = mount(["ds"], w.endpoint).path
    data = files["big/blob.bin"]
    st = os.stat(mp / "big/blob.bin")
    assert st.st_size == len(data) and st.st_mode & 0o777 == 0o444
    assert os.stat(mp / "empty.txt").st_size == 0
    assert (mp / "empty.txt").read_bytes() == b""
    fd = os.open(mp / "big/blob.bin", os.O_RDONLY)
    try:
        for off, n in [(0, 10), (PAGE - 3, 7), (len(data) - 5, 100), (1234567, 300000), (0, 0)]:
            assert os.pread(fd, n, off) == data[off : off + n], (off, n)
        assert os.pread(fd, 10, len(data) + 10) == b""
    finally:
        os.close(fd)
    for _ in range(3):  # re-opens (kernel page cache kept while the version is unchanged)
        assert (mp / "big/blob.bin").read_bytes() == data


@pytest.mark.skipif(os.geteuid() != 0, reason="raising read-ahead needs root (sysfs)")
def test_kernel_read_ahead_is_raised(
    served: tuple[dict[str, bytes], Any], mount: MountFactory
) -> None:
    _, w = served
    mp = mount(["ds"], w.endpoint).path
    entry = mount_entry(mp)
    assert entry is not None
    knob = Path("/sys/class/bdi") / entry[0] / "read_ahead_kb"
    deadline = time.monotonic() + 10
    while knob.read_text().strip() != "8192" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert knob.read_text().strip() == "8192"


def test_errno_mapping_enoent_and_erofs(
    served: tuple[dict[str, bytes], Any], mount: MountFactory
) -> None:
    files, w = served
    mp = mount(["ds"], w.endpoint).path
    with pytest.raises(FileNotFoundError):
        (mp / "nope.txt").read_bytes()
    with pytest.raises(FileNotFoundError):
        os.stat(mp / "deep/a/missing")
    with pytest.raises(NotADirectoryError):
        os.listdir(mp / "empty.txt")

    def erofs(fn: Any, *args: Any) -> None:
        with pytest.raises(OSError) as info:
            fn(*args)
        assert info.value.errno == errno.EROFS, (fn, args, info.value)

    erofs(open, mp / "new.txt", "wb")
    erofs(open, mp / "empty.txt", "ab")
    erofs(os.open, mp / "empty.txt", os.O_RDWR)
    erofs(os.mkdir, mp / "newdir")
    erofs(os.unlink, mp / "empty.txt")
    erofs(os.rmdir, mp / "deep/a/b/c")
    erofs(os.rename, mp / "empty.txt", mp / "moved.txt")
    erofs(os.chmod, mp / "empty.txt", 0o644)
    erofs(os.truncate, mp / "empty.txt", 0)
    erofs(os.symlink, "empty.txt", mp / "link")
    for _ in range(2):  # no xattr support (ENOSYS): the kernel answers EOPNOTSUPP itself
        for fn, args in ((os.listxattr, ()), (os.getxattr, ("user.x",))):
            with pytest.raises(OSError) as info:
                fn(mp / "empty.txt", *args)
            assert info.value.errno == errno.EOPNOTSUPP, (fn, info.value)
    assert sorted(os.listdir(mp)) == sorted({n.split("/")[0] for n in files})


def test_origin_unreachable_is_eio_and_the_mount_keeps_working(
    make_dataset: Any, start_worker: Any, mount: MountFactory
) -> None:
    good = {"ok.txt": b"reachable\n" * 1000}
    w = start_worker(
        [
            make_dataset(good, name="good"),
            make_dataset({"x.bin": b"x" * 5000}, name="bad", endpoint="http://127.0.0.1:9"),
        ]
    )
    m = mount(["--all"], w.endpoint)
    mp = m.path
    assert sorted(os.listdir(mp)) == ["bad", "good"]
    t0 = time.monotonic()
    with pytest.raises(OSError) as info:
        (mp / "bad/x.bin").read_bytes()
    assert info.value.errno == errno.EIO
    assert time.monotonic() - t0 < 20, "an unreachable origin must fail fast, not hang"
    with pytest.raises(OSError) as info:
        os.listdir(mp / "bad")
    assert info.value.errno == errno.EIO
    assert (mp / "good/ok.txt").read_bytes() == good["ok.txt"]
    log = m.log()
    assert "EIO" in log and "bad/x.bin" in log, log


def test_all_datasets_under_one_root(
    make_dataset: Any, start_worker: Any, mount: MountFactory
) -> None:
    a = {"a1.txt": b"a" * 10, "sub/a2.txt": b"aa" * 10}
    b = {"b1.txt": b"b" * 20}
    w = start_worker([make_dataset(a, name="alpha"), make_dataset(b, name="beta")])
    mp = mount(["--all"], w.endpoint).path
    assert sorted(os.listdir(mp)) == ["alpha", "beta"]
    assert sorted(os.listdir(mp / "alpha")) == ["a1.txt", "sub"]
    for name, data in a.items():
        assert (mp / "alpha" / name).read_bytes() == data
    for name, data in b.items():
        assert (mp / "beta" / name).read_bytes() == data
    with pytest.raises(FileNotFoundError):
        os.stat(mp / "gamma")


def test_sigkill_leaves_a_stale_mount_that_the_next_mount_recovers(
    served: tuple[dict[str, bytes], Any], mount: MountFactory
) -> None:
    files, w = served
    m = mount(["ds"], w.endpoint)
    assert (m.path / "empty.txt").exists()
    m.kill()
    assert fuse_mounted(m.path)
    with pytest.raises(OSError) as info:
        os.listdir(m.path)
    assert info.value.errno == errno.ENOTCONN  # "Transport endpoint is not connected"
    m2 = mount(["ds"], w.endpoint, mountpoint=m.path)
    assert "crashed mount" in m2.log()
    assert (m2.path / "with space/a b.txt").read_bytes() == files["with space/a b.txt"]


def test_a_changed_origin_object_is_read_fresh_after_the_ttl(
    make_dataset: Any, start_worker: Any, mount: MountFactory
) -> None:
    cfg = make_dataset({"v.txt": b"version one\n"}, name="ds", ttl=1.0)
    w = start_worker([cfg])
    mp = mount(["ds"], w.endpoint).path
    assert (mp / "v.txt").read_bytes() == b"version one\n"
    assert (mp / "v.txt").read_bytes() == b"version one\n"  # kept in the page cache
    upload(make_dataset.server, make_dataset.bucket, [("data/v.txt", b"version two, longer\n")])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if (mp / "v.txt").read_bytes() == b"version two, longer\n":
            break
        time.sleep(0.3)
    assert (mp / "v.txt").read_bytes() == b"version two, longer\n"
    assert os.stat(mp / "v.txt").st_size == len(b"version two, longer\n")


def test_bad_arguments_and_unknown_dataset(
    served: tuple[dict[str, bytes], Any], tmp_path: Path
) -> None:
    _, w = served
    mp = tmp_path / "m"
    mp.mkdir()
    base = [sys.executable, "-m", "tidepool.fuse"]
    res = subprocess.run([*base, str(mp)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--all" in res.stderr
    res = subprocess.run(
        [*base, "nosuch", str(mp), "--endpoint", w.endpoint],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "nosuch" in res.stderr and "ds" in res.stderr
    res = subprocess.run(
        [*base, "ds", str(tmp_path / "missing"), "--endpoint", w.endpoint],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1 and "does not exist" in res.stderr
    assert not fuse_mounted(mp)


def _fds_to(pid: int, suffix: str) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").endswith(suffix)
        except OSError:
            continue
    return n


def test_an_open_file_reads_its_extent_through_one_descriptor(
    make_dataset: Any, start_worker: Any, mount: MountFactory
) -> None:
    """A large file held whole is one extent (issue 18): the mount keeps it open while the file
    is, reads every byte from it, and lets it go on release."""
    blob = os.urandom(5 * PAGE + 777)
    w = start_worker([make_dataset({"model.bin": blob}, name="ds", page_size=PAGE)])
    svc = w.worker.services["ds"]
    svc.store.extent_min_bytes = 2 * PAGE
    from tidepool.client import TidepoolFileSystem

    cold = TidepoolFileSystem(w.endpoint, local_reads=False, skip_instance_cache=True)
    assert cold.cat_file("ds/model.bin") == blob  # the worker fetches and keeps it
    w.call(svc.flush_writes())
    m = mount(["ds"], w.endpoint)
    extents = [p for root in svc.store.tier_roots() for p in Path(root).rglob("*.x")]
    assert len(extents) == 1
    with open(m.path / "model.bin", "rb", buffering=0) as f:
        assert os.pread(f.fileno(), 100, 3 * PAGE) == blob[3 * PAGE : 3 * PAGE + 100]
        assert _fds_to(m.proc.pid, ".x") == 1
        assert f.read() == blob
    deadline = time.monotonic() + 10
    while _fds_to(m.proc.pid, ".x") and time.monotonic() < deadline:
        time.sleep(0.05)  # release reaches the mount after close returns
    assert _fds_to(m.proc.pid, ".x") == 0
