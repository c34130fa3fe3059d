"""The dashboard's routes over HTTP against real workers: page and assets, login, history, loads,
pool health, and the status fields the page shows (origins, watermarks, WAN bytes saved)."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.pool.poolkit import free_ports, per_worker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
ASSETS = ROOT / "src" / "tidepool" / "worker" / "dashboard"
TOKEN = "routes-test-token-abcdef0123456789"


async def request(
    method: str, url: str, **kw: Any
) -> tuple[int, dict[str, str], bytes, dict[str, str]]:
    """Status, headers, body and the cookies the answer set."""
    async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as r:
        cookies = {k: v.value for k, v in r.cookies.items()}
        return r.status, dict(r.headers), await r.read(), cookies


def call(method: str, url: str, **kw: Any) -> tuple[int, dict[str, str], bytes, dict[str, str]]:
    return asyncio.run(request(method, url, **kw))


def get_json(url: str, **kw: Any) -> Any:
    status, _, body, _ = call("GET", url, **kw)
    assert status == 200, body
    return json.loads(body)


def test_assets_are_package_data_and_fetch_nothing_elsewhere() -> None:
    """Every asset is declared as package data (so a wheel carries it) and names no other
    origin: no URL but the SVG namespace name, which is an identifier, never fetched."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["tidepool"]
    for name in ("index.html", "app.js", "style.css"):
        rel = f"worker/dashboard/{name}"
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel
        text = (ASSETS / name).read_text()
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        assert "@import" not in text and "url(" not in text.replace("data:", ""), name


