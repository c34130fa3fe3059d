"""Origin mistakes through the real FUSE mount: refused credentials are EACCES, a missing bucket
ENOENT, and the mount's log names the bucket and the endpoint (never the secret key)."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from tests.fuse.conftest import MountFactory
from tests.worker.test_origin_errors import WRONG_SECRET, with_options

pytestmark = pytest.mark.integration


def test_refused_credentials_are_eacces_and_a_missing_bucket_enoent(
    make_dataset: Any, start_worker: Any, s3_server: Any, mount: MountFactory
) -> None:
    good = make_dataset({"a/one.txt": b"one"}, name="good")
    worker = start_worker(
        [
            good,
            with_options(good, "badsecret", secret=WRONG_SECRET),
            with_options(good, "nobucket", root="no-such-bucket-here/data"),
        ]
    )
    m = mount(["--all"], worker.endpoint)
    with pytest.raises(PermissionError) as refused:
        os.listdir(m.path / "badsecret")
    assert refused.value.errno == errno.EACCES
    with pytest.raises(PermissionError):
        (m.path / "badsecret" / "a" / "one.txt").read_bytes()
    with pytest.raises(FileNotFoundError) as missing:
        os.listdir(m.path / "nobucket")
    assert missing.value.errno == errno.ENOENT
    assert (m.path / "good" / "a" / "one.txt").read_bytes() == b"one"
    log = m.log()
    assert "SignatureDoesNotMatch" in log and s3_server.endpoint in log
    assert "'no-such-bucket-here'" in log
    assert WRONG_SECRET not in log and s3_server.secret_key not in log
