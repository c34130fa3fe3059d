"""Run ``tidepool up`` as a child process, the way a user runs it, and learn its endpoint.

The demo, the benchmarks and the integration tests that need a real worker process (SIGKILL and
restart, separate GIL from the measured reader) use this. The child gets its own process group so
stopping it never touches anything else.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from tidepool_lab.testbed import log_tail, stop_process_group

_READY = re.compile(r"serving .* on (https?://\S+)")
_LIMITED = (
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n})); "
    "sys.argv[0] = 'tidepool'; runpy.run_module('tidepool.cli', run_name='__main__')"
)


class WorkerProcess:
    """A ``tidepool up`` child process."""

    def __init__(self, proc: subprocess.Popen[bytes], endpoint: str, log_path: Path) -> None:
        self.proc = proc
        self.endpoint = endpoint
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(
        cls,
        spec_files: list[Path],
        log_path: Path,
        *,
        port: int = 0,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
        max_open_files: int | None = None,
    ) -> WorkerProcess:
        """``max_open_files`` lowers the child's ``RLIMIT_NOFILE`` (to run it out of files)."""
        args = [sys.executable, "-m", "tidepool.cli", "up", "--port", str(port)]
        if max_open_files is not None:
            args[1:3] = ["-c", _LIMITED.format(n=int(max_open_files))]
        for f in spec_files:
            args += ["-f", str(f)]
        args += extra_args or []
        child_env = dict(os.environ)
        child_env.pop("AWS_CA_BUNDLE", None)
        child_env.update(env or {})
        log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = log_path.stat().st_size if log_path.exists() else 0  # a log may be reused
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log_path, "rb") as logf:
                logf.seek(offset)
                m = _READY.search(logf.read().decode(errors="replace"))
            if m:
                return cls(proc, m.group(1), log_path)
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        stop_process_group(proc)
        raise RuntimeError(
            f"tidepool worker did not start (exit code {proc.poll()}); log tail:\n"
            + log_tail(log_path)
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        return stop_process_group(self.proc)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