def test_page_assets_and_security_headers(make_dataset: Any, start_worker: Any) -> None:
    w = start_worker([make_dataset({"a.bin": b"x" * 10})])
    status, headers, body, _ = call("GET", f"{w.endpoint}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="/dashboard/app.js"' in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert headers["Referrer-Policy"] == "no-referrer"
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, headers, body, _ = call("GET", f"{w.endpoint}/dashboard/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind)
        assert body == (ASSETS / name).read_bytes()
    status, _, body, _ = call("GET", f"{w.endpoint}/dashboard/..%2Fapp.py")
    assert status == 404
    status, _, body, _ = call("GET", f"{w.endpoint}/dashboard/secret.txt")
    assert status == 404 and b"no such dashboard asset" in body


def test_login_rules(make_dataset: Any, start_worker: Any) -> None:
    w = start_worker([make_dataset({"a.bin": b"x"})], token=TOKEN)
    base = w.endpoint
    # the page and the session probe are public; the data is not
    assert call("GET", f"{base}/")[0] == 200
    assert get_json(f"{base}/v1/dashboard/session") == {"required": True, "authenticated": False}
    assert call("GET", f"{base}/v1/pool")[0] == 401
    # wrong token, bad bodies, another origin
    status, _, body, cookies = call("POST", f"{base}/v1/dashboard/login", json={"token": "nope"})
    assert status == 401 and cookies == {}
    status, _, body, _ = call(
        "POST",
        f"{base}/v1/dashboard/login",
        data=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and b"must be JSON" in body
    status, _, body, _ = call("POST", f"{base}/v1/dashboard/login", json={"token": "x" * 5000})
    assert status == 400 and b"at most 4096" in body
    status, _, _, cookies = call(
        "POST",
        f"{base}/v1/dashboard/login",
        json={"token": TOKEN},
        headers={"Origin": "http://evil.example"},
    )
    assert status == 403 and cookies == {}
    # the form without JavaScript: 303 back to the page, with the cookie
    status, headers, _, cookies = call(
        "POST", f"{base}/v1/dashboard/login", data={"token": TOKEN}, allow_redirects=False
    )
    assert status == 303 and headers["Location"] == "/"
    assert "tidepool_dashboard" in cookies and TOKEN not in headers["Set-Cookie"]
    set_cookie = headers["Set-Cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    jar = {"tidepool_dashboard": cookies["tidepool_dashboard"]}
    assert get_json(f"{base}/v1/dashboard/session", cookies=jar)["authenticated"] is True
    assert call("GET", f"{base}/v1/pool", cookies=jar)[0] == 200
    assert call("GET", f"{base}/v1/datasets/ds/files/a.bin", cookies=jar)[0] == 401
    # the bearer header still opens everything, cookie or not
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert call("GET", f"{base}/v1/datasets/ds/files/a.bin", headers=bearer)[0] == 200


def test_without_token_nothing_to_log_into(make_dataset: Any, start_worker: Any) -> None:
    w = start_worker([make_dataset({"a.bin": b"x"})])
    assert get_json(f"{w.endpoint}/v1/dashboard/session") == {
        "required": False,
        "authenticated": True,
    }
    status, _, _, cookies = call("POST", f"{w.endpoint}/v1/dashboard/login", json={"token": ""})
    assert status == 200 and cookies == {}


def test_history_loads_and_status_fields(make_dataset: Any, start_worker: Any) -> None:
    files = {f"f{i}.bin": os.urandom(200_000) for i in range(6)}
    cfg = make_dataset(files, page_size=64 * 1024)
    w = start_worker([cfg], history_interval=0.2)
    base = w.endpoint
    for name in files:  # cold, then warm
        for _ in range(2):
            assert call("GET", f"{base}/v1/datasets/ds/files/{name}")[2] == files[name]
    st = get_json(f"{base}/v1/datasets/ds/status?refresh=0")
    raw = st["raw"]
    total = sum(len(v) for v in files.values())
    assert raw["served_bytes"] == 2 * total
    assert raw["origin_read_bytes"] >= total  # read-ahead may fetch a page twice-requested once
    assert raw["wan_saved_bytes"] == raw["served_bytes"] - raw["origin_read_bytes"]
    (origin,) = raw["origins"]
    assert origin["reachable"] is True and origin["last_error"] == ""
    assert origin["url"] == cfg.mounts[0].url and origin["down_since"] is None
    (tier,) = st["tiers"]
    assert (tier["high"], tier["low"]) == (0.95, 0.7)
    assert tier["high_bytes"] == int(0.95 * tier["capacity"])

    def history() -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = get_json(f"{base}/v1/history")["points"]
        return points

    deadline = time.monotonic() + 10
    while not any(p["served_bytes"] == 2 * total for p in history()):
        assert time.monotonic() < deadline, history()
        time.sleep(0.1)
    pts = history()
    assert pts[-1]["saved_bytes"] == raw["wan_saved_bytes"]
    assert any(p["read_bytes_per_s"] > 0 for p in pts)
    since = pts[-1]["t"]
    assert all(p["t"] > since for p in get_json(f"{base}/v1/history?since={since}")["points"])
    status, _, body, _ = call("GET", f"{base}/v1/history?since=yesterday")
    assert status == 400 and b"since" in body and b"yesterday" in body
    assert call("GET", f"{base}/v1/history?since=nan")[0] == 400

    # load jobs: newest first, and counted in the metrics
    ids = []
    for paths in (["f0.bin"], ["f1.bin", "f2.bin"]):
        status, _, body, _ = call("POST", f"{base}/v1/datasets/ds/load", json={"paths": paths})
        assert status == 202
        ids.append(json.loads(body)["id"])
    deadline = time.monotonic() + 20
    while True:
        loads = get_json(f"{base}/v1/loads")["loads"]
        if all(j["phase"] == "Complete" for j in loads) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [j["id"] for j in loads] == ids[::-1]
    assert [j["phase"] for j in loads] == ["Complete", "Complete"]
    text = call("GET", f"{base}/metrics")[2].decode()
    assert 'tidepool_load_jobs_total{dataset="ds",result="Complete"} 2.0' in text
    assert 'tidepool_load_bytes_total{dataset="ds"} 600000.0' in text
    assert 'tidepool_load_bytes_done{dataset="ds"} 400000.0' in text  # deprecated: latest job


def test_pool_view_probes_members(make_dataset: Any, start_worker: Any, tmp_path: Path) -> None:
    """Two workers of a pool: each sees the other up with the files and bytes it holds; a
    stopped member turns "down" (with the error) in the view and in tidepool_pool_member_up."""
    files = {f"f{i:02d}.bin": os.urandom(50_000) for i in range(12)}
    cfg = make_dataset(files, page_size=64 * 1024)
    ports = free_ports(2)
    static = "static:" + ",".join(f"w{i}=http://127.0.0.1:{p}" for i, p in enumerate(ports))

    workers = [
        start_worker(
            [per_worker(cfg, tmp_path, f"w{i}")],
            port=p,
            nodepool="site-a",
            node_name=f"w{i}",
            members=static,
            state_dir=tmp_path / f"state-w{i}",
            token=TOKEN,
            peer_token="peer-" + TOKEN,
            host="127.0.0.1",
            pool_probe_interval=0.3,
        )
        for i, p in enumerate(ports)
    ]
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for name in files:  # through w1: it keeps what it owns, and w0 what w0 owns
        status, _, body, _ = call(
            "GET", f"{workers[1].endpoint}/v1/datasets/ds/files/{name}", headers=bearer
        )
        assert status == 200 and body == files[name]
    for w in workers:
        w.call(w.worker.services["ds"].flush_writes())
    held = [
        get_json(f"{w.endpoint}/v1/datasets/ds/status?refresh=0", headers=bearer)["raw"]
        for w in workers
    ]

    def view() -> dict[str, Any]:
        pool: dict[str, Any] = get_json(f"{workers[0].endpoint}/v1/pool", headers=bearer)
        return pool

    deadline = time.monotonic() + 10
    while view()["members"][1]["cached_bytes"] != held[1]["cached_bytes"]:
        assert time.monotonic() < deadline, view()
        time.sleep(0.1)
    pool = view()
    assert pool["nodepool"] == "site-a"
    me, other = pool["members"]
    assert (me["name"], me["self"], me["state"]) == ("w0", True, "up")
    assert (other["name"], other["self"], other["state"]) == ("w1", False, "up")
    for m, raw in zip((me, other), held, strict=True):
        assert m["cached_files"] == raw["cached_files"] and m["cached_bytes"] == raw["cached_bytes"]
    assert me["cached_files"] + other["cached_files"] == len(files)

    workers[1].stop()
    deadline = time.monotonic() + 10
    while view()["members"][1]["state"] != "down":
        assert time.monotonic() < deadline, view()
        time.sleep(0.1)
    assert view()["members"][1]["error"]
    text = call("GET", f"{workers[0].endpoint}/metrics", headers=bearer)[2].decode()
    assert 'tidepool_pool_member_up{member="w1",nodepool="site-a"} 0.0' in text
    assert 'tidepool_pool_member_up{member="w0",nodepool="site-a"} 1.0' in text
