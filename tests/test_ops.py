"""The shipped ops wiring in ``ops/``: the Prometheus scrape config, the alerting rules
and their unit tests, the Grafana dashboard, and a real Prometheus scraping a real server.

The checks use ``promtool`` and ``prometheus`` from Debian's prometheus package
(``make test`` installs it through ``ops/install-tools.sh`` when it runs as root);
without them those tests skip and say how to install it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from _serve_models import publish_tiny_repository, v2_request

REPO_ROOT = Path(__file__).resolve().parent.parent
OPS = REPO_ROOT / "ops"
PROMETHEUS_YML = OPS / "prometheus" / "prometheus.yml"
RULES = OPS / "prometheus" / "rules.yml"
RULE_TESTS = OPS / "prometheus" / "rules.test.yml"
DASHBOARD = OPS / "grafana" / "aideploy-dashboard.json"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
_INSTALL_HINT = (
    "not found: install Debian's prometheus package "
    "(sudo apt-get install --no-install-recommends prometheus, or sudo sh ops/install-tools.sh)"
)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=f"promtool {_INSTALL_HINT}")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason=f"prometheus {_INSTALL_HINT}")

# The monitor's metrics, each with its labels (the serving ones are read from
# aideploy.serve.metrics below). Keep in step with the monitor's exporter.
MONITOR_METRICS = {
    "aideploy_prediction_log_rows_total": {"model", "version"},
    "aideploy_prediction_log_dropped_total": {"model", "version"},
    "aideploy_drift_psi": {"model", "version", "feature"},
    "aideploy_drift_detected": {"model", "version", "feature"},
    "aideploy_rolling_accuracy": {"model", "version"},
    "aideploy_alerts_total": {"model", "version", "kind"},
}
# Series Prometheus itself makes: the scrape's health and the alerts' state.
PROMETHEUS_SERIES = {"up", "ALERTS"}

# What Grafana puts in place of the dashboard's variables, for checking the queries.
_GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model": ".*"}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def _serving_metrics() -> dict[str, set[str]]:
    """Every sample name the server exports, with its label names (from a filled-in registry)."""
    from prometheus_client.parser import text_string_to_metric_families

    from aideploy.serve.batching import BatchStats
    from aideploy.serve.metrics import ServerMetrics

    metrics = ServerMetrics()
    metrics.record_request("tiny", "1", "v2", 200, 0.01)
    metrics.batch_recorder("tiny", "1")(BatchStats(batch_size=1, num_requests=1, queue_seconds=(0.001,),
                                                    compute_seconds=0.002))
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    return exprs


def _as_promql(expr: str) -> str:
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _referenced(expr: str) -> list[tuple[str, set[str]]]:
    """The aideploy metrics an expression selects, each with the label names it matches on."""
    found = []
    for match in re.finditer(r"\b(aideploy_[a-z0-9_]+)\b(\{[^}]*\})?", expr):
        matchers = match.group(2) or ""
        found.append((match.group(1), set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))))
    return found


# --- Static checks ---------------------------------------------------------------------


@needs_promtool
def test_prometheus_config_and_rules_pass_promtool():
    config = _promtool("check", "config", str(PROMETHEUS_YML))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout
    rules = _promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"{len(_rules())} rules found" in rules.stdout
    # The default target is the server's default address.
    scrape = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["127.0.0.1:8000"]
    assert scrape.get("metrics_path", "/metrics") == "/metrics"


@needs_promtool
def test_every_alert_fires_on_its_problem_and_stays_quiet_when_healthy():
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # Every alert has both cases, so a new alert cannot ship untested.
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert len(alerts) >= 8
    groups = {group["name"]: group["alert_rule_test"] for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]}
    firing = {case["alertname"] for case in groups["problems"] if case["exp_alerts"]}
    quiet = {case["alertname"] for case in groups["healthy"] if case["exp_alerts"] == []}
    assert firing == alerts
    assert quiet == alerts


@needs_promtool
def test_rules_test_file_catches_a_broken_threshold(tmp_path):
    """The unit tests fail when an alert's threshold no longer matches its problem."""
    (tmp_path / "rules.yml").write_text(RULES.read_text().replace("aideploy_rolling_accuracy < 0.80",
                                                                  "aideploy_rolling_accuracy < 0.50"))
    shutil.copy(RULE_TESTS, tmp_path / "rules.test.yml")
    result = _promtool("test", "rules", str(tmp_path / "rules.test.yml"))
    assert result.returncode != 0
    assert "AideployLowRollingAccuracy" in result.stdout + result.stderr


def test_dashboard_is_a_well_formed_grafana_dashboard():
    dashboard = _dashboard()
    for field in ("title", "uid", "schemaVersion", "panels", "templating", "time"):
        assert field in dashboard, field
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 30
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "model"} <= variables
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["datasource"]["uid"] == "${datasource}"
        targets = panel["targets"]
        assert targets, f"panel {panel['title']!r} has no query"
        assert len({target["refId"] for target in targets}) == len(targets)
        for target in targets:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}"
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("request rate", "error rate", "p99", "queue", "batch size", "in flight", "psi",
                  "accuracy", "drops", "alerts"):
        assert topic in titles, topic


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    """promtool parses each panel's PromQL (as a recording rule) once Grafana's variables are filled in."""
    exprs = _dashboard_exprs(_dashboard())
    queries = [_as_promql(expr) for expr in exprs if not expr.startswith("label_values(")]
    assert len(queries) >= 12
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}", "expr": query} for index, query in enumerate(queries)
    ]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    # The check has teeth: a broken query fails it.
    rules["groups"][0]["rules"].append({"record": "dashboard:broken", "expr": "sum(rate(aideploy_requests_total[1m])"})
    path.write_text(yaml.safe_dump(rules))
    assert _promtool("check", "rules", str(path)).returncode != 0


