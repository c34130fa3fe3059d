"""A read error drops a page only on proof the page is bad; an error that may pass keeps it.

Proof: a header, length or checksum that differs from what the index recorded when the page was
written, or no page file at the path (gone, or a link planted there). Anything else — running out
of file descriptors above all (EMFILE/ENFILE), which slow clients can cause — is a miss that keeps
the page. Descriptors are really exhausted, under a lowered ``RLIMIT_NOFILE`` in a child process.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tidepool.core.pages import HEADER_SIZE, encode_header
from tidepool.spec.config import TierConfig
from tidepool.store.tiers import proves_no_page

from .conftest import PAGE, StoreFactory, key, payload

EXHAUST = textwrap.dedent(
    """
    import json, os, resource, sys
    from pathlib import Path
    from tidepool.core.pages import PageKey
    from tidepool.spec.config import TierConfig
    from tidepool.store import PageStore

    root = Path(sys.argv[1])
    tier = TierConfig("SSD", str(root / "tier"), 1 << 24, high=1.0, low=1.0)
    store = PageStore([tier], root / "state", dataset="ds", page_size=4096, flush_interval=None)
    k = PageKey("ds", "ab" * 16, 0)
    data = bytes(range(256)) * 16
    assert store.put(k, data)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == 24, exc  # EMFILE: the process is out of descriptors
    during = store.get(k)
    stats = store.stats()
    result = {
        "during": None if during is None else len(during),
        "read_errors": stats.read_errors,
        "corrupt": stats.corrupt,
        "contains": store.contains(k),
        "file": os.path.exists(str(store.locate(k))),
    }
    for fd in held:
        os.close(fd)
    after = store.get(k)
    result["after_ok"] = after is not None and bytes(after) == data
    store.close()
    print(json.dumps(result))
    """
)


def test_out_of_file_descriptors_keeps_the_page(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", EXHAUST, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "during": None,  # a miss while out of descriptors ...
        "read_errors": 1,  # ... counted as a transient error,
        "corrupt": 0,  # not as corruption,
        "contains": True,  # and the page stays indexed
        "file": True,  # and on disk,
        "after_ok": True,  # and is served again once descriptors are back
    }


@pytest.mark.parametrize(
    "code",
    [errno.EMFILE, errno.ENFILE, errno.EINTR, errno.ENOMEM, errno.EIO, errno.EACCES, errno.EAGAIN],
)
def test_errors_that_may_pass_prove_nothing(code: int) -> None:
    assert not proves_no_page(OSError(code, os.strerror(code)))


@pytest.mark.parametrize("code", [errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENOTDIR])
def test_errors_that_prove_no_page_file(code: int) -> None:
    assert proves_no_page(OSError(code, os.strerror(code)))


def test_flipped_bytes_drop_the_page(make_store: StoreFactory) -> None:
    store = make_store()
    k = key(1)
    assert store.put(k, payload(k, PAGE))
    path = store.locate(k)
    assert path is not None
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + 7] ^= 0x01
    path.write_bytes(bytes(raw))
    assert store.get(k) is None
    assert (store.stats().corrupt, store.stats().read_errors) == (1, 0)
    assert not store.contains(k) and not path.exists()


def test_a_planted_page_with_a_valid_own_checksum_is_not_served(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    """Same length, header and checksum consistent with its own bytes: only the index's checksum,
    recorded when the real page was written, tells it apart."""
    store = make_store()
    k = key(1)
    real = payload(k, 1000)
    assert store.put(k, real)
    path = store.locate(k)
    assert path is not None
    evil = b"EVIL-bytes!" * 90 + b"0123456789"
    assert len(evil) == len(real)
    path.write_bytes(encode_header(evil) + evil)
    assert store.get(k) is None
    assert store.stats().corrupt == 1 and not store.contains(k)
    assert store.put(k, real)  # the next fetch caches the real page
    assert bytes(store.get(k) or b"") == real


def test_a_link_planted_at_a_page_path_is_not_followed(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store()
    k = key(1)
    real = payload(k, 1000)
    assert store.put(k, real)
    path = store.locate(k)
    assert path is not None
    target = tmp_path / "elsewhere"
    target.write_bytes(path.read_bytes())  # even a copy of the right page
    path.unlink()
    path.symlink_to(target)
    assert store.get(k) is None
    assert store.stats().corrupt == 1 and not store.contains(k)
    assert not path.is_symlink() and target.read_bytes()  # the link is removed, not its target
