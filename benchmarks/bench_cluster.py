"""A run sharded across Dask workers (issue 13): the two targets, measured in one run.

    python benchmarks/bench_cluster.py            # D1 and D2 (D2 needs redis-server on PATH)
    python benchmarks/bench_cluster.py -s D1      # one of them

D1: bench.py's S5 (10,000 pages x 100, 1,000,000 records) with ``--dask local:2`` against
one process, on the same machine: at most 0.7x the one-process time, the export exact.
D2: four workers (``--dask local:4``) share a 50 req/s budget through ``--limiter-url``
against a simulator that allows 60 req/s (429 past it): at least 90% of the budget (pages
over the fetch stage's wall time, the cluster's start excluded), at most 1% 429s, exact.
Memory: the client's peak RSS (the command's process) and each worker's, as the run logs it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from bench import PY, SCENARIOS, Scenario, exported_ids_are, run_child, server_stats, simulator
from bench_redis import redis_server

D2_PAGES = 1500
D2_PER_PAGE = 6
D2_SHARED_RATE = 50.0
D2_SERVER_RATE = 60.0
WORKER_RSS = re.compile(rb"worker peak RSS (\d+) MB")
CLIENT_RSS = re.compile(rb"client peak RSS (\d+) MB")

Check = tuple[str, bool, str]


def command(url: str, out: Path, s: Scenario, *extra: str) -> list[str]:
    """The run's command line, logging at INFO to stderr for the shards' memory."""
    return [PY, "-m", "customer_pipeline", "run", "--base-url", url, "--per-page",
            str(s.per_page), "--concurrency", str(s.concurrency), "--rate-limit",
            str(s.client_rate), "--max-retries", "10", "--output-dir", str(out),
            "--no-progress", "--log-level", "INFO", *extra]  # fmt: skip


def worker_rss(out: Path) -> list[int]:
    """The workers' peak RSS in MB, as the run logged them (one per shard)."""
    return [int(m) for m in WORKER_RSS.findall((out / "pipeline.log").read_bytes())]


def client_rss(out: Path) -> int:
    """The client process's own peak RSS in MB, as the run logged it (wait4's figure for the
    command is the largest of its process tree: a local cluster's workers are in it)."""
    found = CLIENT_RSS.findall((out / "pipeline.log").read_bytes())
    return int(found[-1]) if found else 0


def d1(work: Path) -> list[Check]:
    """S5 on one process, then on two local workers."""
    s = SCENARIOS["S5"]
    with simulator(s) as url:
        one = work / "d1-one"
        one_s, one_rss, _, _ = run_child(command(url, one, s))
        two = work / "d1-dask"
        two_s, _, _, _ = run_child(command(url, two, s, "--dask", "local:2"))
    exact = all(exported_ids_are(out / "processed_customers.json", range(1, s.total + 1))
                for out in (one, two))  # fmt: skip
    same = _customers_equal(one, two)
    ratio = two_s / one_s
    workers, two_rss = worker_rss(two), client_rss(two)
    timings = orjson.loads((two / "summary_report.json").read_bytes())["timings"]
    print(f"D1 (S5, 1,000,000 records): one process {one_s:.1f}s (peak RSS {one_rss:.0f} MB); "
          f"--dask local:2 {two_s:.1f}s = {ratio:.2f}x (client peak RSS {two_rss:.0f} MB, "
          f"workers up to {max(workers, default=0)} MB; shards {timings['fetch_s']:.1f}s, merge "
          f"and write {timings['write_s']:.1f}s); exports exact {exact}, "
          f"identical {same}")  # fmt: skip
    return [
        ("D1 local:2 <= 0.7x one process", ratio <= 0.7, f"{ratio:.2f}x"),
        ("D1 exports exact and identical", exact and same, str(exact and same)),
    ]


def _customers_equal(a: Path, b: Path) -> bool:
    """Whether two exports hold the same customers (compared in a child: memory stays here)."""
    code = ("import sys, orjson; c = [orjson.loads(open(p + '/processed_customers.json', 'rb')"
            ".read())['customers'] for p in sys.argv[1:]]; print(c[0] == c[1])")  # fmt: skip
    result = subprocess.run([PY, "-c", code, str(a), str(b)], capture_output=True, text=True,
                            check=True)  # fmt: skip
    return result.stdout.strip() == "True"


def d2(work: Path, redis_url: str) -> list[Check]:
    """Four workers, one shared budget, a server that allows a little more."""
    total = D2_PAGES * D2_PER_PAGE
    s = Scenario("D2", "", total, D2_PER_PAGE, concurrency=10, server_rate=D2_SERVER_RATE,
                 client_rate=D2_SHARED_RATE)  # fmt: skip
    out = work / "d2"
    with simulator(s) as url:
        wall, _, _, _ = run_child(command(url, out, s, "--dask", "local:4", "--shards", "8",
                                            "--limiter-url", redis_url))  # fmt: skip
        served = server_stats(url)
    report = orjson.loads((out / "summary_report.json").read_bytes())
    fetch_s = report["timings"]["fetch_s"]
    rate = served["ok"] / fetch_s
    share_429 = served["rate_limited"] / served["requests"] if served["requests"] else 0.0
    exact = exported_ids_are(out / "processed_customers.json", range(1, total + 1))
    workers, rss = worker_rss(out), client_rss(out)
    print(f"D2: 4 workers x {D2_PAGES} pages, shared {D2_SHARED_RATE:g} req/s, server allows "
          f"{D2_SERVER_RATE:g}: {served['ok']} pages in a {fetch_s:.1f}s fetch stage "
          f"({wall:.1f}s in all) = {rate:.1f} req/s ({rate / D2_SHARED_RATE:.0%} of the "
          f"budget), {served['rate_limited']} x 429 of {served['requests']} requests "
          f"({share_429:.2%}); client peak RSS {rss:.0f} MB, workers up to "
          f"{max(workers, default=0)} MB; export exact {exact}")  # fmt: skip
    return [
        ("D2 >= 90% of 50 req/s", rate >= 0.9 * D2_SHARED_RATE, f"{rate / D2_SHARED_RATE:.1%}"),
        ("D2 429s <= 1% of requests", share_429 <= 0.01, f"{share_429:.2%}"),
        ("D2 export exact", exact, str(exact)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-s", "--scenario", action="append", choices=["D1", "D2"])
    chosen = parser.parse_args().scenario or ["D1", "D2"]
    checks: list[Check] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "D1" in chosen:
            checks += d1(work)
        if "D2" in chosen:
            with redis_server(work) as redis_url:
                checks += d2(work, redis_url)
    print("\ntargets:")
    for name, ok, value in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
