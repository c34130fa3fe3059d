"""Tier and state directories are Tidepool's own: created private and marked, never a foreign
directory, never another dataset's unless shared, locked against a second worker."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidepool.core.errors import ConfigError
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore
from tidepool.store.index import INDEX_FILE
from tidepool.store.tierdir import (
    DATASET_MARKER,
    TIER_MARKER,
    TierInUseError,
    claim_tier,
    inspect_tier,
)

from .conftest import PAGE, key, page_files, payload

QUOTA = 64 * (PAGE + 64)
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")


def tier(path: Path, shared: bool = False, medium: str = "SSD") -> TierConfig:
    return TierConfig(medium, str(path), QUOTA, high=1.0, low=1.0, shared=shared)  # type: ignore[arg-type]


def open_store(tiers: list[TierConfig], state: Path, dataset: str = "ds") -> PageStore:
    return PageStore(tiers, state, dataset=dataset, page_size=PAGE, flush_interval=None)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_tier_is_created_private_and_marked(tmp_path: Path) -> None:
    t = tmp_path / "deep" / "tier"
    with open_store([tier(t)], tmp_path / "state") as store:
        k = key(1)
        assert store.put(k, payload(k, 100))
        assert store.tier_roots() == [str(t / "ds")]
        assert (t / TIER_MARKER).is_file() and (t / "ds" / DATASET_MARKER).is_file()
        page = store.locate(k)
        assert page is not None and mode(page) == 0o600
        dirs = [t, t / "ds", t / "ds" / "pages", t / "ds" / "tmp", page.parent, page.parent.parent]
        assert all(mode(d) == 0o700 for d in dirs), {str(d): oct(mode(d)) for d in dirs}
        state = tmp_path / "state"
        assert mode(state) == 0o700
        db = [p for p in state.iterdir() if p.name.startswith(INDEX_FILE)]
        assert db and all(mode(p) == 0o600 for p in db), {p.name: oct(mode(p)) for p in db}


def test_an_empty_existing_directory_is_adopted_and_made_private(tmp_path: Path) -> None:
    t = tmp_path / "empty"
    t.mkdir(mode=0o777)
    os.chmod(t, 0o777)
    with open_store([tier(t)], tmp_path / "state"):
        assert mode(t) == 0o700 and (t / TIER_MARKER).exists()


def test_a_foreign_directory_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A tier pointed at a user's directory: no start, a message naming the directory, what it
    holds and what to do; nothing in it is created, changed or deleted (tmp/thesis.tex above
    all: the old startup emptied <tier>/tmp/)."""
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    thesis = home / "tmp" / "thesis.tex"
    thesis.write_text("\\documentclass{article}")
    (home / "notes.txt").write_text("mine")
    os.chmod(home, 0o755)
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    with pytest.raises(ConfigError) as err:
        open_store([tier(home)], tmp_path / "state")
    message = str(err.value)
    assert str(home) in message and "'notes.txt'" in message and "'tmp'" in message
    assert "not created by Tidepool" in message and "choose a new or empty directory" in message
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == before
    assert thesis.read_text() == "\\documentclass{article}"
    assert mode(home) == 0o755
    assert inspect_tier(tier(home), "ds") == [message]


def test_a_cache_of_an_older_tidepool_is_refused_with_its_own_advice(tmp_path: Path) -> None:
    old = tmp_path / "old"
    for sub in ("pages/ds/ab", "tmp", ".tidepool-state"):
        (old / sub).mkdir(parents=True)
    (old / "pages/ds/ab/ab00.0").write_bytes(b"x" * 40)
    (old / ".tidepool-state/index.sqlite3").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"older Tidepool .* remove those entries"):
        open_store([tier(old)], tmp_path / "state")
    assert (old / "pages/ds/ab/ab00.0").exists()


@as_root
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    t = tmp_path / "theirs"
    t.mkdir()
    os.chown(t, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=f"belongs to uid {NOBODY}, not to this worker's user"):
        open_store([tier(t)], tmp_path / "state")
    assert os.listdir(t) == []
    assert inspect_tier(tier(t), "ds")


