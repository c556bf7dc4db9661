"""The ``customer-pipeline`` command: parse options, call the library, map errors to exits.

Exit codes: 0 done, 1 failed, 2 bad usage or configuration, 3 finished incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import click

from ._version import __version__
from .simulator import SimulatorConfig, serve

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  customer-pipeline run --simulate            # the whole job offline
  customer-pipeline run --concurrency 4 --rate-limit 0.5
  customer-pipeline simulate --port 8099 --total 6000 --failure-rate 0.2
""",
)
@click.version_option(__version__, prog_name="customer-pipeline")
def main() -> None:
    """Fetch customers from a reqres-style API concurrently, score and enrich them, and
    write analytics-ready JSON with a summary report."""


@main.command(
    epilog="""\b
Examples:
  customer-pipeline simulate                      # 12 reqres users, 20% 500/503, rate limited
  customer-pipeline simulate --port 8099 --total 6000 --per-page 6 \\
      --failure-rate 0.2 --truncate-rate 0.01 --drop-rate 0.01
  customer-pipeline simulate --failure-rate 0 --rate-limit 0 --latency-ms 0   # well behaved
""",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8099,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0 = any free port; the URL is printed).",
)
@click.option(
    "--total",
    default=12,
    show_default=True,
    type=click.IntRange(0),
    help="Users to serve: the 12 real reqres users, then synthetic ones.",
)
@click.option(
    "--per-page",
    default=6,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Page size when the request gives none.",
)
@click.option(
    "--failure-rate",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of requests answered 500/503 (JSON or HTML body).",
)
@click.option(
    "--rate-limit",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Requests per second before 429 with Retry-After (0 = off).",
)
@click.option(
    "--latency-ms",
    default=50.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Mean response delay in ms (uniform jitter of +-50%).",
)
@click.option(
    "--dirty-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of records with missing, blank or invalid fields or unusable ids.",
)
@click.option(
    "--duplicate-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of users that show up again on the next page.",
)
@click.option(
    "--truncate-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of 200 answers whose body is cut short.",
)
@click.option(
    "--drop-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of requests whose connection is dropped without an answer.",
)
@click.option(
    "--seed",
    default=42,
    show_default=True,
    type=int,
    help="Seed of the data, its dirt and the faults.",
)
@click.option(
    "--api-key",
    default=None,
    envvar="CUSTOMER_PIPELINE_SIMULATOR_API_KEY",
    help="Require this x-api-key (401 without it). Off by default.",
)
def simulate(host: str, port: int, **options: Any) -> None:
    """Serve a reqres-compatible API that misbehaves on purpose, reproducibly."""
    config = SimulatorConfig(**options)

    async def serve_forever() -> None:
        async with serve(config, host, port) as (url, sim):
            pages = sim.dataset.total_pages(config.per_page)
            click.echo(
                f"Serving reqres simulator on {url} ({config.total} users, {pages} pages"
                f" of {config.per_page}); Ctrl-C to stop",
                err=True,
            )
            click.echo(url)
            sys.stdout.flush()
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever())
