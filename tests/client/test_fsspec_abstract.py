"""fsspec's shipped abstract test suite, run on ``tidepool://``.

Tidepool is read-only, so only the suites that read from it apply: ``AbstractGetTests`` copies
from ``tidepool://`` to the local disk. The copy/put/pipe/open suites write to the filesystem under
test and are not run. The scenario trees those tests expect are uploaded to the S3 origin once per
class (one prefix per scenario, so each scenario's ``source`` holds exactly its own files), and
their fixtures never call ``fs.rm``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from hashlib import md5
from typing import Any

import pytest
from fsspec.tests.abstract import AbstractFixtures
from fsspec.tests.abstract.get import AbstractGetTests

from tidepool.client import TidepoolFileSystem

from .conftest import Serve, client

pytestmark = pytest.mark.integration

# the trees of fsspec.tests.abstract.BaseAbstractFixtures, below "<prefix>/source"
BULK_0 = ["file1", "file2", "subdir/subfile1", "subdir/subfile2", "subdir/nesteddir/nestedfile"]
GLOB_EDGE = ["file1", "file2"] + [
    f"subdir{i}/{name}"
    for i in range(2)
    for name in ("subfile1", "subfile2", "nesteddir/nestedfile")
]
SAME_PREFIX = ["subdir.txt", "subdir/subfile.txt"]
HASHED = {f"{md5(str(i).encode()).hexdigest()}.txt": str(i).encode() for i in range(10)}

SCENARIOS: dict[str, dict[str, bytes]] = {
    "bulk": dict.fromkeys(BULK_0, b""),
    "glob": dict.fromkeys(GLOB_EDGE, b""),
    "prefix": dict.fromkeys(SAME_PREFIX, b""),
    "hashed": HASHED,
}


class TidepoolFixtures(AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture(scope="class")
    @classmethod
    def fs(cls, serve: Serve) -> Iterator[TidepoolFileSystem]:
        files = {
            f"{prefix}/source/{name}": data
            for prefix, tree in SCENARIOS.items()
            for name, data in tree.items()
        }
        yield client(serve({"ds": files}))

    @pytest.fixture
    def fs_join(self) -> Any:
        return posixpath.join

    @pytest.fixture
    def fs_path(self) -> str:
        return "ds"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False  # an S3 origin has no empty directories

    # the scenarios are in the origin already; tidepool:// is read-only, so no fs.rm afterwards

    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, fs: TidepoolFileSystem) -> str:
        return "ds/bulk/source"

    @pytest.fixture
    def fs_glob_edge_cases_files(self, fs: TidepoolFileSystem) -> str:
        return "ds/glob/source"

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, fs: TidepoolFileSystem) -> str:
        return "ds/prefix/source"

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, fs: TidepoolFileSystem) -> str:
        return "ds/hashed/source"

    @pytest.fixture
    def fs_target(self) -> str:
        pytest.fail("tidepool:// is read-only: no test here may write to it")


class TestTidepoolGet(AbstractGetTests, TidepoolFixtures):  # type: ignore[misc]
    @pytest.mark.skip(
        reason="creates its source with fs.mkdir/fs.touch on the filesystem under test; "
        "tidepool:// is read-only (covered by test_get_directory_recursive_from_origin)"
    )
    def test_get_directory_recursive(self) -> None:  # type: ignore[override]
        pass

    def test_get_directory_recursive_from_origin(
        self, fs: TidepoolFileSystem, local_fs: Any, local_join: Any, local_target: str
    ) -> None:
        """fsspec issue 1062's checks, on a directory that exists in the origin instead."""
        src = "ds/prefix/source/subdir"
        target = local_target
        for loop in range(2):
            fs.get(src, target, recursive=True)
            assert local_fs.isdir(target)
            assert local_fs.isfile(local_join(target, "subfile.txt"))
            if loop == 1:
                assert local_fs.isfile(local_join(target, "subdir", "subfile.txt"))
            else:
                assert not local_fs.exists(local_join(target, "subdir"))
        local_fs.rm(target, recursive=True)
        for _ in range(2):
            fs.get(src + "/", target, recursive=True)
            assert local_fs.isfile(local_join(target, "subfile.txt"))
            assert not local_fs.exists(local_join(target, "subdir"))

    def test_get_bytes_match_origin(
        self, fs: TidepoolFileSystem, local_fs: Any, local_join: Any, local_target: str
    ) -> None:
        fs.get("ds/hashed/source", local_target, recursive=True)
        for name, data in HASHED.items():
            assert local_fs.cat_file(local_join(local_target, name)) == data
