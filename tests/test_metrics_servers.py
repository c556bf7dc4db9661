"""The metrics against the real things: a Pushgateway, a Prometheus that scrapes, promtool."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from customer_pipeline import AuthError, Progress, run_pipeline

from .conftest import fast_settings
from .jsonserver import free_port
from .prometheus import promtool, query, running_pushgateway
from .test_metrics import P, parse, total

SCRAPE_DEADLINE_S = 30.0


async def test_a_run_pushes_to_a_real_pushgateway_and_a_failure_replaces_all_but_the_success(
    pushgateway: str, simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=60, failure_rate=0.2, api_key="the-right-key")
    settings = fast_settings(base_url=base, output_dir=tmp_path / "a", api_key="the-right-key",
                             pushgateway=pushgateway, metrics_instance="ci")  # fmt: skip
    result = await run_pipeline(settings)
    group = frozenset({("job", "customer_pipeline"), ("instance", "ci")})

    def pushed() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse(httpx.get(f"{pushgateway}/metrics", timeout=5).text)

    first = pushed()
    requests = sum(v for (name, labels), v in first.items()
                   if name == P + "http_requests_total" and group <= labels)  # fmt: skip
    assert requests == result.report["api"]["requests"]
    assert first[(P + "run_complete", group)] == 1
    success = first[(P + "last_success_timestamp_seconds", group)]
    assert success > 0

    failing = settings.model_copy(update={"api_key": fast_settings().api_key,
                                          "output_dir": tmp_path / "b"})  # fmt: skip
    with pytest.raises(AuthError):
        await run_pipeline(failing)
    after = pushed()
    assert after[(P + "run_outcome", group | {("outcome", "failed")})] == 1
    assert after[(P + "run_complete", group)] == 0
    assert after[(P + "last_success_timestamp_seconds", group)] == success
    # The group is replaced: the first run's retries do not linger next to this run's figures.
    assert any(name == P + "retries_total" and group <= labels for name, labels in first)
    assert not any(name == P + "retries_total" and group <= labels for name, labels in after)


async def test_a_real_prometheus_scrapes_the_run_and_promql_returns_its_requests(
    prometheus: Callable[[list[str]], str], simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=120, per_page=6, latency_ms=20, failure_rate=0.1)
    port = free_port()
    server = prometheus([f"127.0.0.1:{port}"])
    registry = CollectorRegistry()
    seen: list[float] = []
    promql = f'sum(customer_pipeline_http_requests_total{{instance="127.0.0.1:{port}"}})'

    def wait_for_scrape(progress: Progress) -> None:
        # At the last page every request has been answered: hold the run (the loop, not the
        # metrics server's thread) until Prometheus has scraped that final count.
        if progress.pages_done != progress.pages_total:
            return
        expected = total(registry, "http_requests_total")
        end = time.monotonic() + SCRAPE_DEADLINE_S
        while time.monotonic() < end:
            result = query(server, promql)
            if result and float(result[0]["value"][1]) == expected:
                seen.append(expected)
                return
            time.sleep(0.2)
        pytest.fail(f"Prometheus did not scrape {expected} requests; last answer: {result}")

    settings = fast_settings(base_url=base, output_dir=tmp_path, concurrency=2,
                             metrics_port=port)  # fmt: skip
    result = await run_pipeline(settings, registry=registry, on_progress=wait_for_scrape)
    assert seen == [result.report["api"]["requests"]]
    # Prometheus saw the target go down when the run ended.
    up = query(server, f'up{{instance="127.0.0.1:{port}"}}')
    assert up and up[0]["metric"]["job"] == "customer_pipeline"


async def test_promtool_accepts_the_textfile(simulator: Any, tmp_path: Path) -> None:
    base, _ = await simulator(total=300, failure_rate=0.3, dirty_rate=0.3, duplicate_rate=0.2)
    textfile = tmp_path / "customer_pipeline.prom"
    await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path / "out",
                                     metrics_file=textfile))  # fmt: skip
    output = promtool("check", "metrics", stdin=textfile.read_bytes())
    assert "error" not in output.lower(), output


def test_a_test_pushgateway_keeps_its_state_in_the_tests_own_folder(tmp_path: Path) -> None:
    with running_pushgateway(tmp_path) as url:
        body = b"# TYPE probe gauge\nprobe 1\n"
        httpx.put(f"{url}/metrics/job/probe", content=body, timeout=5).raise_for_status()
    assert b"probe" in (tmp_path / "pushgateway.data").read_bytes()


@pytest.mark.parametrize(("host", "shown"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
def test_a_port_picked_for_metrics_is_shown_above_the_progress_bar(
    tmp_path: Path, host: str, shown: str
) -> None:
    from click.testing import CliRunner

    from customer_pipeline.cli import main

    from .helpers import pages_api

    with pages_api(set()):
        result = CliRunner().invoke(main, [
            "run", "--base-url", "http://api.test", "--output-dir", str(tmp_path),
            "--transport", "httpx", "--metrics-port", "0", "--metrics-host", host, "--progress",
            "--rate-limit", "0",
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    prefix = f"metrics served on http://{shown}:"
    assert prefix in result.output, result.output
    port = result.output.split(prefix, 1)[1].split("/", 1)[0]
    assert int(port) > 0
