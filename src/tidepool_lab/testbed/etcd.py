"""A real etcd server (Debian's ``etcd-server``) on loopback, for membership tests and demos.

Started as a child in its own process group, on free ports, with its own data directory; it can be
stopped and started again on the same ports and data (an outage of the control plane).

The binary is looked up (:func:`etcd_binary`) in ``TIDEPOOL_ETCD_BINARY``, then beside the venv's
python (where ``scripts/system-deps.sh`` unpacks Debian's etcd without installing its service),
then on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from tidepool_lab.testbed import log_tail, stop_process_group
from tidepool_lab.testbed.s3server import free_port


def etcd_binary() -> Path:
    """The etcd executable: ``TIDEPOOL_ETCD_BINARY``, beside ``sys.executable``, then ``PATH``."""
    given = os.environ.get("TIDEPOOL_ETCD_BINARY")
    if given:
        return Path(given)
    beside = Path(sys.executable).parent / "etcd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("etcd")
    if found is None:
        raise FileNotFoundError(
            f"etcd not found beside {sys.executable} or on PATH: run `sh scripts/system-deps.sh "
            ".venv` (it unpacks Debian's etcd binary into .venv/bin without installing the "
            "etcd-server package or its service), or set TIDEPOOL_ETCD_BINARY"
        )
    return Path(found)


class EtcdServer:
    def __init__(self, workdir: Path, client_port: int, peer_port: int) -> None:
        self.workdir = workdir
        self.client_port = client_port
        self.peer_port = peer_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "etcd.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @classmethod
    def start(cls, workdir: Path, timeout: float = 20.0) -> EtcdServer:
        etcd_binary()  # fails early, saying where to get it
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir, free_port(), free_port())
        server.resume(timeout)
        return server

    def resume(self, timeout: float = 20.0) -> None:
        """Start (again) on the same ports and data directory."""
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            str(etcd_binary()),
            "--name",
            "tidepool-test",
            "--data-dir",
            str(self.workdir / "data"),
            "--listen-client-urls",
            self.endpoint,
            "--advertise-client-urls",
            self.endpoint,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"tidepool-test={peer}",
            "--log-level",
            "warn",
        ]
        env = dict(os.environ)
        env.pop("ETCDCTL_API", None)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as r:
                    if b"true" in r.read():
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("etcd did not start; log tail:\n" + log_tail(self.log_path))

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)
            self.proc = None

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
