"""Pool peers are authenticated: their own credential, signed etcd entries, optional TLS.

Real workers (in threads) against the real S3 origin; a real etcd; a real HTTP server standing in
for a rogue member, which records whatever reaches it.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.conftest import TlsFiles
from tests.pool.poolkit import per_worker, static_members

from tidepool.core.errors import ConfigError
from tidepool.core.ring import Member, file_key, owners
from tidepool.pool.entries import encode_entry
from tidepool.worker import Worker, WorkerSettings
from tidepool_lab.testbed.etcd import EtcdServer
from tidepool_lab.testbed.s3server import free_port

pytestmark = pytest.mark.integration

TOKEN = "client-token-0123456789"
PEER = "peer-credential-9876543210"
FILES = {f"f{i:02d}.bin": os.urandom(20_000 + i) for i in range(24)}
PREFIX = "/tidepool/v1/pools/pool-a/members/"


def get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- the peer credential -----------------------------------------------------------------------


def test_the_peer_header_needs_the_peer_credential(make_dataset: Any, start_worker: Any) -> None:
    w = start_worker([make_dataset(FILES)], token=TOKEN, peer_token=PEER)
    url = f"{w.endpoint}/v1/datasets/ds/files/f00.bin"
    client, peer = f"Bearer {TOKEN}", f"Bearer {PEER}"
    assert get(url, {"Authorization": client}) == (200, FILES["f00.bin"])
    for headers in (
        {"Authorization": client, "X-Tidepool-Peer": "w9"},  # a client posing as a peer
        {"X-Tidepool-Peer": "w9"},
        {"Authorization": "Bearer guess", "X-Tidepool-Peer": "w9"},
        {"Authorization": f"Basic {PEER}", "X-Tidepool-Peer": "w9"},
    ):
        status, body = get(url, headers)
        assert status == 403, headers
        answer = json.loads(body)
        assert answer["error"] == "Forbidden" and "peer credential" in answer["message"]
        assert PEER not in answer["message"] and TOKEN not in answer["message"]
    assert get(url, {"Authorization": peer, "X-Tidepool-Peer": "w9"}) == (200, FILES["f00.bin"])
    assert get(url, {"Authorization": peer})[0] == 401  # not a client token


def test_a_worker_without_the_peer_credential_serves_no_peer(
    make_dataset: Any, start_worker: Any
) -> None:
    w = start_worker([make_dataset(FILES)], token=TOKEN)
    url = f"{w.endpoint}/v1/datasets/ds/files/f00.bin"
    assert get(url, {"Authorization": f"Bearer {TOKEN}", "X-Tidepool-Peer": "w9"})[0] == 403
    assert get(url, {"X-Tidepool-Peer": "w9"})[0] == 403


def test_pool_membership_requires_a_separate_peer_credential(make_dataset: Any) -> None:
    cfg = make_dataset(FILES)
    with pytest.raises(ConfigError, match="needs the pool's peer credential"):
        Worker([cfg], WorkerSettings(members="static:a=http://127.0.0.1:1", nodepool="p"))
    with pytest.raises(ConfigError, match="needs the pool's peer credential"):
        Worker([cfg], WorkerSettings(etcd=("http://127.0.0.1:1",), nodepool="p"))
    with pytest.raises(ConfigError, match="equals the clients' token"):
        Worker([cfg], WorkerSettings(token=TOKEN, peer_token=TOKEN))
    assert "peer-credential" not in repr(WorkerSettings(peer_token=PEER))


# -- signed etcd entries -----------------------------------------------------------------------


class Recorder(http.server.ThreadingHTTPServer):
    """An HTTP server that records every request and answers with bytes of its own."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                recorder.seen.append((self.command, self.path, dict(self.headers)))
                body = b"EVIL-bytes!"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def rogue() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    # no skip: `make test` unpacks etcd beside the venv's python (off PATH), and a missing
    # etcd must fail the suite, saying where to get it (EtcdServer.start)
    server = EtcdServer.start(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop()


def etcd_put(etcd: EtcdServer, key: str, value: str) -> None:
    import base64

    body = json.dumps(
        {
            "key": base64.b64encode(key.encode()).decode(),
            "value": base64.b64encode(value.encode()).decode(),
        }
    ).encode()
    req = urllib.request.Request(f"{etcd.endpoint}/v3/kv/put", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def wait_for(pred: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_rogue_etcd_entries_are_ignored(
    make_dataset: Any,
    start_worker: Any,
    tmp_path: Path,
    etcd: EtcdServer,
    rogue: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Anyone with write access to etcd puts members pointing at their server: unsigned, signed
    with a guessed credential, an entry of another pool that shares the credential, or a real
    member's entry replayed under another name. No worker takes them in, so the rogue gets no
    request (and no credential), and every byte read comes from the origin or a real member."""
    cfg = make_dataset(FILES)
    ports = {"w0": free_port(), "w1": free_port()}
    rogues = {
        "unsigned": json.dumps({"name": "unsigned", "address": rogue.url, "pool": "pool-a"}),
        "guessed": encode_entry(Member("guessed", rogue.url, "pool-a"), "guess"),
        "other-pool": encode_entry(Member("other-pool", rogue.url, "pool-b"), PEER),
        "copied": encode_entry(Member("w1", f"http://127.0.0.1:{ports['w1']}", "pool-a"), PEER),
    }
    for name, value in rogues.items():
        etcd_put(etcd, PREFIX + name, value)

    def start(name: str) -> Any:
        return start_worker(
            [per_worker(cfg, tmp_path, name)],
            port=ports[name],
            nodepool="pool-a",
            node_name=name,
            etcd=(etcd.endpoint,),
            peer_token=PEER,
            token=TOKEN,
            state_dir=tmp_path / f"state-{name}",
        )

    with caplog.at_level(logging.WARNING, logger="tidepool.pool.etcd"):
        w0, w1 = start("w0"), start("w1")
        for w in (w0, w1):
            assert wait_for(
                lambda w=w: {m.name for m in w.worker.placement.members()} >= {"w0", "w1"}
            )
        time.sleep(1.5)  # a few more polls with the rogue entries in etcd
    for w in (w0, w1):
        assert {m.name for m in w.worker.placement.members()} == {"w0", "w1"}
    for name in rogues:
        assert f"ignoring etcd member entry {PREFIX}{name} of pool pool-a" in caplog.text
    assert "unsigned" in caplog.text and "bad signature" in caplog.text
    assert "signed for pool 'pool-b'" in caplog.text and "stored under 'copied'" in caplog.text
    assert caplog.text.count(f"{PREFIX}unsigned of pool") == 2  # once per worker, not per poll

    for w in (w0, w1):
        for rel, data in FILES.items():
            status, body = get(
                f"{w.endpoint}/v1/datasets/ds/files/{rel}", {"Authorization": f"Bearer {TOKEN}"}
            )
            assert (status, body) == (200, data), rel
    assert rogue.seen == []
    assert w0.worker.placement.peer_reads + w1.worker.placement.peer_reads > 0


# -- TLS ----------------------------------------------------------------------------------------


def tls_pool(
    make_dataset: Any, start_worker: Any, tmp: Path, tls: TlsFiles, ca: Path
) -> tuple[list[Any], list[Member]]:
    cfg = make_dataset(FILES)
    ports = [free_port(), free_port()]
    members = [Member(f"w{i}", f"https://127.0.0.1:{p}", "pool-a") for i, p in enumerate(ports)]
    workers = [
        start_worker(
            [per_worker(cfg, tmp, m.name)],
            port=ports[i],
            nodepool="pool-a",
            node_name=m.name,
            members=static_members(members),
            peer_token=PEER,
            token=TOKEN,
            tls_cert=tls.cert,
            tls_key=tls.key,
            tls_ca=ca,
            state_dir=tmp / f"state-{m.name}",
        )
        for i, m in enumerate(members)
    ]
    return workers, members


async def fetch_all(endpoint: str, names: list[str], ca: Path) -> dict[str, bytes]:
    ctx = ssl.create_default_context(cafile=str(ca))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        out = {}
        for name in names:
            async with session.get(f"{endpoint}/v1/datasets/ds/files/{name}", headers=headers) as r:
                assert r.status == 200, await r.text()
                out[name] = await r.read()
        return out


def test_workers_and_peers_speak_tls(
    make_dataset: Any, start_worker: Any, tmp_path: Path, tls_files: TlsFiles
) -> None:
    (w0, w1), members = tls_pool(make_dataset, start_worker, tmp_path, tls_files, tls_files.ca)
    assert w0.endpoint.startswith("https://")
    theirs = [n for n in FILES if owners(file_key("ds", n), members)[0].name == "w1"]
    assert theirs
    got = asyncio.run(fetch_all(w1.endpoint, theirs, tls_files.ca))  # w1 caches its files
    assert got == {n: FILES[n] for n in theirs}
    origin_before = w1.worker.services["ds"].origins[0].stats.calls.get("read", 0)
    got = asyncio.run(fetch_all(w0.endpoint, theirs, tls_files.ca))  # w0 asks w1, over TLS
    assert got == {n: FILES[n] for n in theirs}
    assert w0.worker.placement.peer_reads >= len(theirs)
    assert w0.worker.services["ds"].origins[0].stats.calls.get("read", 0) == 0
    assert w1.worker.services["ds"].origins[0].stats.calls.get("read", 0) == origin_before

    plain = w0.endpoint.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(f"{plain}/healthz", timeout=5)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(
            f"{w0.endpoint}/healthz",
            timeout=5,
            context=ssl.create_default_context(cafile=str(tls_files.other_ca)),
        )


def test_a_peer_with_an_untrusted_certificate_is_not_used(
    make_dataset: Any, start_worker: Any, tmp_path: Path, tls_files: TlsFiles
) -> None:
    """Workers that trust another CA cannot verify each other: no peer bytes are taken, reads
    fall back to the origin and stay correct."""
    (w0, _w1), members = tls_pool(
        make_dataset, start_worker, tmp_path, tls_files, tls_files.other_ca
    )
    theirs = [n for n in FILES if owners(file_key("ds", n), members)[0].name == "w1"]
    got = asyncio.run(fetch_all(w0.endpoint, theirs, tls_files.ca))
    assert got == {n: FILES[n] for n in theirs}
    assert w0.worker.placement.peer_reads == 0
    assert w0.worker.services["ds"].origins[0].stats.calls.get("read", 0) >= len(theirs)


def test_the_worker_refuses_half_a_tls_configuration(
    make_dataset: Any, tls_files: TlsFiles, tmp_path: Path
) -> None:
    cfg = make_dataset(FILES)
    with pytest.raises(ConfigError, match="both a certificate"):
        Worker([cfg], WorkerSettings(tls_cert=tls_files.cert))
    with pytest.raises(ConfigError, match="key must belong to the certificate"):
        Worker([cfg], WorkerSettings(tls_cert=tls_files.cert, tls_key=tls_files.ca))
    with pytest.raises(ConfigError, match="not found"):
        Worker([cfg], WorkerSettings(tls_cert=tmp_path / "none.pem", tls_key=tls_files.key))


# -- the command line --------------------------------------------------------------------------


def test_up_reads_the_peer_credential_from_a_file_only(
    make_dataset: Any, s3_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No flag carries the credential itself (it would show in ``ps``): a file or the
    environment; a pool member without one does not start."""
    from tidepool.cli import main
    from tidepool_lab.testbed.specs import S3DatasetSpec
    from tidepool_lab.testbed.workerproc import WorkerProcess

    make_dataset(FILES)
    spec = S3DatasetSpec(
        url=f"s3://{make_dataset.bucket}/data/",
        endpoint=s3_server.endpoint,
        cache=tmp_path / "cache",
        credentials="inline",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    ).write(tmp_path / "spec.yaml")
    port = free_port()
    pool = [
        "--nodepool",
        "p",
        "--node-name",
        "w0",
        "--members",
        f"static:w0=http://127.0.0.1:{port}",
    ]
    assert main(["up", "-f", str(spec), "--port", str(port), *pool]) == 2
    assert "TIDEPOOL_PEER_TOKEN or pass --peer-token-file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["up", "-f", str(spec), "--peer-token", PEER])

    secret = tmp_path / "peer-token"
    secret.write_text(PEER + "\n")
    with WorkerProcess.start(
        [spec],
        tmp_path / "w0.log",
        port=port,
        extra_args=[*pool, "--peer-token-file", str(secret), "--state-dir", str(tmp_path / "s")],
    ) as w:
        url = f"{w.endpoint}/v1/datasets/ds/files/f01.bin"
        assert get(url, {"Authorization": f"Bearer {PEER}", "X-Tidepool-Peer": "w9"}) == (
            200,
            FILES["f01.bin"],
        )
        assert get(url, {"X-Tidepool-Peer": "w9"})[0] == 403
        cmdline = Path(f"/proc/{w.pid}/cmdline").read_bytes()
        assert PEER.encode() not in cmdline
