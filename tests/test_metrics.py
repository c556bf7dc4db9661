"""Prometheus metrics: they agree with the report, and each exposition works and fails cleanly."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from customer_pipeline import AuthError, ConfigError, Interrupted, Progress, run_pipeline
from customer_pipeline.cli import main

from .conftest import BASE_URL, fast_settings
from .helpers import http_server, pages_api
from .jsonserver import free_port

P = "customer_pipeline_"
LABEL_VALUES = {
    "reason": {"408", "429", "500", "502", "503", "504", "invalid_body", "timeout",
               "connection", "other"},
    "outcome": {"fetched", "failed", "replayed", "accepted", "duplicate", "rejected",
                "complete", "incomplete", "interrupted", "hit", "miss", "revalidated"},
    "band": {"high", "medium", "low"},
}  # fmt: skip


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent."""
    return registry.get_sample_value(P + name, labels) or 0.0


def total(registry: CollectorRegistry, name: str) -> float:
    """The sum of a sample name's values over all its label values."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == P + name
    )


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Exposition text as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_agree_with_the_report(simulator: Any, tmp_path: Path) -> None:
    base, _ = await simulator(
        total=600, per_page=6, failure_rate=0.2, truncate_rate=0.05, drop_rate=0.02,
        dirty_rate=0.2, duplicate_rate=0.2, rate_limit=50,
    )  # fmt: skip
    registry = CollectorRegistry()
    settings = fast_settings(base_url=base, output_dir=tmp_path, concurrency=16,
                             rate_limit=5000, max_retries=10)  # fmt: skip
    result = await run_pipeline(settings, registry=registry)
    report = result.report  # complete or not: 429s with a 5 ms pause may spend a page's retries
    api, counts = report["api"], report["counts"]
    assert api["retries"] > 0 and api["rate_limited_429"] > 0 and counts["rejected"] > 0

    assert total(registry, "http_requests_total") == api["requests"]
    assert value(registry, "http_request_duration_seconds_count") == api["requests"]
    by_status = {
        key: count for key, count in api["failures_by_status"].items() if key.isdigit()
    }
    for status, count in by_status.items():
        assert value(registry, "http_requests_total", status=status) == count
    assert total(registry, "retries_total") == api["retries"]
    assert value(registry, "rate_limited_total") == api["rate_limited_429"]
    assert value(registry, "rate_limit_wait_seconds_total") == pytest.approx(
        api["rate_limit_wait_s"], abs=0.001
    )
    assert value(registry, "retry_after_wait_seconds_total") == pytest.approx(
        api["retry_after_wait_s"], abs=0.001
    )
    assert value(registry, "pages_total", outcome="fetched") == api["pages_fetched"]
    assert value(registry, "pages_total", outcome="failed") == len(api["failed_pages"])
    assert value(registry, "pages_total", outcome="replayed") == report["run"]["resumed_pages"]
    assert value(registry, "records_total", outcome="accepted") == counts["unique_customers"]
    assert value(registry, "records_total", outcome="duplicate") == counts["duplicates_removed"]
    assert value(registry, "records_total", outcome="rejected") == counts["rejected"]
    assert total(registry, "records_total") == counts["raw_records"]
    for band in ("high", "medium", "low"):
        expected = report["quality"]["bands"][f"{band}_quality"]
        assert value(registry, "customers", band=band) == expected
    assert value(registry, "run_duration_seconds") == pytest.approx(
        report["run"]["elapsed_s"], abs=0.001
    )
    assert value(registry, "run_complete") == int(result.complete)
    outcome = "complete" if result.complete else "incomplete"
    assert value(registry, "run_outcome", outcome=outcome) == 1
    assert total(registry, "run_outcome") == 1
    assert value(registry, "last_run_timestamp_seconds") > 0
    assert value(registry, "in_flight_requests") == 0
    assert value(registry, "build_info", version=report["run"]["pipeline_version"]) == 1
    # Low cardinality: a status code or "error", else a few fixed words; never a page or URL.
    for family in registry.collect():
        for sample in family.samples:
            for label, text in sample.labels.items():
                if label == "status":
                    assert text.isdigit() or text == "error", sample
                elif label in LABEL_VALUES:
                    assert text in LABEL_VALUES[label], sample


async def test_cache_hits_and_misses_agree_with_the_report(simulator: Any, tmp_path: Path) -> None:
    base, _ = await simulator(total=60, per_page=6)
    settings = fast_settings(base_url=base, output_dir=tmp_path, api_key="",
                             cache=f"sqlite:///{tmp_path / 'cache.db'}")  # fmt: skip
    for _run in ("first", "cached"):
        registry = CollectorRegistry()
        report = (await run_pipeline(settings, registry=registry)).report
        api = report["api"]
        assert value(registry, "cache_requests_total", outcome="hit") == api["cache_hits"]
        assert value(registry, "cache_requests_total", outcome="miss") == api["cache_misses"]
        assert total(registry, "http_requests_total") == api["requests"]
    assert api["cache_hits"] == 10 and api["requests"] == 0  # the rerun asked the API nothing


async def test_incomplete_then_resumed_runs_count_failed_and_replayed_pages(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    settings = fast_settings(output_dir=tmp_path, max_retries=1)
    with pages_api({3}):
        first = await run_pipeline(settings, registry=registry)
    assert first.failed_pages == [3]
    assert value(registry, "pages_total", outcome="failed") == 1
    assert value(registry, "run_complete") == 0
    assert value(registry, "run_outcome", outcome="incomplete") == 1
    assert value(registry, "last_success_timestamp_seconds") == 0
    with pages_api(set()):
        second = await run_pipeline(settings, registry=registry, mode="resume")
    assert second.complete
    assert value(registry, "pages_total", outcome="replayed") == 7
    assert second.report["run"]["resumed_pages"] == 7
    assert value(registry, "run_outcome", outcome="incomplete") == 0
    assert value(registry, "run_outcome", outcome="complete") == 1
    # Runs sharing a registry add up, as a long-lived process's counters do.
    requests = first.report["api"]["requests"] + second.report["api"]["requests"]
    assert total(registry, "http_requests_total") == requests


async def test_a_failed_run_says_so_and_keeps_the_last_success_in_the_textfile(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(api_key="the-right-key")
    textfile = tmp_path / "customer_pipeline.prom"
    good = fast_settings(base_url=base, output_dir=tmp_path / "a", metrics_file=textfile,
                         api_key="the-right-key")  # fmt: skip
    await run_pipeline(good)
    first = parse(textfile.read_text())
    success = first[(P + "last_success_timestamp_seconds", frozenset())]
    assert success > 0 and first[(P + "run_complete", frozenset())] == 1
    assert not any(name.endswith("_created") for name, _ in first)

    bad = good.model_copy(update={"api_key": fast_settings().api_key,
                                  "output_dir": tmp_path / "b"})  # fmt: skip
    with pytest.raises(AuthError):
        await run_pipeline(bad)
    after = parse(textfile.read_text())
    assert after[(P + "run_outcome", frozenset({("outcome", "failed")}))] == 1
    assert after[(P + "run_complete", frozenset())] == 0
    assert after[(P + "last_run_timestamp_seconds", frozenset())] >= success
    assert after[(P + "last_success_timestamp_seconds", frozenset())] == success
    assert [p.name for p in tmp_path.iterdir() if "prom" in p.name] == [textfile.name]


def test_a_missing_textfile_folder_fails_before_any_request(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "run", "--base-url", "http://127.0.0.1:1", "--output-dir", str(tmp_path / "out"),
        "--metrics-file", str(tmp_path / "nowhere" / "m.prom"), "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "error: cannot write the metrics file" in result.output
    assert "--metrics-file" in result.output


async def test_metrics_port_serves_while_the_run_lasts_then_frees_the_port(
    tmp_path: Path,
) -> None:
    port = free_port()
    scraped: list[str] = []

    def scrape(progress: Progress) -> None:
        # The server answers from its own thread while the run's loop waits here.
        if progress.pages_done == 4:
            scraped.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)

    with pages_api(set()) as router:
        router.route(host="127.0.0.1").pass_through()
        result = await run_pipeline(
            fast_settings(output_dir=tmp_path, metrics_port=port), on_progress=scrape
        )
    live = parse(scraped[0])
    fetched = live[(P + "pages_total", frozenset({("outcome", "fetched")}))]
    assert 4 <= fetched < result.report["api"]["pages_fetched"] + 1
    assert (P + "run_complete", frozenset()) in live
    # Not known yet: a 0 would fire CustomerPipelineNoRecentSuccess on every healthy run.
    assert (P + "last_success_timestamp_seconds", frozenset()) not in live
    assert (P + "last_run_timestamp_seconds", frozenset()) not in live
    # Free again: a server binds it as the next run's would (it would fail if one listened).
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


@contextlib.contextmanager
def port_in_use() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_a_metrics_port_in_use_fails_before_any_request(tmp_path: Path) -> None:
    with port_in_use() as port, respx.mock(assert_all_called=False) as router:
        route = router.get(f"{BASE_URL}/api/users").respond(200, json={"data": []})
        with pytest.raises(ConfigError, match="--metrics-port") as caught:
            await run_pipeline(fast_settings(output_dir=tmp_path, metrics_port=port))
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert route.call_count == 0


def test_a_metrics_port_in_use_exits_2_with_the_fix(tmp_path: Path) -> None:
    with port_in_use() as port:
        # Nothing listens at the API: a request would exit 1, not 2.
        result = CliRunner().invoke(main, [
            "run", "--base-url", "http://127.0.0.1:1", "--output-dir", str(tmp_path),
            "--metrics-port", str(port), "--no-progress",
        ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"error: cannot serve metrics on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


class _Recorder(BaseHTTPRequestHandler):
    """A Pushgateway stand-in that remembers each push."""

    pushes: list[dict[str, Any]]

    def _push(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        auth = self.headers.get("authorization")
        push = {"method": self.command, "path": self.path, "auth": auth, "body": body.decode()}
        self.pushes.append(push)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_POST = _push

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def recording_gateway() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    pushes: list[dict[str, Any]] = []
    handler = type("Handler", (_Recorder,), {"pushes": pushes})
    with http_server(handler) as port:
        yield f"127.0.0.1:{port}", pushes


async def test_push_uses_basic_auth_and_put_and_leaves_out_an_unknown_last_success(
    tmp_path: Path,
) -> None:
    with recording_gateway() as (address, pushes):
        url = f"http://pusher:p%40ss-w0rd@{address}"
        settings = fast_settings(output_dir=tmp_path, pushgateway=url,
                                 metrics_instance="nightly-1")  # fmt: skip
        with pages_api(set()) as router:
            router.route(host="127.0.0.1").pass_through()
            await run_pipeline(settings)
        with pages_api({2}) as router:
            router.route(host="127.0.0.1").pass_through()
            await run_pipeline(settings.model_copy(update={"max_retries": 0}), mode="restart")
    complete, read, incomplete = pushes
    assert complete["method"] == incomplete["method"] == "PUT" and read["method"] == "GET"
    assert complete["path"] == "/metrics/job/customer_pipeline/instance/nightly-1"
    basic = "Basic " + base64.b64encode(b"pusher:p@ss-w0rd").decode()
    assert complete["auth"] == read["auth"] == basic
    assert f"{P}run_complete 1.0" in complete["body"]
    assert f"{P}last_success_timestamp_seconds" in complete["body"]
    assert f"{P}run_complete 0.0" in incomplete["body"]
    # The stand-in holds no success to carry over.
    assert f"{P}last_success_timestamp_seconds" not in incomplete["body"]
    log = (tmp_path / "pipeline.log").read_text()
    assert "p%40ss-w0rd" not in log and "p@ss-w0rd" not in log
    assert "metrics pushed to http://pusher:***@" in log


async def test_a_pushgateway_that_is_down_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    url = f"http://pusher:hunter2-secret@127.0.0.1:{free_port()}"
    with pages_api(set()) as router:
        router.route(host="127.0.0.1").pass_through()
        result = await run_pipeline(fast_settings(output_dir=tmp_path, pushgateway=url))
    assert result.exit_code == 0
    log = (tmp_path / "pipeline.log").read_text()
    assert "cannot push the metrics to the Pushgateway at http://pusher:***@127.0.0.1" in log
    assert "hunter2-secret" not in log
    report = result.report_path.read_text()
    assert "hunter2-secret" not in report and "pusher:***@" in report


def test_pushgateway_password_never_reaches_the_terminal(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "run", "--base-url", "http://127.0.0.1:1", "--output-dir", str(tmp_path),
        "--pushgateway", "ftp://u:hunter2-secret@x", "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 2
    assert "invalid pushgateway" in result.output and "hunter2-secret" not in result.output


def test_a_run_without_metrics_never_imports_prometheus_client(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from customer_pipeline.cli import main\n"
        "try:\n"
        f"    main(['run', '--simulate', '--no-progress', '--output-dir', {str(tmp_path)!r}])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr


async def test_an_interrupted_run_pushes_its_figures_too(tmp_path: Path) -> None:
    stop = asyncio.Event()
    registry = CollectorRegistry()
    with recording_gateway() as (address, pushes), pages_api(set()) as router:
        router.route(host="127.0.0.1").pass_through()
        settings = fast_settings(output_dir=tmp_path, pushgateway=f"http://{address}",
                                 concurrency=1)  # fmt: skip
        with pytest.raises(Interrupted):
            await run_pipeline(settings, registry=registry, stop=stop,
                               on_progress=lambda progress: stop.set())  # fmt: skip
    assert value(registry, "run_outcome", outcome="interrupted") == 1
    assert value(registry, "in_flight_requests") == 0
    [_, push] = pushes
    assert push["method"] == "PUT"
    assert f'{P}run_outcome{{outcome="interrupted"}} 1.0' in push["body"]
