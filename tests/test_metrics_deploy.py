"""deploy/: the alert rules and the dashboard name only metrics the program exports; promtool
accepts the rules (and their tests) and the example configuration."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from customer_pipeline.observe.metrics import PipelineMetrics

from .prometheus import promtool

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "customer-pipeline.json"
RULES = DEPLOY / "prometheus"
METRIC = re.compile(r"\bcustomer_pipeline_[a-z_]+\b")
# What each metric type shows up as in a query.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",),
}


def exported_names() -> set[str]:
    """Every series name the program's metrics can be queried by."""
    registry = CollectorRegistry()
    PipelineMetrics(registry, version="test")
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in SUFFIXES[family.type]
    }


def dashboard_queries() -> dict[str, list[str]]:
    """Each panel's title and its queries."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in panels}


def rule_queries() -> dict[str, str]:
    """Each alert's name and its query."""
    groups = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_exported_names_follow_the_conventions() -> None:
    names = exported_names()
    assert "customer_pipeline_http_requests_total" in names
    assert "customer_pipeline_http_request_duration_seconds_bucket" in names
    assert "customer_pipeline_build_info" in names
    for name in names:
        assert re.fullmatch(r"customer_pipeline_[a-z_]+", name), name
        # Base units: seconds, never milliseconds; counters end in _total.
        assert "_ms" not in name and "millis" not in name, name


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_query_names_only_metrics_the_program_exports(source: str) -> None:
    exported = exported_names()
    queries: dict[str, Any] = dashboard_queries() if source == "dashboard" else rule_queries()
    assert queries
    for title, exprs in queries.items():
        exprs = [exprs] if isinstance(exprs, str) else exprs
        assert exprs, f"{title} has no query"
        for expr in exprs:
            named = set(METRIC.findall(expr))
            assert named, f"{title}: {expr} names no customer_pipeline_ metric"
            assert named <= exported, f"{title}: {sorted(named - exported)} are not exported"


def test_the_dashboard_has_the_panels_the_issue_lists() -> None:
    titles = " | ".join(dashboard_queries()).lower()
    for topic in ("requests by status", "429", "records by outcome", "quality band",
                  "run duration", "since the last success"):  # fmt: skip
        assert topic in titles, topic


def test_the_alerts_cover_failures_delays_and_rate_limits() -> None:
    assert set(rule_queries()) == {
        "CustomerPipelineRunFailed",
        "CustomerPipelineRunIncomplete",
        "CustomerPipelineNoRecentSuccess",
        "CustomerPipelineRateLimited",
        "CustomerPipelineRetriesHigh",
    }


def test_promtool_accepts_the_rules_their_tests_and_the_example_config() -> None:
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", "alerts.yml", cwd=RULES)
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml", cwd=RULES)
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=RULES)


def test_the_readme_lists_every_metric_and_every_retry_reason() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    section = readme.split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    registry = CollectorRegistry()
    PipelineMetrics(registry, version="test")
    families = registry.collect()
    listed = {family.name + ("_info" if family.type == "info" else "") for family in families}
    listed = {name + "_total" if name + "_total" in rows else name for name in listed}
    assert listed <= rows, listed - rows
    from .test_metrics import LABEL_VALUES

    retry_row = next(line for line in section.splitlines() if "retries_total`" in line)
    assert all(f"`{reason}`" in retry_row or reason.isdigit() for reason in LABEL_VALUES["reason"])
