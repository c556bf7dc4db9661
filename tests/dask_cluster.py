"""A real Dask cluster for the tests: ``dask scheduler`` and two ``dask worker`` processes.

Started on free loopback ports with the command line of the ``distributed`` package (the
``[dask]`` extra, in the test extra), stopped after. Missing, its tests skip; with
``PIPELINE_TESTS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) they fail. Each worker is its own
process (no nanny), so a test can SIGKILL one as a crash or an OOM kill would.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .jsonserver import unavailable
from .redis import free_port

INSTALL_HINT = "pip install 'customer-pipeline[dask]'"
START_DEADLINE = 60.0


class DaskCluster:
    """A scheduler and its workers, each a process of ours: the address, and kill a worker."""

    def __init__(self, folder: Path, workers: int = 2) -> None:
        if importlib.util.find_spec("distributed") is None:
            unavailable(f"distributed not installed: {INSTALL_HINT}")
        self.folder = folder
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                    "--no-dashboard")  # fmt: skip
        for n in range(workers):
            self.workers.append(self._start(
                f"worker-{n}", "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                "--no-nanny", "--no-dashboard", "--local-directory", str(folder / f"w{n}"),
            ))  # fmt: skip
        self.wait_for_workers(workers)

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=self.folder)  # fmt: skip
        self.procs.append(proc)
        return proc

    def client(self) -> Any:
        """A client of the scheduler (the caller closes it)."""
        from distributed import Client

        return Client(self.address, timeout=START_DEADLINE)

    def wait_for_workers(self, count: int) -> None:
        """Until ``count`` workers are connected, or fail with their logs."""
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                with self.client() as client:
                    client.wait_for_workers(count, timeout=START_DEADLINE)
                    return
            except (OSError, TimeoutError) as exc:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()
                    logs = "\n".join(p.read_text()[-1500:] for p in self.folder.glob("*.log"))
                    pytest.fail(f"the Dask cluster did not start ({exc}):\n{logs}")
                time.sleep(0.1)

    def kill_worker(self, index: int) -> None:
        """SIGKILL one worker process, as a crash or an OOM kill would."""
        proc = self.workers[index]
        proc.kill()
        proc.wait(timeout=10)

    def __enter__(self) -> DaskCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process still running."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A fresh scheduler and two workers for one test (skips, or fails in CI, without them)."""
    with DaskCluster(tmp_path_factory.mktemp("dask")) as cluster:
        yield cluster
