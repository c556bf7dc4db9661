"""A run sharded across Dask workers writes exactly what one process writes.

The cluster tests start real processes: ``--dask local:N`` a LocalCluster, the
``dask_cluster`` fixture a ``dask scheduler`` and two ``dask worker`` processes
(tests/dask_cluster.py). The simulator serves them all on loopback, from the test's loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from customer_pipeline import Settings, run_pipeline
from customer_pipeline.cli import main
from customer_pipeline.cluster import plan_shards
from customer_pipeline.errors import CheckpointError, ConfigError, Interrupted

from . import flaky_shard
from .conftest import fast_settings
from .dask_cluster import DaskCluster
from .helpers import simulator_process
from .test_metrics import total, value

DIRTY = {"failure_rate": 0.2, "duplicate_rate": 0.1, "dirty_rate": 0.1}


def customers(result: Any) -> list[dict[str, Any]]:
    """The customers of a run's export."""
    return list(orjson.loads(result.customers_path.read_bytes())["customers"])


def rejects(folder: Path) -> list[bytes]:
    """The run's rejected records, in a fixed order (their arrival order may differ)."""
    path = folder / "rejected_records.jsonl"
    return sorted(path.read_bytes().splitlines()) if path.exists() else []


async def one_process(base: str, folder: Path, **overrides: Any) -> Any:
    """The same run without Dask: what a cluster run must match."""
    return await run_pipeline(fast_settings(base_url=base, output_dir=folder, **overrides))


def assert_same_run(cluster: Any, single: Any) -> None:
    """Same customers, same counts, same rejects, same completeness."""
    assert customers(cluster) == customers(single)
    assert cluster.report["counts"] == single.report["counts"]
    assert cluster.report["quality"] == single.report["quality"]
    assert cluster.report["business_fields"] == single.report["business_fields"]
    assert cluster.report["api"]["total_pages"] == single.report["api"]["total_pages"]
    assert rejects(cluster.customers_path.parent) == rejects(single.customers_path.parent)
    assert (cluster.complete, cluster.failed_pages) == (single.complete, single.failed_pages)


def test_shards_are_contiguous_cover_every_unit_and_the_last_is_open() -> None:
    assert plan_shards(1, 10, 3) == [(1, 4), (5, 7), (8, None)]
    assert plan_shards(0, 1, 8) == [(0, 0), (1, None)]  # never more shards than units
    assert plan_shards(1, 1, 4) == [(1, None)]
    for count in range(1, 12):
        ranges = plan_shards(1, 25, count)
        covered = [n for lo, hi in ranges for n in range(lo, (hi or 25) + 1)]
        assert covered == list(range(1, 26))


@pytest.mark.parametrize(
    ("given", "fix"),
    [
        ({"dask": "local:0"}, "worker count"),
        ({"dask": "http://scheduler:8786"}, "tcp://scheduler:8786"),
        ({"dask": "tcp://scheduler"}, "tcp://scheduler:8786"),
        ({"shards": 0}, "from 1"),
        ({"dask": "local:2", "rate_limit": 5}, "--limiter-url"),
        ({"dask": "tcp://h:8786", "rate_limit": 5, "shards": 4}, "--limiter-url"),
    ],
)
def test_bad_cluster_settings_are_refused_naming_the_fix(given: dict[str, Any], fix: str) -> None:
    with pytest.raises(ConfigError, match=r"dask|shards") as caught:
        fast_settings(**given)
    assert fix in str(caught.value)


def test_one_worker_or_one_shard_needs_no_shared_limiter() -> None:
    assert fast_settings(dask="local:1", rate_limit=5).dask == "local:1"
    assert fast_settings(dask="tcp://h:8786", rate_limit=5, shards=1).shards == 1
    shared = fast_settings(dask="local:4", rate_limit=5, limiter_url="redis://127.0.0.1:6379/0")
    assert shared.dask == "local:4"


def test_several_workers_sharing_a_rate_limit_without_limiter_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--dask", "local:2", "--rate-limit", "5",
                                       "--output-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and "--limiter-url" in result.output
    assert "Traceback" not in result.output


