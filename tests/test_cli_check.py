"""``tidepool validate --check`` and the same check at ``tidepool up``, against the real S3 server.

Each origin mistake a new user makes gets its own message: bucket missing, prefix empty,
credentials refused (naming the access key id and the endpoint, never the secret), endpoint
unreachable, TLS expected where the endpoint speaks plain HTTP and the reverse. ``up`` logs the
same finding as a warning and starts anyway (the edge must start without its cloud); a port
already in use says how to pick another.
"""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidepool.cli import main
from tidepool_lab.testbed.s3server import free_port
from tidepool_lab.testbed.specs import S3DatasetSpec
from tidepool_lab.testbed.workerproc import WorkerProcess

pytestmark = pytest.mark.integration

WRONG = "wrong-secret-key-0123456789"


@pytest.fixture
def bucket(make_dataset: Any) -> str:
    make_dataset({"one.txt": b"1", "sub/two.txt": b"22"})
    return str(make_dataset.bucket)


def spec(tmp_path: Path, url: str, endpoint: str, key: str, secret: str, name: str = "ds") -> Path:
    return S3DatasetSpec(
        url=url,
        endpoint=endpoint,
        cache=tmp_path / f"cache-{name}",
        name=name,
        credentials="inline",
        access_key=key,
        secret_key=secret,
    ).write(tmp_path / f"{name}.yaml")


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["validate", "--check", "-f", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_check_passes_for_a_good_origin(
    tmp_path: Path, s3_server: Any, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = spec(tmp_path, f"s3://{bucket}/data/", s3_server.endpoint, "tidepool", "x")
    good.write_text(
        good.read_text().replace("secret.key: x", f"secret.key: {s3_server.secret_key}")
    )
    code, text = check(good, capsys)
    assert code == 0, text
    assert "OK" in text and "all 1 mount(s) answer" in text
    assert s3_server.secret_key not in text


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("no-bucket", ["no-bucket:", "bucket 'no-such-bucket-x' does not exist at"]),
        ("empty", ["empty:", "no objects under s3://", "prefix is missing or empty"]),
        ("wrong-secret", ["refused:", "access key id 'tidepool'", "SignatureDoesNotMatch"]),
        ("wrong-key", ["refused:", "access key id 'nosuchkey'", "InvalidAccessKeyId"]),
        ("unreachable", ["unreachable:", "cannot reach http://127.0.0.1:"]),
        ("https-to-plain", ["tls:", "does not speak TLS", "write http://127.0.0.1:"]),
    ],
)
def test_check_says_exactly_what_is_wrong(
    tmp_path: Path,
    s3_server: Any,
    bucket: str,
    case: str,
    fragments: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint, key, secret = s3_server.endpoint, s3_server.access_key, s3_server.secret_key
    url = f"s3://{bucket}/data/"
    if case == "no-bucket":
        url = "s3://no-such-bucket-x/data/"
    elif case == "empty":
        url = f"s3://{bucket}/nothing-here/"
    elif case == "wrong-secret":
        secret = WRONG
    elif case == "wrong-key":
        key = "nosuchkey"
    elif case == "unreachable":
        endpoint = f"http://127.0.0.1:{free_port()}"
    elif case == "https-to-plain":
        endpoint = endpoint.replace("http://", "https://")
    code, text = check(spec(tmp_path, url, endpoint, key, secret), capsys)
    assert code == 1, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    if case in ("no-bucket", "wrong-secret", "wrong-key", "empty"):
        assert endpoint in text
    assert secret not in text and WRONG not in text
    assert "1 of 1 mount(s) cannot be used" in text


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[int]:
    """An HTTPS server (trustme certificate) on loopback: a plain-HTTP client is turned away."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()), http.server.BaseHTTPRequestHandler
    )
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_check_says_to_write_https_for_a_tls_endpoint(
    tmp_path: Path, tls_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"http://127.0.0.1:{tls_server}"
    code, text = check(spec(tmp_path, "s3://b/p/", endpoint, "k", "secret-123"), capsys)
    assert code == 1, text
    assert "tls:" in text and f"write https://127.0.0.1:{tls_server}" in text, text


def test_an_endpoint_without_scheme_is_a_spec_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = spec(tmp_path, "s3://b/p/", "127.0.0.1:19731", "k", "secret-123")
    assert main(["validate", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "fs.s3a.endpoint" in err
    assert "write http://127.0.0.1:19731 or https://127.0.0.1:19731" in err


def test_up_warns_about_its_origin_and_serves_anyway(
    tmp_path: Path, s3_server: Any, bucket: str
) -> None:
    bad = spec(tmp_path, f"s3://{bucket}/data/", s3_server.endpoint, "tidepool", WRONG, "bad")
    down = spec(tmp_path, "s3://b/p/", f"http://127.0.0.1:{free_port()}", "k", WRONG, "down")
    with WorkerProcess.start([bad, down], tmp_path / "w.log") as w:
        with urllib.request.urlopen(f"{w.endpoint}/healthz", timeout=10) as answer:
            assert answer.status == 200
        # the check is awaited at most 3 s before "serving"; on a busy machine it may end later
        deadline = time.monotonic() + 60
        while True:
            log = (tmp_path / "w.log").read_text()
            if "dataset 'bad'" in log and "dataset 'down'" in log:
                break
            assert time.monotonic() < deadline, log
            time.sleep(0.1)
    assert "origin check: dataset 'bad'" in log and "SignatureDoesNotMatch" in log
    assert s3_server.endpoint in log and "access key id 'tidepool'" in log
    assert "dataset 'down'" in log and "cannot reach" in log and "serving what is cached" in log
    assert WRONG not in log


def test_a_port_in_use_says_how_to_pick_another(tmp_path: Path, s3_server: Any) -> None:
    path = spec(tmp_path, "s3://b/p/", s3_server.endpoint, "k", "secret-123")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tidepool.cli", "up", "-f", str(path), "--port", str(port)],
            capture_output=True,
            env={**os.environ, "TIDEPOOL_STATE_DIR": str(tmp_path / "state")},
            timeout=120,
        )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert f"127.0.0.1:{port} is already in use" in err
    assert "--port" in err and "TIDEPOOL_ENDPOINT=http://127.0.0.1:" in err
    assert "Traceback" not in err
