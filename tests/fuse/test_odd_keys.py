"""The awkward keys, folder markers and moto-only layouts through a real FUSE mount: every file
the mount lists reads the origin's bytes of the key it stands for (:mod:`tidepool.core.keys`),
a folder marker stays a directory after a recursive walk, and no name is listed twice."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.awkward import AWKWARD, ODD, MotoOrigin
from tests.conftest import DatasetFactory, ThreadWorker

from tidepool.core import keys
from tidepool.worker import WorkerSettings

from .conftest import MountFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[ThreadWorker, dict[str, bytes]]]:
    origin = MotoOrigin()
    try:
        files = {**AWKWARD, **ODD}
        cfg = DatasetFactory(origin, tmp_path)(files, name="odd")  # type: ignore[arg-type]
        w = ThreadWorker([cfg], WorkerSettings(port=0, state_dir=tmp_path / "state"))
        try:
            yield w, files
        finally:
            w.stop()
    finally:
        origin.stop()


def test_the_mount_shows_every_key_once_and_reads_it(
    worker: tuple[ThreadWorker, dict[str, bytes]], mount: MountFactory
) -> None:
    w, files = worker
    m = mount(["odd"], w.endpoint)
    root = m.path
    assert stat.S_ISDIR(os.stat(root / "emptydir").st_mode)
    seen: dict[str, bytes] = {}
    for d, _dirs, names in os.walk(root):
        listed = os.listdir(d)
        assert len(listed) == len(set(listed)), f"a name listed twice in {d}: {sorted(listed)}"
        for name in names:
            rel = os.path.relpath(os.path.join(d, name), root)
            seen[keys.to_key(rel)] = Path(d, name).read_bytes()
    want = {k: v for k, v in files.items() if not (k.endswith("/") and not v)}
    assert seen == want
    assert stat.S_ISDIR(os.stat(root / "emptydir").st_mode)  # still, after the walk
    assert os.listdir(root / "emptydir") == []
    assert os.listdir(root).count("photos") == 1
    assert stat.S_ISDIR(os.stat(root / "x" / "file-and-dir").st_mode)
    assert (root / "x" / "~%file-and-dir").read_bytes() == ODD["x/file-and-dir"]
