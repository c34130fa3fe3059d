"""A real etcd server (Debian's ``etcd-server``) on loopback, for membership tests and demos.

Started as a child in its own process group, on free ports, with its own data directory; it can be
stopped and started again on the same ports and data (an outage of the control plane).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from tidepool_lab.testbed import log_tail, stop_process_group
from tidepool_lab.testbed.s3server import free_port


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
        binary = shutil.which("etcd")
        if binary is None:
            raise FileNotFoundError(
                "etcd not found: install Debian's etcd-server (scripts/system-deps.sh does)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir, free_port(), free_port())
        server.resume(timeout)
        return server

    def resume(self, timeout: float = 20.0) -> None:
        """Start (again) on the same ports and data directory."""
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            shutil.which("etcd") or "etcd",
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
