"""The awkward-key fixture and a moto S3 origin, shared by the gateway, FUSE and fault tests.

``AWKWARD`` is what users really upload: spaces, ``+ % ? # &``, unicode in both NFC and NFD, a
long key, 0-byte objects, folder markers (``dir/``, what the S3 console's "Create folder"
writes), a marker next to its own files, deep nesting; ``ODD`` adds what juicefs cannot store
but S3 (and moto) can: ``//`` in a key, a key ending in ``/`` with content, a key that is both
an object and a prefix. ``META`` are objects uploaded with their own HTTP metadata.

:class:`MotoOrigin` is moto in server mode on 127.0.0.1 with the same face as
:class:`~tidepool_lab.testbed.s3server.S3Server` (``endpoint``, ``storage_options()``,
``boto3_client()``, ``create_bucket()``), so :class:`tests.conftest.DatasetFactory` uses it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

from tidepool_lab.testbed import s3util, stop_process_group
from tidepool_lab.testbed.s3server import free_port

AWKWARD: dict[str, bytes] = {
    "plain.txt": b"plain\n",
    "dir with space/a b.txt": b"space\n",
    "sym/a+b=c&d.txt": b"plus\n",
    "sym/percent%20literal.txt": b"percent\n",
    "sym/hash#question?.txt": b"hash\n",
    unicodedata.normalize("NFC", "uni/café.txt"): b"nfc\n",
    unicodedata.normalize("NFD", "uni/café.txt"): b"nfd\n",
    "long/" + "k" * 200 + "/" + "v" * 200 + ".bin": b"long\n",
    "zero.bin": b"",
    "emptydir/": b"",
    "photos/": b"",
    "photos/a.jpg": b"jpeg bytes\n",
    "/".join(f"n{i}" for i in range(10)) + "/deep.txt": b"deep\n",
}

ODD: dict[str, bytes] = {
    "x/y//z": b"double slash\n",
    "x/trail/": b"nineteen bytes here",
    "x/file-and-dir": b"i am a file\n",
    "x/file-and-dir/child": b"i am below it\n",
}

META: dict[str, dict[str, Any]] = {
    "meta/page.html": {"Body": b"<p>hi</p>", "ContentType": "text/html"},
    "meta/doc.bin": {
        "Body": b'{"a": 1}',
        "ContentType": "application/json",
        "CacheControl": "max-age=60",
        "ContentDisposition": 'attachment; filename="doc.json"',
        "ContentEncoding": "identity",
        "Expires": "Wed, 21 Oct 2037 07:28:00 GMT",
        "Metadata": {"owner": "tidepool"},
    },
}

ACCESS_KEY = "motokey"
SECRET_KEY = "motosecret"


class MotoOrigin:
    """moto's S3 server (``moto_server`` from the venv) in a child process of its own: moto keeps
    its state per process, and another test may turn authentication on in this one. Any
    credentials are accepted."""

    kind = "moto"

    def __init__(self) -> None:
        self.port = free_port()
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        exe = Path(sys.executable).parent / "moto_server"
        self._proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError as exc:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"moto_server did not start (exit {self._proc.poll()})"
                    ) from exc
                time.sleep(0.1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict[str, Any]:
        return s3util.storage_options(self.endpoint, self.access_key, self.secret_key)

    def boto3_client(self, max_pool_connections: int = 10) -> Any:
        return s3util.boto3_client(
            self.endpoint, self.access_key, self.secret_key, max_pool_connections
        )

    def create_bucket(self, name: str) -> str:
        self.boto3_client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        stop_process_group(self._proc)


def put_meta(client: Any, bucket: str, prefix: str = "data/") -> None:
    """Upload the ``META`` objects with their own headers."""
    for key, kw in META.items():
        client.put_object(Bucket=bucket, Key=prefix + key, **kw)


def origin_listing(
    client: Any,
    bucket: str,
    prefix: str,
    delimiter: str = "",
    base: str = "data/",
    page_size: int = 1000,
) -> tuple[list[tuple[str, int, str]], list[str]]:
    """``([(key, size, etag)], [common prefix])`` of a ListObjectsV2 listing (``page_size``
    keys a page), keys relative to ``base``."""
    kw: dict[str, Any] = {"Bucket": bucket, "Prefix": base + prefix}
    if delimiter:
        kw["Delimiter"] = delimiter
    objects: list[tuple[str, int, str]] = []
    prefixes: list[str] = []
    pages = client.get_paginator("list_objects_v2").paginate(
        **kw, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        objects += [(o["Key"][len(base) :], o["Size"], o["ETag"]) for o in page.get("Contents", [])]
        prefixes += [p["Prefix"][len(base) :] for p in page.get("CommonPrefixes", [])]
    return objects, prefixes