def test_fresh_and_own_tiers_pass_inspection(tmp_path: Path) -> None:
    t = tmp_path / "t"
    assert inspect_tier(tier(t), "ds") == []  # missing: will be created
    assert not t.exists()
    with open_store([tier(t)], tmp_path / "state"):
        pass
    assert inspect_tier(tier(t), "ds") == []


# -- one dataset per tier unless shared --------------------------------------------------------


def test_a_second_dataset_is_refused_unless_both_share(tmp_path: Path) -> None:
    t = tmp_path / "t"
    with open_store([tier(t)], tmp_path / "state-a", "images"):
        pass
    with pytest.raises(ConfigError, match=r"already caches dataset\(s\) 'images'.*shared: true"):
        open_store([tier(t, shared=True)], tmp_path / "state-b", "models")
    assert not (t / "models").exists()
    assert inspect_tier(tier(t), "models")
    # images agrees to share (its marker records it); then models may join
    with open_store([tier(t, shared=True)], tmp_path / "state-a", "images"):
        pass
    with pytest.raises(ConfigError, match="'images'"):
        open_store([tier(t, shared=False)], tmp_path / "state-b", "models")
    with open_store([tier(t, shared=True)], tmp_path / "state-b", "models"):
        pass
    assert inspect_tier(tier(t, shared=True), "models") == []


def test_datasets_sharing_a_tier_never_evict_each_other_across_restarts(tmp_path: Path) -> None:
    """The reported bug: two datasets on one tier (and state directory), and after a restart
    one store dropped or evicted the other's pages. Each now lives in its own subdirectory."""
    t = tmp_path / "t"
    small = TierConfig("SSD", str(t), 4 * (PAGE + 32), high=1.0, low=1.0, shared=True)
    data: dict[str, dict[int, bytes]] = {"a": {}, "b": {}}
    for _ in range(2):  # open, fill, close twice: the second round is "after a restart"
        stores = {ds: open_store([small], tmp_path / f"state-{ds}", ds) for ds in data}
        for ds, store in stores.items():
            for n in range(4):
                k = key(n, dataset=ds)
                data[ds][n] = payload(k, PAGE)
                assert store.put(k, data[ds][n])
        for ds, store in stores.items():
            assert store.stats().evictions == 0
            assert all(bytes(store.get(key(n, dataset=ds)) or b"") == data[ds][n] for n in range(4))
            assert len(page_files(t / ds)) == 4
            store.close()


# -- locks ------------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tidepool.spec.config import TierConfig
    from tidepool.store import PageStore
    tier = TierConfig("SSD", sys.argv[1], 1 << 20, high=1.0, low=1.0)
    store = PageStore([tier], Path(sys.argv[2]), dataset="ds", page_size=4096, flush_interval=None)
    print("ready", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the store of tier ``t`` and state ``state``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "t"), str(tmp_path / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def test_a_second_worker_on_the_same_tier_fails_at_once_naming_the_first(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(
        TierInUseError, match=f"in use by another Tidepool worker \\(PID {holder.pid}\\)"
    ):
        open_store([tier(tmp_path / "t")], tmp_path / "other-state")
    with pytest.raises(TierInUseError, match=f"state directory .* \\(PID {holder.pid}\\)"):
        open_store([tier(tmp_path / "t2")], tmp_path / "state")
    holder.send_signal(signal.SIGKILL)  # a crash: the kernel releases the locks
    holder.wait(10)
    with open_store([tier(tmp_path / "t")], tmp_path / "state") as store:
        assert store.tier_roots() == [str(tmp_path / "t" / "ds")]


def test_close_releases_the_locks(tmp_path: Path) -> None:
    t, state = tmp_path / "t", tmp_path / "state"
    store = open_store([tier(t)], state)
    with pytest.raises(TierInUseError):
        claim_tier(tier(t), "ds")  # even in the same process: one owner per directory
    store.close()
    claim_tier(tier(t), "ds").release()
    open_store([tier(t)], state).close()
