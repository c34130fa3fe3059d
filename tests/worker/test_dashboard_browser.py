"""The dashboard in a real headless browser (Debian's chromium through chromedriver and selenium).

A real worker serves a real S3 dataset (behind the user-space WAN relay where a slow or cut link
matters); the page is opened the way an operator opens it, and what it shows is compared with
``/v1/datasets/{ds}/status``. The browser's own logs prove the rest: no console error, every
request to the worker's origin. Skipped only when chromium or chromedriver is not installed
(``scripts/system-deps.sh`` installs both).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tidepool.origin.funnel import OriginSettings
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.wan import WanRelay

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs Debian's chromium and chromium-driver (sh scripts/system-deps.sh)",
    ),
]

FAST = OriginSettings(retry_budget=1.0, probe_interval=0.5, seed=1)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1800",
)


class Browser:
    """One chromium with a fresh profile, and the helpers the tests need."""

    def __init__(self, profile: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
        self.requests: list[str] = []
        self.console: list[dict[str, Any]] = []

    def open(self, url: str) -> None:
        """Load the page, with the logs of the browser's own start-up (its new-tab page) dropped."""
        self.driver.get("about:blank")
        self.driver.get_log("performance")
        self.driver.get_log("browser")
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, what: str, pred: Callable[[], Any], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not show {what} within {timeout}s")
            time.sleep(0.1)

    def field(self, scope: str, name: str) -> tuple[str, str | None]:
        """Text and data-value of ``[data-field=name]`` inside ``scope`` ('' if absent)."""
        found = self.js(
            "const e = document.querySelector(arguments[0] + ' [data-field=\"' + arguments[1] "
            "+ '\"]'); return e ? [e.textContent, e.getAttribute('data-value')] : null;",
            scope,
            name,
        )
        return (found[0], found[1]) if found else ("", None)

    def collect_logs(self) -> None:
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                # every request the page makes, whatever its target
                self.requests.append(msg["params"]["request"]["url"])
        self.console.extend(self.driver.get_log("browser"))

    def screenshot(self, path: Path) -> Path:
        """The page down to its footer, as a PNG (the window is taller than the page)."""
        from PIL import Image

        bottom = self.js(
            "return document.querySelector('footer').getBoundingClientRect().bottom + scrollY"
        )
        self.driver.save_screenshot(str(path))
        with Image.open(path) as shot:
            cropped = shot.crop((0, 0, shot.width, min(shot.height, int(bottom) + 8)))
        cropped.save(path, optimize=True)
        print(f"dashboard screenshot: {path}")
        return path

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def relay(s3_server: S3Server) -> Iterator[WanRelay]:
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    with WanRelay.start(("127.0.0.1", port), rtt_ms=10, rate_mbit=200) as r:
        yield r


