"""The chart's Prometheus rules and Grafana dashboard, checked by Prometheus's own promtool.

``promtool check rules`` parses every expression; ``promtool test rules`` runs the alert and
recording rules on series written in tests/operator/prometheus/rules_test.yaml (each alert fires
when it should and stays silent when it should not). Every query of the Grafana dashboard is
checked the same way, as a recording rule. Skipped only when promtool is missing
(``scripts/system-deps.sh`` installs Debian's prometheus package, which ships it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CHART = Path(__file__).parents[2] / "deploy" / "helm" / "tidepool"
RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
RULES_TEST = Path(__file__).parent / "prometheus" / "rules_test.yaml"


def _tool(name: str) -> str | None:
    """scripts/system-deps.sh unpacks Debian's prometheus beside the venv's python (never
    installed as a service); a system-wide one on PATH works too."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


PROMTOOL = _tool("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool (Debian's prometheus: sh scripts/system-deps.sh)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_rules_pass_promtool_check() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 10 rules found" in r.stdout


def test_rules_unit_tests_pass() -> None:
    r = promtool("test", "rules", str(RULES_TEST))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_is_unit_tested() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    silent = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert alerts == fired == silent


def dashboard_queries() -> list[str]:
    """Every query of the Grafana dashboard, its variables given their 'All' values."""
    dash = json.loads(DASHBOARD.read_text())
    subst = (("$namespace", ".*"), ("$dataset", ".*"), ("$__rate_interval", "1m"))
    out = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in subst:
                expr = expr.replace(var, value)
            out.append(expr)
    return out


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
