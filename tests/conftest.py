"""Shared fixtures: a real S3 server (juicefs gateway), datasets on it, workers in a thread."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from tidepool.core.pages import DEFAULT_PAGE_SIZE
from tidepool.spec.config import DatasetConfig, MountConfig, RuntimeConfig, TierConfig
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.s3util import upload
from tidepool_lab.testbed.specs import S3DatasetSpec

os.environ.pop("AWS_CA_BUNDLE", None)
_bucket_ids = itertools.count(1)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real S3 server (juicefs gateway) for the whole session."""
    server = S3Server.start(tmp_path_factory.mktemp("s3"), kind="juicefs")
    try:
        yield server
    finally:
        server.stop()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class DatasetFactory:
    """Uploads files to a fresh bucket and returns a DatasetConfig that reads them."""

    def __init__(self, server: S3Server, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.objects: dict[str, bytes] = {}

    def __call__(
        self,
        files: dict[str, bytes],
        *,
        name: str = "ds",
        page_size: int = DEFAULT_PAGE_SIZE,
        tiers: tuple[TierConfig, ...] | None = None,
        ttl: float = 60.0,
        endpoint: str | None = None,
        prefetch: Literal["off", "pattern", "dataset"] = "off",
    ) -> DatasetConfig:
        """``prefetch`` is off unless a test asks: most tests count the origin's requests
        exactly, and the worker's prefetch (tests/worker/test_prefetch.py) would add its own."""
        bucket = f"tp-{os.getpid()}-{next(_bucket_ids)}"
        self.server.create_bucket(bucket)
        upload(self.server, bucket, ((f"data/{k}", v) for k, v in files.items()))
        self.bucket = bucket
        opts = self.server.storage_options()
        if endpoint is not None:
            opts = dict(opts)
            opts["client_kwargs"] = {**opts.get("client_kwargs", {}), "endpoint_url": endpoint}
        mount = MountConfig(
            name=name,
            url=f"s3://{bucket}/data/",
            protocol="s3",
            root=f"{bucket}/data",
            path="",
            storage_options=opts,
            secret_values=(self.server.secret_key,),
        )
        if tiers is None:
            tiers = (TierConfig("SSD", str(self.tmp / f"cache-{name}"), 1 << 30),)
        return DatasetConfig(
            name=name,
            mounts=(mount,),
            runtime=RuntimeConfig(
                tiers=tiers, page_size=page_size, metadata_ttl=ttl, prefetch=prefetch
            ),
        )

    def spec_file(self, path: Path, cache: Path, **spec: Any) -> Path:
        """A Dataset/runtime YAML for a ``tidepool up`` process reading the last bucket made (as
        ``ds``, one SSD tier at ``cache``, keys from a secret); ``spec`` overrides
        :class:`~tidepool_lab.testbed.specs.S3DatasetSpec` fields."""
        return S3DatasetSpec(
            url=f"s3://{self.bucket}/data/",
            endpoint=self.server.endpoint,
            cache=cache,
            credentials="secret_doc",
            access_key=self.server.access_key,
            secret_key=self.server.secret_key,
            **spec,
        ).write(path)


@pytest.fixture
def make_dataset(s3_server: S3Server, tmp_path: Path) -> DatasetFactory:
    return DatasetFactory(s3_server, tmp_path)


class ThreadWorker:
    """A Worker running on its own event loop in a thread, so sync clients can call it."""

    def __init__(self, datasets: list[DatasetConfig], settings: Any) -> None:
        from tidepool.worker import Worker

        self.worker = Worker(datasets, settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.worker.start())

    def call(self, coro: Any, timeout: float = 60) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    @property
    def endpoint(self) -> str:
        return self.worker.endpoint

    def stop(self) -> None:
        if self.loop.is_closed():
            return  # stopped already (a test may stop a worker to simulate a failure)
        try:
            self.call(self.worker.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., ThreadWorker]]:
    from tidepool.worker import WorkerSettings

    started: list[ThreadWorker] = []

    def start(datasets: list[DatasetConfig], **kw: Any) -> ThreadWorker:
        kw.setdefault("port", 0)
        kw.setdefault("state_dir", tmp_path / "state")
        settings = WorkerSettings(**kw)
        w = ThreadWorker(datasets, settings)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@dataclass(frozen=True)
class TlsFiles:
    """A private CA and a server certificate it signed for 127.0.0.1 and localhost (PEM)."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path
    """A second CA that signed nothing here: verifying against it must fail."""


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    tmp = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("tidepool test CA")
    _, other_cert = ca("another CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("tidepool test server"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = TlsFiles(tmp / "ca.pem", tmp / "server.pem", tmp / "server.key", tmp / "other.pem")
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.other_ca.write_bytes(other_cert.public_bytes(pem))
    files.cert.write_bytes(cert.public_bytes(pem))
    files.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(files.key, 0o600)
    return files
