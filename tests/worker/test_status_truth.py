"""``status`` is true in every state, against the real S3 server.

A dataset of empty files, an empty or missing prefix, a missing bucket, refused credentials, a
worker restarted while its origin is unreachable: each gets numbers that are right and an origin
state that names the problem — never "CACHED 100%" for a missing prefix, never "[Calculating]"
forever with the origin "reachable", never 0 % for a fully cached dataset after a restart.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import pytest
from tests.worker.test_origin_errors import WRONG_SECRET, with_options

from tidepool.client import TidepoolFileSystem
from tidepool_lab.testbed.s3server import free_port

pytestmark = pytest.mark.integration


def client(worker: Any) -> TidepoolFileSystem:
    return TidepoolFileSystem(worker.endpoint, local_reads=False, skip_instance_cache=True)


def test_states_of_a_broken_or_empty_origin(
    make_dataset: Any, start_worker: Any, s3_server: Any
) -> None:
    good = make_dataset({"a.txt": b"a" * 1000}, name="good")
    zero = make_dataset({"empty1": b"", "d/empty2": b""}, name="zero")
    worker = start_worker(
        [
            good,
            zero,
            with_options(good, "noprefix", root=f"{make_dataset.bucket}/nothing-here"),
            with_options(good, "nobucket", root="no-such-bucket-here/data"),
            with_options(good, "refused", secret=WRONG_SECRET),
        ]
    )
    fs = client(worker)
    status = {n: fs.status(n) for n in ("good", "zero", "noprefix", "nobucket", "refused")}

    assert status["good"]["origin"]["state"] == "reachable"
    assert (status["good"]["ufsTotal"], status["good"]["cacheStates"]["cachedPercentage"]) == (
        "1000 B",
        "0.0%",
    )
    # files of 0 bytes: nothing to fetch, all of it is cached
    assert (status["zero"]["ufsTotal"], status["zero"]["fileNum"]) == ("0 B", "2")
    assert status["zero"]["cacheStates"]["cachedPercentage"] == "100.0%"

    empty = status["noprefix"]
    assert empty["origin"]["state"] == "empty"
    assert "nothing-here" in empty["origin"]["message"]
    assert empty["cacheStates"]["cachedPercentage"] == "-"  # never 100 % of nothing

    for name, state in (("nobucket", "no-bucket"), ("refused", "refused")):
        s = status[name]
        assert s["origin"]["state"] == state, s["origin"]
        assert s3_server.endpoint in s["origin"]["message"]
        assert s["ufsTotal"] == "[Unknown]" and s["cacheStates"]["cachedPercentage"] == "-"
        assert WRONG_SECRET not in str(s)
    assert "'no-such-bucket-here'" in status["nobucket"]["origin"]["message"]
    assert "SignatureDoesNotMatch" in status["refused"]["origin"]["message"]


def test_cached_percentage_survives_a_restart_while_offline(
    make_dataset: Any, start_worker: Any
) -> None:
    files = {f"f{i}.bin": os.urandom(50_000 + i) for i in range(6)}
    cfg = make_dataset(files, name="ds", page_size=64 * 1024)
    first = start_worker([cfg])
    fs = client(first)
    job = fs.start_load("ds", [])
    deadline = time.monotonic() + 120
    while fs.load_progress(job["id"])["phase"] not in ("Complete", "Incomplete", "Failed"):
        assert time.monotonic() < deadline, "load did not finish"
        time.sleep(0.1)
    before = fs.status("ds")
    assert before["cacheStates"]["cachedPercentage"] == "100.0%"
    first.stop()

    # the same cache and state, the origin now unreachable (a closed port)
    (mount,) = cfg.mounts
    opts = dict(mount.storage_options)
    opts["client_kwargs"] = {
        **opts["client_kwargs"],
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
    }
    offline = dataclasses.replace(cfg, mounts=(dataclasses.replace(mount, storage_options=opts),))
    second = start_worker([offline])
    after = client(second).status("ds")
    assert after["origin"]["state"] == "unreachable"
    assert after["ufsTotal"] == before["ufsTotal"] and after["fileNum"] == "6"
    assert after["cacheStates"]["cachedPercentage"] == "100.0%"
    assert after["ufsTotalAsOf"]  # says the total is the last one measured
    assert after["raw"]["ufs_total_bytes"] == sum(len(v) for v in files.values())
