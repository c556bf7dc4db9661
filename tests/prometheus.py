"""Prometheus, its Pushgateway and promtool, started for real: fixtures and a query helper.

Debian packages them: ``apt-get install prometheus prometheus-pushgateway`` (promtool comes
with prometheus). Missing, their tests skip; with ``PIPELINE_TESTS_REQUIRE_SERVICES=1`` (set
by ``.ci/run``) they fail instead. Each server runs on a free loopback port in its own process
group and is stopped when its test ends.

Facts (prometheus 2.42, pushgateway 1.5.1, Debian 12):
- prometheus answers ``/-/ready`` with 200 once it scrapes and serves queries; it starts in
  about a second with an empty ``--storage.tsdb.path``.
- ``scrape_interval`` may be as short as 1s; the first scrape of a target comes within one
  interval of the start, at an offset of its own.
- The Pushgateway keeps what it is sent per group (job and grouping labels); PUT replaces a
  group, POST replaces only the metrics it names. Debian builds it with
  ``--persistence.file=/var/lib/prometheus/pushgateway.data`` as the default, machine-wide
  (and loaded at start), so each gateway here gets its own file in the test's tmp folder
  (written when it stops).
  Its ``/metrics`` shows every pushed series with ``job`` and ``instance`` labels added.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .jsonserver import _stop, free_port, unavailable

INSTALL_HINT = "apt-get install prometheus prometheus-pushgateway"
START_DEADLINE = 30.0
POLL_INTERVAL = 0.05


def binary(name: str) -> str:
    """The path of ``name`` (prometheus, prometheus-pushgateway, promtool), or skip/fail."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed: {INSTALL_HINT}")
    return path


@contextlib.contextmanager
def _process(argv: list[str], ready_url: str, log_path: Path) -> Iterator[None]:
    """Run ``argv`` until ``ready_url`` answers 200; stop its process group at the end."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        end = time.monotonic() + START_DEADLINE
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if client.get(ready_url).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() >= end:
                    text = log_path.read_text(errors="replace")
                    raise RuntimeError(f"{argv[0]} did not start; its output:\n{text[-3000:]}")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=POLL_INTERVAL)
        yield
    finally:
        _stop(proc)


@contextlib.contextmanager
def running_pushgateway(folder: Path) -> Iterator[str]:
    """A real Pushgateway on a free loopback port, its state in ``folder``; yields its URL."""
    path = binary("prometheus-pushgateway")
    url = f"http://127.0.0.1:{free_port()}"
    # Debian's default file is machine-wide: a test's pushes must not land there.
    argv = [path, f"--web.listen-address={url.removeprefix('http://')}",
            f"--persistence.file={folder / 'pushgateway.data'}"]  # fmt: skip
    with _process(argv, f"{url}/-/ready", folder / "pushgateway.log"):
        yield url


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """The URL of a real Pushgateway on a free loopback port, with its own empty state."""
    with running_pushgateway(tmp_path) as url:
        yield url


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], str]]:
    """Start a real Prometheus scraping ``targets`` (host:port) every second; returns its URL."""
    path = binary("prometheus")
    with contextlib.ExitStack() as stack:

        def start(targets: list[str]) -> str:
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: customer_pipeline\n"
                f"    static_configs:\n      - targets: {targets!r}\n"
            )
            url = f"http://127.0.0.1:{free_port()}"
            argv = [path, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={url.removeprefix('http://')}"]  # fmt: skip
            stack.enter_context(_process(argv, f"{url}/-/ready", tmp_path / "prometheus.log"))
            return url

        yield start


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector ``promql`` gives now, through Prometheus's HTTP API."""
    answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    answer.raise_for_status()
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def promtool(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    """Run promtool; its output, or the test fails with it."""
    done = subprocess.run(
        [binary("promtool"), *args], input=stdin, capture_output=True, cwd=cwd, timeout=60
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output