async def _status(endpoint: str, ds: str = "ds", token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{endpoint}/v1/datasets/{ds}/status?refresh=0"
    async with aiohttp.ClientSession(headers=headers) as s, s.get(url) as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


def status(endpoint: str, ds: str = "ds", token: str | None = None) -> dict[str, Any]:
    return asyncio.run(_status(endpoint, ds, token))


def read(endpoint: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{endpoint}/v1/datasets/ds/files/{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _same_value(attribute: str | None, value: Any) -> bool:
    """A ``data-value`` attribute (JavaScript's String(number)) against a JSON value."""
    if attribute is None:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(attribute) == float(value)
    return attribute == str(value)


async def _start_load(endpoint: str, paths: list[str]) -> str:
    url = f"{endpoint}/v1/datasets/ds/load"
    async with aiohttp.ClientSession() as s, s.post(url, json={"paths": paths}) as r:
        assert r.status == 202
        job: str = (await r.json())["id"]
        return job


def _load(endpoint: str, job: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{endpoint}/v1/loads/{job}") as r:
            body: dict[str, Any] = await r.json()
            return body

    return asyncio.run(go())


def page_matches_status(b: Browser, st: dict[str, Any]) -> list[str]:
    """The fields where the dataset card differs from the status document (empty: equal)."""
    cs, raw = st["cacheStates"], st["raw"]
    card = f'[data-ds="{st["dataset"]}"]'
    want: dict[str, tuple[str, Any]] = {
        "cached": (cs["cached"], raw["cached_bytes"]),
        "cachedPercentage": (cs["cachedPercentage"], raw["cached_fraction"]),
        "cached_files": (str(raw["cached_files"]), raw["cached_files"]),
        "cacheHitRatio": (cs["cacheHitRatio"], raw["hit_ratio"]),
        "localHitRatio": (cs["localHitRatio"], None),
        "remoteHitRatio": (cs["remoteHitRatio"], None),
        "wan_saved": (None, raw["wan_saved_bytes"]),  # type: ignore[dict-item]
        "phase": (st["phase"], None),
        "origin": (None, "up" if raw["origin_reachable"] else "down"),  # type: ignore[dict-item]
    }
    wrong = []
    for name, (text, value) in want.items():
        got_text, got_value = b.field(card, name)
        if text is not None and got_text != text:
            wrong.append(f"{name}: page says {got_text!r}, status {text!r}")
        if value is not None and not _same_value(got_value, value):
            wrong.append(f"{name}: page has {got_value!r}, status {value!r}")
    for tier in st["tiers"]:
        _, used = b.field(f'{card} [data-tier="{tier["path"]}"]', "tier-used")
        if used != str(tier["used"]):
            wrong.append(f"tier {tier['path']}: page {used!r}, status {tier['used']!r}")
    return wrong


def test_page_shows_what_status_says(
    make_dataset: Any, start_worker: Any, browser: Browser, tmp_path: Path
) -> None:
    """The numbers on the page equal /v1/datasets/ds/status, every request goes to the worker,
    the console stays clean, and a screenshot is left for people (and the README)."""
    files = {f"img/{i:03d}.jpg": os.urandom(150_000 + i) for i in range(24)}
    files["model/resnet18.bin"] = os.urandom(3 << 20)
    cfg = make_dataset(files, page_size=256 * 1024)
    w = start_worker([cfg], history_interval=0.5)
    names = sorted(files)
    for name in names[:16]:  # some cached, some read twice (hits), the rest never read
        assert read(w.endpoint, name) == (200, files[name])
    for name in names[:8]:
        assert read(w.endpoint, name) == (200, files[name])
    w.call(w.worker.services["ds"].flush_writes())
    job = asyncio.run(_start_load(w.endpoint, ["model"]))
    deadline = time.monotonic() + 60
    while _load(w.endpoint, job)["phase"] != "Complete":
        assert time.monotonic() < deadline, _load(w.endpoint, job)
        time.sleep(0.1)

    browser.open(f"{w.endpoint}/?every=0.5")
    browser.wait("its data", lambda: browser.js("return document.body.dataset.ready === '1'"))
    for _ in range(4):  # warm reads while the page watches: the charts move
        for name in names[:12]:
            assert read(w.endpoint, name) == (200, files[name])
        time.sleep(0.6)

    def differences() -> list[str]:
        st = status(w.endpoint)
        if st["raw"]["ufs_total_bytes"] is None:
            return ["the status does not know the dataset's total yet"]
        return page_matches_status(browser, st)

    # the page asks the origin for the dataset's total once, then every number must match
    deadline = time.monotonic() + 30
    while (wrong := differences()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert wrong == []
    st = status(w.endpoint)
    assert st["raw"]["ufs_total_bytes"] == sum(len(v) for v in files.values())
    assert page_matches_status(browser, st) == []
    assert (
        browser.js("return document.querySelector('[data-ds=\"ds\"] .stat .sub').textContent")
        == f"of {st['ufsTotal']}"
    )
    row = f'[data-load="{job}"]'
    assert browser.field(row, "phase")[0] == "Complete"
    assert browser.field(row, "percent")[0] == "100.0%"
    assert browser.field(row, "files")[0] == "1 / 1"
    # the pool table: this worker alone, with the same files and bytes as the status
    me = "[data-member]"
    assert browser.field(me, "state")[0] == "up"
    assert browser.field(me, "cached_bytes")[1] == str(st["raw"]["cached_bytes"])
    assert browser.field(me, "cached_files")[1] == str(st["raw"]["cached_files"])
    # the charts have points from the worker's history
    browser.wait(
        "a chart line",
        lambda: browser.js(
            "return document.querySelector('#chart-read path.line').getAttribute('d').length > 10"
        ),
    )
    # the prefetch panel: what the worker fetched ahead (the dataset is one file, read already)
    browser.wait("the prefetch panel", lambda: browser.field("", "prefetch-bytes")[1] is not None)
    pre = browser.js("return document.querySelector('[data-field=\"prefetch\"] h4').textContent")
    assert pre == f"Prefetch ({st['raw']['prefetch']['policy']})"

    shot = browser.screenshot(tmp_path / "dashboard.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_clean(browser, w.endpoint)


def assert_clean(browser: Browser, endpoint: str) -> None:
    """No console message at all (errors, warnings, Chrome's recommendations) and every
    request the page made went to the worker's own origin."""
    browser.collect_logs()
    assert browser.console == [], browser.console
    assert browser.requests, "the performance log recorded no request"
    outside = [u for u in browser.requests if not u.startswith(endpoint + "/")]
    assert outside == [], outside


def test_running_load_moves_on_screen(
    make_dataset: Any, start_worker: Any, browser: Browser, relay: WanRelay
) -> None:
    """A load over a slow link: the page shows its progress growing, then Complete at 100 %."""
    relay.set_shape(rtt_ms=10, rate_mbit=16)  # 12 MiB take about six seconds
    files = {f"shard-{i}.bin": os.urandom(3 << 20) for i in range(4)}
    cfg = make_dataset(files, page_size=512 * 1024, endpoint=relay.endpoint)
    w = start_worker([cfg], origin=FAST, history_interval=0.5)
    browser.open(f"{w.endpoint}/?every=0.5")
    browser.wait("its data", lambda: browser.js("return document.body.dataset.ready === '1'"))

    job = asyncio.run(_start_load(w.endpoint, [""]))
    row = f'[data-load="{job}"]'
    seen: list[float] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        _, value = browser.field(row, "percent")
        if value is not None and (not seen or float(value) != seen[-1]):
            seen.append(float(value))
        if browser.field(row, "phase")[0] == "Complete":
            break
        time.sleep(0.1)
    assert browser.field(row, "phase")[0] == "Complete"
    browser.wait("100 %", lambda: browser.field(row, "percent")[0] == "100.0%")
    moving = [v for v in seen if 0 < v < 100]
    assert len(moving) >= 2, f"progress on screen: {seen}"
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    text, value = browser.field(row, "bytes")
    assert value == str(sum(len(v) for v in files.values())) and "12.0 MiB / 12.0 MiB" in text
    assert_clean(browser, w.endpoint)


def test_origin_down_is_shown(
    make_dataset: Any, start_worker: Any, browser: Browser, relay: WanRelay
) -> None:
    """The cloud link is cut: the page says the origin is down, since when and the last error,
    while cached files still read; when the link is back the page says so."""
    files = {f"f{i}.bin": os.urandom(100_000) for i in range(4)}
    cfg = make_dataset(files, page_size=256 * 1024, endpoint=relay.endpoint)
    w = start_worker([cfg], origin=FAST)
    assert read(w.endpoint, "f0.bin") == (200, files["f0.bin"])
    browser.open(f"{w.endpoint}/?every=0.5")
    browser.wait("the origin up", lambda: browser.field('[data-ds="ds"]', "origin")[1] == "up")

    relay.set_link(False)
    for name in ("f1.bin", "f2.bin", "f3.bin"):  # uncached: the breaker opens
        assert read(w.endpoint, name)[0] == 503
    raw = status(w.endpoint)["raw"]
    assert raw["origin_reachable"] is False and raw["origins"][0]["last_error"]
    browser.wait("the origin down", lambda: browser.field('[data-ds="ds"]', "origin")[1] == "down")
    down, _ = browser.field('[data-ds="ds"]', "origin-down")
    assert down.startswith("Origin DOWN since ") and "ago)" in down, down
    error, _ = browser.field('[data-ds="ds"]', "origin-error")
    last = status(w.endpoint)["raw"]["origins"][0]["last_error"]
    assert error.startswith("Last error: ") and last in error, (error, last)
    assert read(w.endpoint, "f0.bin") == (200, files["f0.bin"])  # the cache still serves

    relay.set_link(True)
    browser.wait(
        "the origin up again",
        lambda: browser.field('[data-ds="ds"]', "origin")[1] == "up",
        timeout=30,
    )
    assert_clean(browser, w.endpoint)


TOKEN = "dashboard-test-token-0123456789abcdef"
LOGIN_SHOWN = "return !document.querySelector('#login').hidden"


def test_login_cookie_opens_only_the_read_only_views(
    make_dataset: Any,
    start_worker: Any,
    browser: Browser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a token, the page asks for it; a wrong one is refused; the right one is POSTed once
    and traded for an HttpOnly, SameSite=Strict cookie. The token is never in the URL, the
    page's resources, the cookie or the worker's log; the cookie reads status but no file
    bytes, and no POST route accepts it."""
    caplog.set_level(logging.DEBUG)
    files = {"a.bin": os.urandom(5000)}
    cfg = make_dataset(files)
    w = start_worker([cfg], token=TOKEN)
    browser.open(f"{w.endpoint}/")
    browser.wait("the login form", lambda: browser.js(LOGIN_SHOWN))
    assert browser.js("return document.querySelector('#main').hidden") is True

    from selenium.webdriver.common.by import By

    box = browser.driver.find_element(By.ID, "token")
    box.send_keys("not-the-token")
    browser.driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    browser.wait(
        "the refusal",
        lambda: (
            browser.js("return document.querySelector('#login-error').textContent")
            == "Wrong token."
        ),
    )
    box.send_keys(TOKEN)
    browser.driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    browser.wait("its data", lambda: browser.js("return document.body.dataset.ready === '1'"))
    assert browser.field('[data-ds="ds"]', "phase")[0] == "Bound"
    assert browser.js("return document.querySelector('#token').value") == ""

    assert TOKEN not in browser.js("return window.location.href")
    names = browser.js("return performance.getEntries().map(e => e.name).join(' ')")
    assert TOKEN not in names
    assert browser.js("return document.cookie") == ""  # HttpOnly: scripts cannot read it
    (cookie,) = browser.driver.get_cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]

    jar = {cookie["name"]: cookie["value"]}

    async def probe() -> dict[str, int]:
        out = {}
        async with aiohttp.ClientSession(cookies=jar) as s:
            for method, path in (
                ("GET", "/v1/datasets/ds/status"),
                ("GET", "/v1/pool"),
                ("GET", "/v1/history"),
                ("GET", "/v1/datasets/ds/files/a.bin"),
                ("GET", "/metrics"),
                ("POST", "/v1/datasets/ds/load"),
                ("POST", "/v1/datasets/ds/local-hits"),
            ):
                async with s.request(method, w.endpoint + path, json={}) as r:
                    out[f"{method} {path}"] = r.status
        tampered = {cookie["name"]: cookie["value"] + "0"}
        async with (
            aiohttp.ClientSession(cookies=tampered) as s,
            s.get(w.endpoint + "/v1/datasets/ds/status") as r,
        ):
            out["tampered cookie"] = r.status
        return out

    assert asyncio.run(probe()) == {
        "GET /v1/datasets/ds/status": 200,
        "GET /v1/pool": 200,
        "GET /v1/history": 200,
        "GET /v1/datasets/ds/files/a.bin": 401,
        "GET /metrics": 401,
        "POST /v1/datasets/ds/load": 401,
        "POST /v1/datasets/ds/local-hits": 401,
        "tampered cookie": 401,
    }
    worker_log = [r.getMessage() for r in caplog.records if r.name.startswith("tidepool")]
    assert worker_log and all(TOKEN not in line for line in worker_log)

    browser.driver.find_element(By.ID, "logout").click()
    browser.wait("the login form", lambda: browser.js(LOGIN_SHOWN))
    assert browser.driver.get_cookies() == []
