"""Fixtures for the S3 gateway tests: one origin bucket, worker and gateway per session.

The gateway runs on its own event loop in a thread (like ``tests.conftest.ThreadWorker``), in front
of an in-process worker reading a real S3 origin (the juicefs gateway). Files are uploaded once:
a few odd keys, a multi-chunk object and 2,500 small keys for paging. A second dataset,
``offline``, points at a closed port: the origin is unreachable and nothing of it is cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from tests.conftest import DatasetFactory, ThreadWorker

from tidepool.gateway import Gateway
from tidepool.origin.funnel import OriginSettings
from tidepool.worker import WorkerSettings
from tidepool_lab.testbed import s3util
from tidepool_lab.testbed.s3server import S3Server, free_port

ACCESS_KEY = "gwtestkey"
SECRET_KEY = "gw-test-secret/with+chars"
CHUNK = 1 << 20  # small streaming chunks so a 5 MiB object crosses several


def _blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


ODD_KEYS = [
    "dir with space/a b.txt",
    "unicode/ünïcödé-日本語.bin",
    "sym/a+b=c&d.txt",
    "sym/percent%20literal.txt",
    "sym/tilde~star*(paren)!$@.txt",
    "sym/colon:semi;comma,'quote'.txt",
    "sym/hash#question?.txt",
]


def build_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {
        "small.txt": b"hello tidepool gateway\n",
        "empty.bin": b"",
        "nested/deep/er/file.bin": _blob(3000, 1),
        "big/five.bin": _blob(5 * CHUNK + 12345, 2),
        "mid/100k.bin": _blob(100 * 1024, 3),
    }
    for i, key in enumerate(ODD_KEYS):
        files[key] = f"odd {i} {key}\n".encode()
    for i in range(2500):
        files[f"many/d{i % 7}/k{i:05d}.txt"] = f"{i}\n".encode()
    return files


class ThreadGateway:
    """A :class:`Gateway` on its own event loop in a thread, so sync clients can call it."""

    def __init__(self, endpoint: str, credentials: dict[str, str], **kw: Any) -> None:
        self.gateway = Gateway(endpoint, None, credentials, port=0, **kw)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.gateway.start())

    def call(self, coro: Any, timeout: float = 60) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    @property
    def url(self) -> str:
        return self.gateway.url

    def stop(self) -> None:
        try:
            self.call(self.gateway.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@dataclass
class Stack:
    origin: S3Server
    bucket: str
    """The origin bucket; the dataset's files live under ``data/``."""
    dataset: str
    files: dict[str, bytes]
    worker: ThreadWorker
    gateway: ThreadGateway

    @property
    def url(self) -> str:
        return self.gateway.url

    def client(self, key: str = ACCESS_KEY, secret: str = SECRET_KEY, **config: Any) -> Any:
        """A boto3 S3 client for the gateway (path style, ``when_required`` checksums)."""
        if not config:
            return s3util.boto3_client(self.url, key, secret)
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name=s3util.REGION,
            verify=True,
            config=s3util.botocore_config(**config),
        )

    def origin_keys(self, prefix: str = "") -> list[str]:
        """Every key of the dataset under ``prefix``, listed straight from the origin."""
        paginator = self.origin.boto3_client().get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"data/{prefix}"):
            keys += [o["Key"][len("data/") :] for o in page.get("Contents", [])]
        return sorted(keys)

    def origin_bytes(self, key: str) -> bytes:
        """The object's bytes read straight from the origin (never through Tidepool)."""
        reply = self.origin.boto3_client().get_object(Bucket=self.bucket, Key=f"data/{key}")
        data: bytes = reply["Body"].read()
        return data

    def origin_md5(self, key: str) -> str:
        return hashlib.md5(self.origin_bytes(key)).hexdigest()


@pytest.fixture(scope="session")
def stack(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    os.environ.pop("AWS_CA_BUNDLE", None)
    tmp = tmp_path_factory.mktemp("gateway")
    files = build_files()
    factory = DatasetFactory(s3_server, tmp)
    # uploads from 8 threads: the juicefs origin takes ~70 small PUTs/s on 2 cores whatever
    # the concurrency, so the 2,500 paging keys cost ~30 s once per session
    cfg = factory(files, name="ds")
    bucket = factory.bucket
    offline = factory(
        {"never-cached.bin": b"x" * 100}, name="offline", endpoint=f"http://127.0.0.1:{free_port()}"
    )
    # the juicefs origin on a busy 2-core machine can be silent for more than the default 1.5 s
    # read timeout while it lists 1,000 keys; the offline dataset still fails at once
    settings = WorkerSettings(
        port=0, state_dir=tmp / "state", origin=OriginSettings(read_timeout=10.0)
    )
    worker = ThreadWorker([cfg, offline], settings)
    try:
        gateway = ThreadGateway(worker.endpoint, {ACCESS_KEY: SECRET_KEY}, chunk_size=CHUNK)
    except BaseException:
        worker.stop()
        raise
    try:
        yield Stack(s3_server, bucket, "ds", files, worker, gateway)
    finally:
        gateway.stop()
        worker.stop()
