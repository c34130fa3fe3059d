"""A worker's /metrics as Prometheus itself sees it.

``promtool check metrics`` lints a real scrape (names, units, ``_total`` counters), and a real
Prometheus server (Debian's, on 127.0.0.1, scrape interval 1 s, the chart's rule file loaded)
scrapes a worker that requires its bearer token; after some reads the hit ratio is queried through
Prometheus's HTTP API, raw and as the chart's recording rule, and every query of the Grafana
dashboard returns data. Skipped only when Debian's prometheus package (which ships promtool) is
missing; ``scripts/system-deps.sh`` installs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tidepool_lab.testbed import stop_process_group
from tidepool_lab.testbed.s3server import free_port


def call(method: str, url: str, **kw: Any) -> tuple[int, dict[str, str], bytes, None]:
    """Status, headers and body of one request (aiohttp, as the other worker tests)."""

    async def go() -> tuple[int, dict[str, str], bytes, None]:
        async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as r:
            return r.status, dict(r.headers), await r.read(), None

    return asyncio.run(go())


def dashboard_queries() -> list[str]:
    """Every query of the chart's Grafana dashboard, its variables given their 'All' values."""
    dash = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    subst = (("$namespace", ".*"), ("$dataset", ".*"), ("$__rate_interval", "1m"))
    out = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in subst:
                expr = expr.replace(var, value)
            out.append(expr)
    return out


