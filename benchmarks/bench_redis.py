"""Caching and shared limits (issue 12): the two targets, measured in one run.

    python benchmarks/bench_redis.py            # R1 and R2 (needs redis-server on PATH)
    python benchmarks/bench_redis.py -s R2      # one of them

R1: three processes share a 20 req/s budget through --limiter-url against a simulator that
allows 24 req/s (429 past it): together at least 90% of 20 req/s, at most 1% of the
requests answered 429, every export exact.
R2: a cached rerun of bench.py's S2 (2,000 pages x 100) with --cache, SQLite and Redis: at
least 10x faster than the first run, and no request reaches the server. S2 has no latency
and no rate limit, so its first run is bound by the work on its 200,000 records, which a
rerun does again; R2 is therefore also measured with the API behind a 50 req/s limit
(--rate-limit 50, a generous one for a public API: reqres.in allows a few a second), where
the requests are the cost that a cache saves.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from bench import PY, SCENARIOS, Scenario, exported_ids_are, run_child, server_stats, simulator

R1_PAGES_EACH = 100
R1_SHARED_RATE = 20.0
R1_SERVER_RATE = 24.0


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def r1(work: Path, redis_url: str) -> list[tuple[str, bool, str]]:
    """Three processes, one shared budget."""
    per_page = 6
    total = R1_PAGES_EACH * per_page
    s = Scenario("R1", "", total, per_page, server_rate=R1_SERVER_RATE)
    with simulator(s) as url:
        outs = [work / f"r1-{n}" for n in range(3)]
        argv = [PY, "-m", "customer_pipeline", "run", "--base-url", url, "--per-page",
                str(per_page), "--rate-limit", str(R1_SHARED_RATE), "--limiter-url", redis_url,
                "--concurrency", "10", "--no-progress", "--log-level", "WARNING"]  # fmt: skip
        started = time.perf_counter()
        procs = [subprocess.Popen([*argv, "--output-dir", str(out)], stderr=subprocess.PIPE)
                 for out in outs]  # fmt: skip
        errors = [proc.communicate()[1] for proc in procs]
        wall = time.perf_counter() - started
        served = server_stats(url)
    codes = [proc.returncode for proc in procs]
    if codes != [0, 0, 0]:
        raise SystemExit(f"R1 runs exited {codes}: {errors[0][-1500:]!r}")
    exact = all(exported_ids_are(out / "processed_customers.json", range(1, total + 1))
                for out in outs)  # fmt: skip
    requests = served["requests"]
    # The processes' own start-up (imports, ~0.5 s) is inside the wall time: a floor.
    rate = served["ok"] / wall
    share_429 = served["rate_limited"] / requests if requests else 0.0
    print(f"R1: 3 processes x {R1_PAGES_EACH} pages, shared {R1_SHARED_RATE:g} req/s, server "
          f"allows {R1_SERVER_RATE:g}: {served['ok']} pages in {wall:.2f}s = {rate:.2f} req/s "
          f"({rate / R1_SHARED_RATE:.0%} of the budget), {served['rate_limited']} x 429 of "
          f"{requests} requests ({share_429:.2%}), exports exact: {exact}")  # fmt: skip
    return [
        ("R1 together >= 90% of 20 req/s", rate >= 0.9 * R1_SHARED_RATE,
         f"{rate / R1_SHARED_RATE:.1%}"),
        ("R1 429s <= 1% of requests", share_429 <= 0.01, f"{share_429:.2%}"),
        ("R1 every export exact", exact, str(exact)),
    ]  # fmt: skip


R2_LIMITED_RATE = 50.0


def r2(work: Path, cache_url: str, label: str, rate: float = 0.0) -> list[tuple[str, bool, str]]:
    """S2, then the same command again: answered by the cache."""
    s = SCENARIOS["S2"]
    if rate:
        s = Scenario("S2", "", s.total, s.per_page, server_rate=rate)
        label += f" at {rate:g} req/s"
    out = work / f"r2-{label.replace(' ', '-').replace('/', '')}"
    with simulator(s) as url:
        argv = [PY, "-m", "customer_pipeline", "run", "--base-url", url, "--concurrency",
                str(s.concurrency), "--rate-limit", str(rate), "--per-page", str(s.per_page),
                "--output-dir", str(out), "--no-progress", "--log-level", "WARNING",
                "--cache", cache_url]  # fmt: skip
        first_s, _, _, _ = run_child(argv)
        first = orjson.loads((out / "summary_report.json").read_bytes())
        before = server_stats(url)["requests"]
        again_s, _, _, _ = run_child(argv)
        after = server_stats(url)["requests"]
    again = orjson.loads((out / "summary_report.json").read_bytes())
    exact = exported_ids_are(out / "processed_customers.json", range(1, s.total + 1))
    ratio = first_s / again_s
    fetch_ratio = first["timings"]["fetch_s"] / max(again["timings"]["fetch_s"], 1e-6)
    print(f"R2 ({label}): first run {first_s:.2f}s (fetch {first['timings']['fetch_s']:.2f}s), "
          f"cached rerun {again_s:.2f}s (fetch {again['timings']['fetch_s']:.2f}s): "
          f"{ratio:.1f}x whole run, {fetch_ratio:.1f}x fetch; {after - before} requests "
          f"reached the server on the rerun; cache hits {again['api']['cache_hits']}; "
          f"export exact: {exact}")  # fmt: skip
    return [
        (f"R2 {label} cached rerun >= 10x faster (whole run)", ratio >= 10, f"{ratio:.1f}x"),
        (f"R2 {label} cached rerun >= 10x faster (fetch stage)", fetch_ratio >= 10,
         f"{fetch_ratio:.1f}x"),
        (f"R2 {label} no request on the rerun", after == before, str(after - before)),
        (f"R2 {label} export exact", exact, str(exact)),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-s", "--scenario", action="append", choices=["R1", "R2"])
    chosen = parser.parse_args().scenario or ["R1", "R2"]
    checks: list[tuple[str, bool, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with redis_server(work) as redis_url:
            if "R1" in chosen:
                checks += r1(work, redis_url)
            if "R2" in chosen:
                checks += r2(work, f"sqlite:///{work / 'cache.db'}", "sqlite")
                checks += r2(work, redis_url.replace("/0", "/1"), "redis")
                checks += r2(work, f"sqlite:///{work / 'cache2.db'}", "sqlite", R2_LIMITED_RATE)
    print("\ntargets:")
    for name, ok, value in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