def test_rules_and_dashboard_use_only_exported_metrics_and_labels():
    exported = {**_serving_metrics(), **MONITOR_METRICS}
    assert "aideploy_request_duration_seconds_bucket" in exported  # the histograms' suffixes are there
    sources = {"dashboard": _dashboard_exprs(_dashboard()), "rules": [rule["expr"] for rule in _rules()]}
    used: dict[str, set[str]] = {}
    for source, exprs in sources.items():
        names = set()
        for expr in exprs:
            for name, labels in _referenced(expr):
                assert name in exported, f"{source} uses {name}, which neither the server nor the monitor exports"
                assert labels <= exported[name], f"{source} matches {name} on labels {labels - exported[name]}"
                names.add(name)
            others = set(re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\s*\{", expr)) - set(names) - PROMETHEUS_SERIES
            assert not {other for other in others if not other.startswith("aideploy_")}, (source, expr)
        used[source] = names
    # The dashboard shows every metric; the rules cover errors, latency, drift, accuracy and drops.
    families = {re.sub(r"_(bucket|sum|count|created)$", "", name) for name in exported if not name.endswith("_created")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used["dashboard"]}
    assert families <= shown, f"not on the dashboard: {sorted(families - shown)}"
    assert {"aideploy_requests_total", "aideploy_request_duration_seconds_bucket", "aideploy_drift_psi",
            "aideploy_drift_detected", "aideploy_rolling_accuracy", "aideploy_prediction_log_dropped_total",
            "aideploy_alerts_total"} <= used["rules"]


# --- The real thing ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ops-repo")
    return publish_tiny_repository(root / "repo", root / "exports")


def _query(client: httpx.Client, promql: str) -> dict:
    answer = client.get("/api/v1/query", params={"query": promql})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "success", (promql, body)
    return body["data"]


def _wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout} s (last: {last})")


@needs_prometheus
def test_a_real_prometheus_scrapes_the_server_and_evaluates_the_rules(tiny_repo, tmp_path):
    from aideploy.serve import running_server
    from aideploy.serve.process import free_port

    num_good, num_bad = 12, 3
    with running_server(tiny_repo, max_queue_delay_ms=0.5) as url:
        target = urllib.parse.urlsplit(url).netloc
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # closed below, once the process has stopped
        # The documented script, on a loopback port, with a short interval.
        prometheus = subprocess.Popen(
            ["sh", str(OPS / "run-prometheus.sh"), target, str(port)],
            env={**os.environ, "PROMETHEUS_INTERVAL": "1s", "TMPDIR": str(tmp_path)},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            with httpx.Client(base_url=url, timeout=30) as server:
                x = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
                for _ in range(num_good):
                    assert server.post("/v2/models/tiny/infer", json=v2_request(x)).status_code == 200
                wrong_shape = v2_request(np.zeros((1, 3), dtype=np.float32))
                for _ in range(num_bad):
                    assert server.post("/v2/models/tiny/infer", json=wrong_shape).status_code == 400
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
                def ready():
                    if prometheus.poll() is not None:
                        pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
                    try:
                        return api.get("/-/ready").status_code == 200
                    except httpx.TransportError:
                        return False  # not listening yet
                _wait_for("Prometheus ready", ready)

                def counted():
                    result = _query(api, "sum by (outcome) (aideploy_requests_total)")["result"]
                    return {row["metric"]["outcome"]: float(row["value"][1]) for row in result}
                by_outcome = _wait_for("the requests in Prometheus", counted)
                assert by_outcome == {"success": num_good, "client_error": num_bad}

                targets = api.get("/api/v1/targets").json()["data"]["activeTargets"]
                assert [(t["labels"]["job"], t["scrapeUrl"], t["health"]) for t in targets] == [
                    ("aideploy", f"{url}/metrics", "up")
                ]

                def evaluated():
                    groups = api.get("/api/v1/rules").json()["data"]["groups"]
                    rules = [rule for group in groups for rule in group["rules"]]
                    done = rules and all(not rule["lastEvaluation"].startswith("0001") for rule in rules)
                    return groups if done else None
                groups = _wait_for("every rule evaluated", evaluated)
                assert {group["name"] for group in groups} == {"aideploy-serving", "aideploy-monitoring"}
                for group in groups:
                    for rule in group["rules"]:
                        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
                assert sum(len(group["rules"]) for group in groups) == len(_rules())

                # Every dashboard query runs against the live data; the serving panels have data.
                for expr in _dashboard_exprs(_dashboard()):
                    if not expr.startswith("label_values("):
                        _query(api, _as_promql(expr))
                request_rate = _as_promql('sum(rate(aideploy_requests_total{model=~"$model"}[$__rate_interval]))')
                _wait_for("a request rate (two scrapes)", lambda: _query(api, request_rate)["result"])
        finally:
            os.killpg(prometheus.pid, signal.SIGTERM)
            try:
                assert prometheus.wait(30) == 0, (tmp_path / "prometheus.log").read_text()[-2000:]
            finally:
                if prometheus.poll() is None:
                    os.killpg(prometheus.pid, signal.SIGKILL)
                    prometheus.wait()
                log.close()
    # The script removes its temporary config and time series.
    assert not list(tmp_path.glob("aideploy-prometheus.*"))