def _tool(name: str) -> str | None:
    """scripts/system-deps.sh unpacks Debian's prometheus beside the venv's python (never
    installed as a service); a system-wide one on PATH works too."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


PROMETHEUS = _tool("prometheus")
PROMTOOL = _tool("promtool")
CHART = Path(__file__).parents[2] / "deploy" / "helm" / "tidepool"
TOKEN = "prometheus-test-token-0123456789"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None or PROMTOOL is None,
        reason="needs Debian's prometheus package (prometheus, promtool): "
        "sh scripts/system-deps.sh",
    ),
]

FILES = {f"img/{i:02d}.jpg": os.urandom(100_000 + i) for i in range(10)}
PAGE = 64 * 1024


def _read_all(endpoint: str, times: int) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(times):
        for name, data in FILES.items():
            status, _, body, _ = call(
                "GET", f"{endpoint}/v1/datasets/ds/files/{name}", headers=bearer
            )
            assert status == 200 and body == data


def test_promtool_check_metrics_passes(make_dataset: Any, start_worker: Any) -> None:
    """A scrape after reads, a load and an origin error: every family is linted."""
    cfg = make_dataset(FILES, page_size=PAGE)
    w = start_worker([cfg], token=TOKEN)
    _read_all(w.endpoint, 2)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status_url = f"{w.endpoint}/v1/datasets/ds/status?refresh=1"  # learns the dataset's size
    assert call("GET", status_url, headers=bearer)[0] == 200
    assert call("GET", f"{w.endpoint}/v1/datasets/ds/files/missing.bin", headers=bearer)[0] == 404
    status, _, text, _ = call("GET", f"{w.endpoint}/metrics", headers=bearer)
    assert status == 200
    assert PROMTOOL is not None
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b"", r.stdout + r.stderr
    body = text.decode()
    for name in (
        "tidepool_served_bytes_total",
        "tidepool_cache_hits_total",
        "tidepool_cache_misses_total",
        "tidepool_cache_remote_hits_total",
        "tidepool_read_duration_seconds_bucket",
        "tidepool_origin_read_bytes_total",
        "tidepool_origin_down_since_timestamp_seconds",
        "tidepool_cache_high_watermark_bytes",
        "tidepool_dataset_cached_ratio",
        "tidepool_pool_member_up",
    ):
        assert f"\n{name}{{" in body, name


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_deprecated_names_carry_the_same_values(make_dataset: Any, start_worker: Any) -> None:
    """Renamed metrics stay exported under their old names until 0.2.0, with equal values."""
    from tidepool.worker.metrics import DEPRECATED

    cfg = make_dataset(FILES, page_size=PAGE)
    w = start_worker([cfg])
    _read_all_open(w.endpoint)
    samples = _samples(call("GET", f"{w.endpoint}/metrics")[2].decode())
    for old, new in DEPRECATED.items():
        renamed = {k.replace(new, old, 1): v for k, v in samples.items() if k.startswith(new)}
        renamed = {k: v for k, v in renamed.items() if "_created" not in k}
        assert renamed, new
        for key, value in renamed.items():
            assert samples[key] == value, key


def _read_all_open(endpoint: str) -> None:
    for name, data in FILES.items():
        assert call("GET", f"{endpoint}/v1/datasets/ds/files/{name}")[2] == data


class Prometheus:
    """A real Prometheus server on 127.0.0.1 with its data in a temp dir."""

    def __init__(self, workdir: Path, target: str) -> None:
        workdir.mkdir(parents=True)
        self.port = free_port()
        token_file = workdir / "token"
        token_file.write_text(TOKEN)
        token_file.chmod(0o600)
        rules = workdir / "rules.yaml"
        shutil.copy(CHART / "files" / "prometheus-rules.yaml", rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "tidepool",
                    "static_configs": [{"targets": [target]}],
                    "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                }
            ],
        }
        cfg = workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        assert PROMETHEUS is not None
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={cfg}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait(self, what: str, expr: str, want: float, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        got: float | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                got = self.value(expr)
            except OSError:
                got = None  # still starting
            if got == want:
                return
            time.sleep(0.2)
        raise AssertionError(f"{what}: {expr} = {got}, wanted {want}")

    def stop(self) -> None:
        stop_process_group(self.proc)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(endpoint: str) -> Prometheus:
        p = Prometheus(tmp_path / f"prometheus-{len(started)}", endpoint.removeprefix("http://"))
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_real_prometheus_scrapes_a_worker_and_computes_the_hit_ratio(
    make_dataset: Any, start_worker: Any, prometheus_for: Any
) -> None:
    cfg = make_dataset(FILES, page_size=PAGE)
    w = start_worker([cfg], token=TOKEN)
    prom = prometheus_for(w.endpoint)
    prom.wait("the worker scraped with its token", 'up{job="tidepool"}', 1.0)

    _read_all(w.endpoint, 3)  # 20 pages missed once, then hit twice: 40 / 60
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    raw = json.loads(
        call("GET", f"{w.endpoint}/v1/datasets/ds/status?refresh=1", headers=bearer)[2]
    )["raw"]
    assert (raw["page_hits"], raw["page_misses"]) == (40, 20)
    prom.wait("the reads scraped", 'sum(tidepool_cache_hits_total{dataset="ds"})', 40.0)
    prom.wait("the misses scraped", 'sum(tidepool_cache_misses_total{dataset="ds"})', 20.0)

    hits = 'rate(tidepool_cache_hits_total{dataset="ds"}[5m])'
    misses = 'rate(tidepool_cache_misses_total{dataset="ds"}[5m])'
    remote = 'rate(tidepool_cache_remote_hits_total{dataset="ds"}[5m])'
    ratio = prom.value(f"sum(({hits} + {remote}) / ({hits} + {misses}))")
    assert ratio == pytest.approx(raw["hit_ratio"], abs=1e-9) and ratio == pytest.approx(2 / 3)

    def recorded() -> float | None:
        return prom.value('tidepool:cache_hit_ratio:rate5m{dataset="ds"}')

    deadline = time.monotonic() + 30
    while (got := recorded()) is None or abs(got - 2 / 3) > 1e-9:
        assert time.monotonic() < deadline, f"recording rule says {got}"
        time.sleep(0.2)

    # every query of the Grafana dashboard answers with data from this worker (a rate needs
    # two scrapes of a series; the latency histogram's series appear with the first read)
    deadline = time.monotonic() + 30
    while empty := [q for q in dashboard_queries() if not prom.query(q)]:
        assert time.monotonic() < deadline, empty
        time.sleep(0.5)