async def test_without_distributed_a_cluster_run_is_a_config_error_with_the_install_hint(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, sim = await simulator()
    monkeypatch.setitem(sys.modules, "distributed", None)  # what a missing package looks like
    with pytest.raises(ConfigError, match=r"pip install 'customer-pipeline\[dask\]'"):
        await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path, dask="local:2"))
    assert sim.stats.requests == 0  # refused before any request


async def test_local_cluster_matches_one_process_with_5xx_duplicates_and_dirty_records(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=480, per_page=8, **DIRTY)
    single = await one_process(base, tmp_path / "one")
    registry = CollectorRegistry()
    settings = fast_settings(base_url=base, output_dir=tmp_path / "dask", dask="local:2",
                             shards=5)  # fmt: skip
    result = await run_pipeline(settings, registry=registry)
    assert_same_run(result, single)
    assert single.duplicates_removed > 0 and single.rejected > 0  # the data was dirty
    # The workers' events reached the client: the report's and the metrics' API figures.
    api = result.report["api"]
    pages = single.report["api"]["pages_fetched"]
    assert api["pages_fetched"] == pages and api["retries"] > 0
    assert total(registry, "http_requests_total") == api["requests"]
    assert value(registry, "pages_total", outcome="fetched") == pages
    assert total(registry, "records_total") == result.report["counts"]["raw_records"]
    assert not (tmp_path / "dask" / ".shards").exists()  # a complete run keeps no checkpoint


