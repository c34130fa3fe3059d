"""``tidepool gateway`` as a command: flags, credentials, a real process stopped by SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tidepool.core.errors import ConfigError
from tidepool.gateway.cli import add_gateway_args, load_credentials, parse_listen
from tidepool.spec.credentials import resolve_secret
from tidepool_lab.testbed import s3util
from tidepool_lab.testbed.s3server import free_port

from .conftest import Stack


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("9000", "host:", ":9000", "h:99999", "h:x"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            parse_listen(bad)


def test_credentials(tmp_path: Path) -> None:
    assert load_credentials("a", "b", None) == {"a": "b"}
    f = tmp_path / "creds"
    f.write_text("# keys\nk1:s1\n\n k2 : s2:with:colons \n")
    assert load_credentials("a", "b", f) == {"a": "b", "k1": "s1", "k2": "s2:with:colons"}
    with pytest.raises(ConfigError, match="needs credentials"):
        load_credentials(None, None, None)
    with pytest.raises(ConfigError, match="both"):
        load_credentials("a", None, None)
    f.write_text("no-colon\n")
    with pytest.raises(ConfigError, match=r"creds:1: expected ACCESS:SECRET"):
        load_credentials(None, None, f)


def test_flags_default_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEPOOL_GATEWAY_ACCESS_KEY", "envkey")
    monkeypatch.setenv("TIDEPOOL_GATEWAY_SECRET_KEY", "envsecret")
    monkeypatch.setenv("TIDEPOOL_ENDPOINT", "http://127.0.0.1:1234")
    parser = argparse.ArgumentParser()
    add_gateway_args(parser)
    args = parser.parse_args([])
    assert (args.access_key, args.endpoint) == ("envkey", "http://127.0.0.1:1234")
    assert args.secret_key is None  # secrets never become flag defaults (no warning, no ps)
    secret = resolve_secret(
        args.secret_key,
        args.secret_key_file,
        os.environ,
        name="secret-key",
        env="TIDEPOOL_GATEWAY_SECRET_KEY",
    )
    assert secret == "envsecret"
    assert args.listen == "127.0.0.1:9000"


def gateway_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tidepool.gateway.cli", *args]


def test_refuses_to_start_without_credentials() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEPOOL_GATEWAY_")}
    done = subprocess.run(gateway_cmd(), env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2 and b"needs credentials" in done.stderr


@pytest.mark.integration
def test_serves_and_stops_on_sigterm(stack: Stack) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(TIDEPOOL_GATEWAY_ACCESS_KEY="cli-key", TIDEPOOL_GATEWAY_SECRET_KEY="cli-secret")
    cmd = gateway_cmd("--listen", f"127.0.0.1:{port}", "--endpoint", stack.worker.endpoint)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.strip() == f"tidepool gateway serving on http://127.0.0.1:{port}"
        client = s3util.boto3_client(f"http://127.0.0.1:{port}", "cli-key", "cli-secret")
        assert "ds" in [b["Name"] for b in client.list_buckets()["Buckets"]]
        assert client.get_object(Bucket="ds", Key="small.txt")["Body"].read() == (
            stack.origin_bytes("small.txt")
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert b"Traceback" not in log and b"cli-secret" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
