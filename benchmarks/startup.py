"""Start-up cost: whole processes that do (almost) nothing, so only start-up and imports count.

    python benchmarks/startup.py          # 15 rounds
    python benchmarks/startup.py -n 30

Each round runs every command once, in turn (so a busy machine slows them all alike):
the bare interpreter, the floor's imports, ``run --help``, and a one-page run of the floor
and of the project against a local simulator. Prints the median wall time and the median CPU
time (user + system, from the OS): on a machine shared with other work, CPU time is the
steadier figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    simulator = subprocess.Popen(
        [PY, "-m", "customer_pipeline", "simulate", "--port", "0", "--total", "6",
         "--failure-rate", "0", "--latency-ms", "0", "--rate-limit", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert simulator.stdout is not None
        url = simulator.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as work:
            commands = {
                "python -c pass": [PY, "-c", "pass"],
                "floor's imports": [PY, "-c", "import httpx, orjson, httpx_aiohttp"],
                "run --help": [PY, "-m", "customer_pipeline", "run", "--help"],
                "floor, 1 page": [PY, str(HERE / "floor.py"), url, "6", "1", f"{work}/f.jsonl"],
                "run, 1 page": [PY, "-m", "customer_pipeline", "run", "--base-url", url,
                                "--rate-limit", "0", "--no-progress", "--output-dir",
                                f"{work}/out"],
            }  # fmt: skip
            wall: dict[str, list[float]] = {name: [] for name in commands}
            cpu: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(rounds):
                for name, argv in commands.items():
                    w, c = run_child(argv, work)
                    wall[name].append(w)
                    cpu[name].append(c)
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    print(f"{'':18} {'wall':>8} {'CPU':>8}   (medians of {rounds} rounds, seconds)")
    for name in commands:
        print(f"{name:18} {statistics.median(wall[name]):8.3f} {statistics.median(cpu[name]):8.3f}")
    for figure, samples in (("wall", wall), ("CPU", cpu)):
        ratio = statistics.median(samples["run, 1 page"]) / statistics.median(
            samples["floor, 1 page"]
        )
        print(f"one-page run, {figure}: {ratio:.2f}x the floor's")
    return 0


def run_child(argv: list[str], cwd: str) -> tuple[float, float]:
    """Run a child to completion: (wall seconds, CPU seconds)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[:4]} failed")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