async def test_real_cluster_pulls_5xx_and_duplicates_exactly(
    simulator: Any, tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    base, sim = await simulator(total=600, per_page=10, **DIRTY)
    single = await one_process(base, tmp_path / "one")
    served = sim.stats.requests
    settings = fast_settings(base_url=base, output_dir=tmp_path / "dask",
                             dask=dask_cluster.address, shards=4)  # fmt: skip
    result = await run_pipeline(settings)
    assert_same_run(result, single)
    assert result.report["api"]["requests"] == sim.stats.requests - served
    with dask_cluster.client() as client:  # both workers ran shards
        ran = client.run(lambda dask_worker: len(dask_worker.state.log))
    assert all(ran.values()), ran


async def test_a_worker_killed_mid_run_costs_a_retry_and_the_output_stays_exact(
    simulator: Any, tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    base, sim = await simulator(total=600, per_page=10, latency_ms=40, **DIRTY)
    single = await one_process(base, tmp_path / "one", concurrency=1)
    served = sim.stats.requests
    settings = fast_settings(base_url=base, output_dir=tmp_path / "dask", concurrency=1,
                             dask=dask_cluster.address, shards=4)  # fmt: skip
    killed_at: list[int] = []

    async def kill_midway() -> None:
        # Polls the simulator's count: it has no event to wait on.
        while sim.stats.requests - served < 25:  # noqa: ASYNC110 (a third of the requests)
            await anyio.sleep(0.01)
        await anyio.to_thread.run_sync(dask_cluster.kill_worker, 0)
        killed_at.append(sim.stats.requests - served)

    async with anyio.create_task_group() as group:
        group.start_soon(kill_midway)
        result = await run_pipeline(settings)
        group.cancel_scope.cancel()
    assert killed_at and killed_at[0] < result.report["api"]["requests"]  # it was mid-run
    assert dask_cluster.workers[0].returncode == -9
    assert_same_run(result, single)
    # The lost shard ran again on the other worker, from its checkpoint on the shared disk.
    assert result.report["run"]["resumed_pages"] > 0


async def test_a_sequential_source_runs_as_one_task_and_says_so(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base, _ = await simulator(total=60, per_page=7, pagination="cursor", **DIRTY)
    style = {"paginator": "cursor", "next_path": "next_cursor"}
    single = await one_process(base, tmp_path / "one", **style)
    settings = fast_settings(base_url=base, output_dir=tmp_path / "dask", dask="local:1",
                             shards=4, **style)  # fmt: skip
    with caplog.at_level("WARNING", logger="customer_pipeline"):
        result = await run_pipeline(settings)
    assert_same_run(result, single)
    assert "the run is one task on one worker" in caplog.text


async def test_pages_a_shard_cannot_fetch_are_failed_pages_and_the_run_is_incomplete(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(total=300, per_page=10, failure_rate=0.3)
    settings = fast_settings(base_url=base, output_dir=tmp_path, dask="local:1", shards=3,
                             max_retries=0, per_page=10)  # fmt: skip
    result = await run_pipeline(settings)
    assert result.exit_code == 3 and result.failed_pages
    assert f"pages [{result.failed_pages[0]}" in result.incomplete_reasons[0]
    got = {c["customer_id"] for c in customers(result)}
    lost = {i for page in result.failed_pages for i in range(page * 10 - 9, page * 10 + 1)}
    assert got == set(range(1, 301)) - lost  # every other page is in, each customer once
    document = orjson.loads(result.customers_path.read_bytes())["metadata"]
    assert document["complete"] is False and document["failed_pages"] == result.failed_pages
    with contextlib.suppress(FileNotFoundError):  # kept for --resume
        assert any((tmp_path / ".shards").iterdir())


def test_settings_repr_of_a_cluster_run_hides_the_key() -> None:
    settings = Settings(api_key="sk-cluster-secret", dask="local:2", rate_limit=0)
    assert "sk-cluster-secret" not in repr(settings)


async def test_an_interrupted_cluster_run_resumes_from_the_shards_checkpoints(
    simulator: Any, tmp_path: Path
) -> None:
    base, sim = await simulator(total=600, per_page=10, latency_ms=20, **DIRTY)
    single = await one_process(base, tmp_path / "one", per_page=10)
    served = sim.stats.requests
    settings = fast_settings(base_url=base, output_dir=tmp_path / "dask", concurrency=1,
                             per_page=10, dask="local:2", shards=4)  # fmt: skip
    stop = anyio.Event()

    async def stop_midway() -> None:
        while sim.stats.requests - served < 20:  # noqa: ASYNC110 (the simulator has no event)
            await anyio.sleep(0.01)
        stop.set()

    async with anyio.create_task_group() as group:
        group.start_soon(stop_midway)
        with pytest.raises(Interrupted, match="--resume"):
            await run_pipeline(settings, stop=stop)
    assert any((tmp_path / "dask" / ".shards").iterdir())
    with pytest.raises(CheckpointError, match="--resume"):  # as for one process
        await run_pipeline(settings)
    result = await run_pipeline(settings, mode="resume")
    assert_same_run(result, single)
    assert result.report["run"]["resumed_pages"] > 0
    assert not (tmp_path / "dask" / ".shards").exists()


async def test_resuming_an_incomplete_cluster_run_fetches_the_failed_pages_again(
    simulator: Any, tmp_path: Path
) -> None:
    base, sim = await simulator(total=300, per_page=10, failure_rate=0.3)
    settings = fast_settings(base_url=base, output_dir=tmp_path, dask="local:1", shards=3,
                             max_retries=0, per_page=10)  # fmt: skip
    first = await run_pipeline(settings)
    assert first.exit_code == 3
    sim.config = dataclasses.replace(sim.config, failure_rate=0.0)  # the API recovered
    resumed = await run_pipeline(settings, mode="resume")
    assert resumed.exit_code == 0 and resumed.failed_pages == []
    assert [c["customer_id"] for c in customers(resumed)] == list(range(1, 301))


async def test_a_shard_task_that_raises_once_is_rerun_and_the_output_stays_exact(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dask

    base, _ = await simulator(total=240, per_page=8, **DIRTY)
    single = await one_process(base, tmp_path / "one")
    flags = tmp_path / "flags"
    flags.mkdir()
    monkeypatch.setenv(flaky_shard.FOLDER_ENV, str(flags))  # the spawned workers inherit it
    settings = fast_settings(base_url=base, output_dir=tmp_path / "dask", dask="local:2",
                             shards=3)  # fmt: skip
    assert settings.dask_retries == 2
    with dask.config.set({"distributed.worker.preload": [flaky_shard.__file__]}):
        result = await run_pipeline(settings)
    assert len(list(flags.iterdir())) == 3  # every shard raised once
    assert_same_run(result, single)
    assert result.report["run"]["resumed_pages"] > 0  # the reruns replayed their checkpoints


def test_dask_retries_is_a_setting_from_0_to_100() -> None:
    assert fast_settings(dask_retries=0).dask_retries == 0
    with pytest.raises(ConfigError, match="dask_retries"):
        fast_settings(dask_retries=101)
    result = CliRunner().invoke(main, ["run", "--dask-retries", "-1"])
    assert result.exit_code == 2 and "error: " in result.output and "dask" in result.output


def test_the_dask_dashboard_link_is_shown_above_the_progress_bar(tmp_path: Path) -> None:
    with simulator_process("--total", "24", "--per-page", "6", "--failure-rate", "0",
                           "--rate-limit", "0", "--latency-ms", "0") as url:  # fmt: skip
        result = CliRunner().invoke(main, [
            "run", "--base-url", url, "--output-dir", str(tmp_path), "--dask", "local:1",
            "--rate-limit", "0", "--progress",
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    prefix = "dask dashboard: http://127.0.0.1:"
    assert prefix in result.output, result.output
    assert result.output.split(prefix, 1)[1].split("/", 1)[0].isdigit()


def cli_run(url: str, folder: Path, *extra: str) -> list[str]:
    """The command line of a run against ``url`` writing to ``folder``."""
    return [sys.executable, "-m", "customer_pipeline", "run", "--base-url", url, "--output-dir",
            str(folder), "--rate-limit", "0", "--per-page", "10", "--concurrency", "1",
            "--no-progress", *extra]  # fmt: skip


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started in its own session and everything it started (its workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the orphaned workers are reaped by init, not by us
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"processes of group {proc.pid} outlived SIGKILL")


def export(folder: Path) -> Any:
    """A run's export without its timestamp."""
    document = orjson.loads((folder / "processed_customers.json").read_bytes())
    del document["metadata"]["export_timestamp"]
    return document


def test_kill_9_of_the_client_mid_run_then_resume_gives_the_uninterrupted_export(
    tmp_path: Path,
) -> None:
    dask_run = ("--dask", "local:2", "--shards", "6")
    with simulator_process("--total", "600", "--per-page", "10", "--failure-rate", "0",
                           "--duplicate-rate", "0.1", "--dirty-rate", "0.1", "--rate-limit", "0",
                           "--latency-ms", "30") as url:  # fmt: skip
        single = subprocess.run(cli_run(url, tmp_path / "one"), capture_output=True, timeout=120)
        assert single.returncode == 0, single.stderr
        out = tmp_path / "dask"
        shards = out / ".shards"
        client = subprocess.Popen(cli_run(url, out, *dask_run), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            # One thread per worker: a third shard folder means a first shard has finished.
            while not (shards.is_dir() and len(list(shards.iterdir())) >= 3):
                assert client.poll() is None, "the run ended before it was killed"
                assert time.monotonic() < deadline, "no shard finished in time"
                time.sleep(0.02)
            os.kill(client.pid, signal.SIGKILL)  # the client alone, as an OOM kill would
            assert client.wait(timeout=10) == -signal.SIGKILL
        finally:
            kill_group(client)  # its LocalCluster's processes, left orphaned
        assert not (out / "processed_customers.json").exists()
        resumed = subprocess.Popen(cli_run(url, out, *dask_run, "--resume"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)  # fmt: skip
        try:
            _, stderr = resumed.communicate(timeout=120)
        finally:
            kill_group(resumed)
    assert resumed.returncode == 0, stderr
    assert export(out) == export(tmp_path / "one")
    report = orjson.loads((out / "summary_report.json").read_bytes())
    assert report["run"]["resumed_pages"] > 0  # the finished shards were replayed, not refetched
    assert not shards.exists()
