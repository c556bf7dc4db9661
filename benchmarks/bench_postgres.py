"""PostgreSQL load benchmark: S2 (200,000 records) JSON-only against JSON + ``--db postgresql``.

    python benchmarks/bench_postgres.py              # a throwaway cluster (tests/postgres.py)
    python benchmarks/bench_postgres.py -r 3         # best of 3 each
    python benchmarks/bench_postgres.py --db postgresql://user:pass@host:5432/db

Both runs are the whole command as a child process against the same simulator (started and
warmed as bench.py does), timed from start to exit; each PostgreSQL run loads into a fresh
table, so every run inserts all 200,000 customers. Target: at most 2x the JSON-only run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench import PY, SCENARIOS, Measure, best, run_child, run_floor, simulator

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2.0


def run(url: str, work: Path, db: str | None, table: str) -> Measure:
    """One run of the command on S2, JSON-only or also into ``db``."""
    s = SCENARIOS["S2"]
    out = work / "project"
    argv = [PY, "-m", "customer_pipeline", "run", "--base-url", url, "--concurrency",
            str(s.concurrency), "--rate-limit", "0", "--per-page", str(s.per_page),
            "--max-retries", "10", "--output-dir", str(out), "--no-progress",
            "--log-level", "WARNING"]  # fmt: skip
    if db is not None:
        argv += ["--db", db, "--table", table]
    wall, rss, _, cpu = run_child(argv)
    for path in out.iterdir():
        path.unlink()
    return Measure(wall, rss, s.total, {}, cpu)


def rows(db: str, table: str) -> int:
    """How many customers ``table`` holds (read with psycopg, as the tests do)."""
    import psycopg

    with psycopg.connect(db.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        found = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(found[0]) if found else 0


@contextlib.contextmanager
def database(given: str | None) -> Iterator[str]:
    """``given``, or a database in a throwaway cluster started for the benchmark."""
    if given:
        yield given
        return
    sys.path.insert(0, str(ROOT))
    import pytest

    from tests.postgres import cluster

    try:
        with cluster() as running:
            yield running.url(running.create_database())
    except pytest.skip.Exception as exc:  # no PostgreSQL binaries: say how to get them
        raise SystemExit(f"error: {exc.msg}") from None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-r", "--repeat", type=int, default=1, help="runs each; the best counts")
    parser.add_argument("--db", help="an existing PostgreSQL database (default: a throwaway one)")
    args = parser.parse_args()
    s = SCENARIOS["S2"]
    tables = (f"bench_customers_{n}" for n in itertools.count(1))
    json_only: list[Measure] = []
    loaded: list[Measure] = []
    with database(args.db) as db, tempfile.TemporaryDirectory() as tmp, simulator(s) as url:
        work = Path(tmp)
        print(f"S2: {s.what}, JSON-only against JSON + PostgreSQL ...", file=sys.stderr)
        run_floor(s, url, work)  # warm the server's page cache; not measured
        for _ in range(args.repeat):
            json_only.append(run(url, work, None, ""))
            table = next(tables)
            loaded.append(run(url, work, db, table))
            if (count := rows(db, table)) != s.total:
                print(f"FAIL  {table} holds {count} customers, not {s.total}")
                return 1
    plain, pg = best(json_only), best(loaded)
    ratio = pg.wall_s / plain.wall_s
    print(f"\nS2 whole-process wall seconds, peak RSS (MB) and CPU seconds, best of {args.repeat}")
    for name, m in (("JSON only", plain), ("JSON + PostgreSQL", pg)):
        print(f"{name:18} {m.wall_s:7.2f} s {m.peak_rss_mb:6.0f} MB {m.cpu_s:7.2f} s CPU")
    ok = ratio <= TARGET
    print(f"\n{'PASS' if ok else 'FAIL'}  PostgreSQL load <= {TARGET:g} x JSON-only   {ratio:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
