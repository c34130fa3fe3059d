"""S3 clients configured the one way the testbed's servers need, and a fast bulk upload.

The local S3 servers (``juicefs gateway``, ``rclone serve s3``) differ from AWS in three ways that
every client must be told about, so the settings live here and nowhere else:

* path-style addressing (``http://127.0.0.1:PORT/bucket/key``): there is no DNS for buckets;
* ``request_checksum_calculation`` / ``response_checksum_validation`` = ``"when_required"``:
  botocore >= 1.36 otherwise sends CRC32 trailers and checks response checksums that these
  servers do not implement;
* ``verify=True`` explicitly, so the environment's ``AWS_CA_BUNDLE`` (set on this machine for
  the real cloud) is never consulted; the servers speak plain HTTP anyway.

Limits: meant for the testbed's loopback servers; nothing here retries beyond botocore's
standard mode, and :func:`upload` keeps at most ``2 * concurrency`` objects in memory.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import s3fs

__all__ = [
    "REGION",
    "boto3_client",
    "botocore_config",
    "config_kwargs",
    "s3fs_filesystem",
    "storage_options",
    "upload",
]

log = logging.getLogger(__name__)

REGION = "us-east-1"
"""Region name given to clients; the local servers accept any."""

_CHECKSUMS = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}
_PLAIN_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')


class _HasClient(Protocol):
    def boto3_client(self) -> Any: ...


def config_kwargs(**extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``botocore.config.Config`` (s3fs's ``config_kwargs``)."""
    return {"s3": {"addressing_style": "path"}, **_CHECKSUMS, **extra}


def storage_options(endpoint: str, key: str, secret: str) -> dict[str, Any]:
    """fsspec/s3fs storage options for a testbed S3 server; plain data (YAML/JSON-safe)."""
    return {
        "key": key,
        "secret": secret,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION, "verify": True},
        "config_kwargs": config_kwargs(),
    }


def botocore_config(max_pool_connections: int = 10, **extra: Any) -> Any:
    """A ``botocore.config.Config`` with path style and ``when_required`` checksums."""
    from botocore.config import Config

    return Config(
        max_pool_connections=max_pool_connections,
        retries={"max_attempts": 3, "mode": "standard"},
        **config_kwargs(**extra),
    )


def boto3_client(endpoint: str, key: str, secret: str, max_pool_connections: int = 10) -> Any:
    """A boto3 S3 client for a testbed server (own session: safe to use from many threads)."""
    import boto3

    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=REGION,
        verify=True,
        config=botocore_config(max_pool_connections),
    )


def s3fs_filesystem(
    endpoint: str,
    key: str,
    secret: str,
    *,
    use_listings_cache: bool = False,
    **kw: Any,
) -> s3fs.S3FileSystem:
    """A fresh (never instance-cached) ``s3fs.S3FileSystem`` for a testbed server.

    ``use_listings_cache`` is explicit because s3fs caches listings by default, which hides
    changes made through another client. Extra ``client_kwargs``/``config_kwargs`` in ``kw`` are
    merged over the defaults; other keywords go to ``S3FileSystem`` as they are.
    """
    import s3fs

    options = storage_options(endpoint, key, secret)
    options["client_kwargs"].update(kw.pop("client_kwargs", None) or {})
    options["config_kwargs"].update(kw.pop("config_kwargs", None) or {})
    kw.setdefault("skip_instance_cache", True)
    return s3fs.S3FileSystem(use_listings_cache=use_listings_cache, **options, **kw)


def upload(
    client_or_server: Any | _HasClient,
    bucket: str,
    items: Iterable[tuple[str, bytes]],
    concurrency: int = 8,
) -> dict[str, str]:
    """Put each ``(key, data)`` into ``bucket`` from ``concurrency`` threads; return ``{key: md5}``.

    ``client_or_server`` is a boto3 S3 client or anything with ``boto3_client()`` (an
    :class:`~tidepool_lab.testbed.s3server.S3Server`). ``items`` may be a lazy iterator: at most
    ``2 * concurrency`` objects are held at once. A plain (non-multipart) ETag that differs from
    the data's MD5 raises ``OSError``: the upload did not round-trip.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
    client: Any = (
        client_or_server.boto3_client()
        if hasattr(client_or_server, "boto3_client")
        else client_or_server
    )
    digests: dict[str, str] = {}

    def put(key: str, data: bytes) -> tuple[str, str]:
        md5 = hashlib.md5(data).hexdigest()
        reply = client.put_object(Bucket=bucket, Key=key, Body=data)
        match = _PLAIN_ETAG.match(str(reply.get("ETag", "")))
        if match and match.group(1) != md5:
            raise OSError(f"upload of s3://{bucket}/{key}: ETag {reply['ETag']} != MD5 {md5}")
        return key, md5

    with concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="upload") as pool:
        pending: set[concurrent.futures.Future[tuple[str, str]]] = set()
        for key, data in items:
            if len(pending) >= 2 * concurrency:
                done, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                digests.update(f.result() for f in done)
            pending.add(pool.submit(put, key, data))
        for future in concurrent.futures.as_completed(pending):
            digests.update([future.result()])
    log.info("uploaded %d objects to bucket %s", len(digests), bucket)
    return digests
