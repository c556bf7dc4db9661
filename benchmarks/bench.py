"""Side-by-side benchmark: the project against a floor script (and dlt), same server, one run.

    python benchmarks/bench.py                    # S1..S6
    python benchmarks/bench.py -s S1 -s S2 -r 3   # some scenarios, best of 3
    python benchmarks/bench.py --peer dlt         # adds dlt's rest_api source, if installed
    python benchmarks/bench.py --peer dlt --peer-python /path/to/dlt-venv/bin/python
    python benchmarks/bench.py -s S2 -s S5 --storage   # + every file format, vs JSON only
    python benchmarks/bench.py -s S2 -r 5 --metrics  # S2 with metrics on and off, alternating

Each scenario starts ``customer-pipeline simulate`` in its own process, warms its page cache,
then runs the floor and the project each as a child process, timing the whole process and
reading its peak RSS from the OS (``os.wait4``). Ratios and targets are printed at the end.
``--storage`` also runs the project with the STORAGE outputs in S2 and S5 (after its JSON-only
run, against the same server) and compares the two.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
PY = sys.executable


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    total: int
    per_page: int
    concurrency: int = 50
    latency_ms: float = 0.0
    server_rate: float = 0.0
    client_rate: float = 0.0
    failure_rate: float = 0.0
    truncate_rate: float = 0.0
    backoff_base: float = 1.0
    floor: bool = True

    @property
    def pages(self) -> int:
        return -(-self.total // self.per_page)


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("S1", "1,000 pages x 6, 20 ms latency, concurrency 50", 6000, 6, latency_ms=20),
        Scenario("S2", "2,000 pages x 100 (200,000 records), no latency", 200_000, 100),
        Scenario("S3", "server limits 100 req/s with 429s; client rate_limit 100", 6000, 6,
                 server_rate=100, client_rate=100, floor=False),
        Scenario("S4", "S1 + 20% 500/503 + 1% truncated, backoff_base 0.05", 6000, 6,
                 latency_ms=20, failure_rate=0.2, truncate_rate=0.01, backoff_base=0.05,
                 floor=False),
        Scenario("S5", "10,000 pages x 100 (1,000,000 records), for memory", 1_000_000, 100),
        Scenario("S6", "10,000 pages x 6, 100 ms latency, concurrency 500: per-request cost",
                 60_000, 6, concurrency=500, latency_ms=100),
    ]
}  # fmt: skip


# What --storage adds to the JSON-only run (needs `pip install -e '.[parquet]'`).
STORAGE = ["--format", "json", "--format", "jsonl", "--format", "parquet"]
STORAGE_SCENARIOS = ("S2", "S5")


@dataclass
class Measure:
    wall_s: float
    peak_rss_mb: float
    records: int
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_s: float = 0.0  # user + system seconds of the child: steadier than wall on a busy box

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_s if self.wall_s else 0.0


def run_child(
    argv: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, str, float]:
    """Run a child to completion: (wall seconds, peak RSS MB, stdout, CPU seconds)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env)
        assert proc.stderr is not None
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{argv[:4]} exited {proc.returncode}:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, text, usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def simulator(s: Scenario) -> Iterator[str]:
    argv = [PY, "-m", "customer_pipeline", "simulate", "--port", "0", "--total", str(s.total),
            "--per-page", str(s.per_page), "--latency-ms", str(s.latency_ms), "--rate-limit",
            str(s.server_rate), "--failure-rate", str(s.failure_rate), "--truncate-rate",
            str(s.truncate_rate)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(
                f"the simulator did not start with {PY}: run this with the Python of the "
                "virtual environment where customer-pipeline is installed"
            )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_simulator/stats", timeout=10) as r:
        return orjson.loads(r.read())  # type: ignore[no-any-return]


def run_floor(s: Scenario, url: str, work: Path) -> Measure:
    out = work / "floor.jsonl"
    wall, rss, text, cpu = run_child(
        [PY, str(HERE / "floor.py"), url, str(s.per_page), str(s.concurrency), str(out)]
    )
    figures = orjson.loads(text.strip().splitlines()[-1])
    out.unlink()
    return Measure(wall, rss, figures["records"], {"run_s": figures["run_s"]}, cpu)


def METRICS(work: Path) -> list[str]:
    """The live endpoint and the textfile: every exposition that needs no server."""
    return ["--metrics-port", "0", "--metrics-file", str(work / "metrics.prom")]


def run_project(s: Scenario, url: str, work: Path, extra: list[str] | None = None) -> Measure:
    out = work / "project"
    argv = [PY, "-m", "customer_pipeline", "run", "--base-url", url, "--concurrency",
            str(s.concurrency), "--rate-limit", str(s.client_rate), "--per-page", str(s.per_page),
            "--backoff-base", str(s.backoff_base), "--max-retries", "10", "--output-dir", str(out),
            "--no-progress", "--log-level", "WARNING", *(extra or [])]  # fmt: skip
    wall, rss, _, cpu = run_child(argv)
    report = orjson.loads((out / "summary_report.json").read_bytes())
    exactly_once = exported_ids_are(out / "processed_customers.json", range(1, s.total + 1))
    if extra:
        exactly_once = exactly_once and other_files_hold(out, s.total)
    for path in out.iterdir():
        path.unlink()
    return Measure(
        wall,
        rss,
        report["counts"]["raw_records"],
        {"run_s": report["timings"]["total_s"], "report": report, "exactly_once": exactly_once},
        cpu,
    )


def exported_ids_are(path: Path, expected: range) -> bool:
    """Whether the export holds exactly these ids, in order (read a line at a time: this
    process must stay small, since children forked from it inherit its peak RSS)."""
    wanted = iter(expected)
    with path.open("rb") as handle:
        for line in handle:
            if line.startswith(b'{"customer_id"'):
                customer_id = orjson.loads(line.rstrip(b",\n"))["customer_id"]
                if customer_id != next(wanted, None):
                    return False
    return next(wanted, None) is None


def other_files_hold(out: Path, total: int) -> bool:
    """Whether the JSONL and Parquet files hold ``total`` customers (Parquet read in a child:
    pyarrow here would grow this process, and so its children's peak RSS)."""
    with (out / "processed_customers.jsonl").open("rb") as handle:
        lines = sum(1 for _ in handle)
    count = "import sys, pyarrow.parquet as pq; print(pq.read_metadata(sys.argv[1]).num_rows)"
    rows = subprocess.run([PY, "-c", count, str(out / "processed_customers.parquet")],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    return lines == total == int(rows)


def run_dlt(s: Scenario, url: str, work: Path, python: str) -> Measure | None:
    probe = subprocess.run([python, "-c", "import dlt"], capture_output=True)
    if probe.returncode != 0:
        print(f"  dlt is not installed for {python}; skipping the peer", file=sys.stderr)
        return None
    folder = work / "dlt"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        wall, rss, text, cpu = run_child(
            [python, str(HERE / "peer_dlt.py"), url, str(s.per_page), str(folder)]
        )
    except RuntimeError as exc:
        print(f"  dlt failed: {str(exc)[-600:]}", file=sys.stderr)
        return None
    figures = orjson.loads(text.strip().splitlines()[-1])
    return Measure(wall, rss, figures["records"], {"run_s": figures["run_s"]}, cpu)


def best(measures: list[Measure]) -> Measure:
    return min(measures, key=lambda m: m.wall_s)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-s", "--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("-r", "--repeat", type=int, default=1, help="runs each; the best counts")
    parser.add_argument("--peer", choices=["dlt"], help="also run this peer where installed")
    parser.add_argument(
        "--peer-python", default=PY, help="interpreter that has the peer installed (a venv)"
    )
    parser.add_argument(
        "--peer-scenarios", default="S1,S2", help="scenarios the peer runs (it is slow)"
    )
    parser.add_argument(
        "--storage",
        action="store_true",
        help=f"in {', '.join(STORAGE_SCENARIOS)}, also run with {' '.join(STORAGE)}",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also run the project with metrics on (--metrics-port, --metrics-file), "
        "alternating with the runs without",
    )
    args = parser.parse_args()
    names = args.scenario or sorted(SCENARIOS)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in names:
            s = SCENARIOS[name]
            print(f"{name}: {s.what} ...", file=sys.stderr, flush=True)
            with simulator(s) as url:
                if s.floor or s.server_rate == 0:
                    run_floor(s, url, work)  # warm the server's page cache; not measured
                row: dict[str, Any] = {}
                project, floor, storage, with_metrics = [], [], [], []
                for _ in range(args.repeat):
                    if s.floor:
                        floor.append(run_floor(s, url, work))
                    before = server_stats(url)
                    project.append(run_project(s, url, work))
                    after = server_stats(url)
                    if args.storage and name in STORAGE_SCENARIOS:
                        storage.append(run_project(s, url, work, STORAGE))
                    if args.metrics:
                        with_metrics.append(run_project(s, url, work, METRICS(work)))
                row["project"] = best(project)
                if with_metrics:
                    row["metrics"] = best(with_metrics)
                row["floor"] = best(floor) if floor else None
                row["storage"] = best(storage) if storage else None
                row["served"] = {k: after[k] - before[k] for k in after if k != "max_in_flight"}
                if args.peer == "dlt" and name in args.peer_scenarios.split(","):
                    row["dlt"] = run_dlt(s, url, work, args.peer_python)
                results[name] = row
    return report(results)


def table(
    title: str, results: dict[str, dict[str, Any]], figure: Callable[[Measure], float]
) -> None:
    """One figure per scenario and contender, a line per scenario."""
    print(f"\n{title}")
    for name, row in results.items():
        cells = [
            f"{key} {figure(m):.2f}"
            for key in ("project", "floor", "dlt")
            if (m := row.get(key)) is not None
        ]
        print(f"{name:4} " + ", ".join(cells))


def report(results: dict[str, dict[str, Any]]) -> int:
    def fmt(m: Measure | None) -> str:
        if m is None:
            return f"{'-':>8} {'-':>10} {'-':>8}"
        return f"{m.wall_s:8.2f} {m.records_per_s:10,.0f} {m.peak_rss_mb:8.0f}"

    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {sys.platform}")
    print("whole-process wall seconds, records/s and peak RSS (MB), best run\n")
    print(f"{'':4} {'project':>28} | {'floor':>28} | {'dlt':>28} | ratio")
    print(f"{'':4} {'wall':>8} {'rec/s':>10} {'RSS':>8} | " * 3)
    for name, row in results.items():
        p, f, d = row["project"], row.get("floor"), row.get("dlt")
        ratio = f"{p.wall_s / f.wall_s:.2f}x floor" if f else ""
        if d:
            ratio += f", {d.wall_s / p.wall_s:.1f}x faster than dlt"
        print(f"{name:4} {fmt(p)} | {fmt(f)} | {fmt(d)} | {ratio}")
    table("in-process run seconds (without interpreter start-up and imports)", results,
          lambda m: m.extra["run_s"])  # fmt: skip
    table("CPU seconds of the whole process (user + system), best run by wall", results,
          lambda m: m.cpu_s)  # fmt: skip
    checks = storage_report(results)
    r = results
    for name, row in r.items():
        if (on := row.get("metrics")) is not None:
            off = row["project"]
            wall, cpu = on.wall_s / off.wall_s - 1, on.cpu_s / off.cpu_s - 1
            print(f"\n{name} metrics on vs off (best of each): wall {on.wall_s:.2f} vs "
                  f"{off.wall_s:.2f} s ({wall:+.1%}), CPU {on.cpu_s:.2f} vs {off.cpu_s:.2f} s "
                  f"({cpu:+.1%})")  # fmt: skip
            checks.append((f"{name} with metrics <= 1.03 x without", wall <= 0.03, f"{wall:+.1%}"))
    if "S1" in r and r["S1"]["floor"]:
        ratio = r["S1"]["project"].wall_s / r["S1"]["floor"].wall_s
        checks.append(("S1 project <= 1.2 x floor", ratio <= 1.2, f"{ratio:.2f}x"))
        if r["S1"].get("dlt"):
            speedup = r["S1"]["dlt"].wall_s / r["S1"]["project"].wall_s
            checks.append(("S1 >= 30 x faster than dlt", speedup >= 30, f"{speedup:.1f}x"))
    if "S6" in r and r["S6"]["floor"]:
        ratio = r["S6"]["project"].wall_s / r["S6"]["floor"].wall_s
        checks.append(("S6 project <= 1.2 x floor", ratio <= 1.2, f"{ratio:.2f}x"))
        once = r["S6"]["project"].extra["exactly_once"]
        checks.append(("S6 every customer exactly once", once, str(once)))
    if "S2" in r and r["S2"]["floor"]:
        ratio = r["S2"]["project"].wall_s / r["S2"]["floor"].wall_s
        checks.append(("S2 project <= 3 x floor", ratio <= 3, f"{ratio:.2f}x"))
        rss = r["S2"]["project"].peak_rss_mb
        checks.append(("S2 peak RSS <= 250 MB", rss <= 250, f"{rss:.0f} MB"))
    if "S5" in r and "S2" in r:
        ratio = r["S5"]["project"].peak_rss_mb / r["S2"]["project"].peak_rss_mb
        checks.append(("S5 peak RSS <= 2 x S2's", ratio <= 2, f"{ratio:.2f}x"))
    if "S3" in r:
        served = r["S3"]["served"]
        run_s = r["S3"]["project"].extra["run_s"]
        rate = served["ok"] / run_s
        share_429 = served["rate_limited"] / max(1, served["requests"])
        checks.append(("S3 >= 95% of the server's 100 req/s", rate >= 95, f"{rate:.1f} req/s"))
        checks.append(
            (
                "S3 <= 1% of requests answered 429",
                share_429 <= 0.01,
                f"{share_429:.2%} ({served['rate_limited']} of {served['requests']})",
            )
        )
    if "S4" in r:
        once = r["S4"]["project"].extra["exactly_once"]
        checks.append(("S4 every customer exactly once", once, str(once)))
        if "S1" in r:
            ratio = r["S4"]["project"].wall_s / r["S1"]["project"].wall_s
            checks.append(("S4 <= 2 x S1's time", ratio <= 2, f"{ratio:.2f}x"))
    print()
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label:40} {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


def storage_report(results: dict[str, dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The --storage runs against the JSON-only ones of the same invocation; their checks."""
    rows = {name: row for name, row in results.items() if row.get("storage")}
    if not rows:
        return []
    print(f"\nwith {' '.join(STORAGE)}, against the JSON-only run (best by wall)")
    print(f"{'':4} {'wall':>8} {'RSS':>8} {'CPU':>8} | {'wall':>6} {'RSS':>6} {'CPU':>6} ratio")
    checks: list[tuple[str, bool, str]] = []
    for name, row in rows.items():
        m, p = row["storage"], row["project"]
        wall, rss, cpu = m.wall_s / p.wall_s, m.peak_rss_mb / p.peak_rss_mb, m.cpu_s / p.cpu_s
        print(f"{name:4} {m.wall_s:8.2f} {m.peak_rss_mb:8.0f} {m.cpu_s:8.2f} | "
              f"{wall:5.2f}x {rss:5.2f}x {cpu:5.2f}x")  # fmt: skip
        once = m.extra["exactly_once"]
        checks.append((f"{name} every file holds every customer", once, str(once)))
    if "S2" in rows:
        m, p = rows["S2"]["storage"], rows["S2"]["project"]
        ratio = m.wall_s / p.wall_s
        checks.append(("S2 all files <= 1.5 x JSON only", ratio <= 1.5, f"{ratio:.2f}x"))
        checks.append(("S2 all files peak RSS <= 250 MB", m.peak_rss_mb <= 250,
                       f"{m.peak_rss_mb:.0f} MB"))  # fmt: skip
    if "S2" in rows and "S5" in rows:
        ratio = rows["S5"]["storage"].peak_rss_mb / rows["S2"]["storage"].peak_rss_mb
        # Flat: 5x the customers may not cost more than a quarter more memory.
        checks.append(("S5 all files peak RSS <= 1.25 x S2's", ratio <= 1.25, f"{ratio:.2f}x"))
    return checks


if __name__ == "__main__":
    sys.exit(main())
