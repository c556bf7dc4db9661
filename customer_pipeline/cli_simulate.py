"""``customer-pipeline simulate``: serve the built-in misbehaving API, and say how to read it."""

from __future__ import annotations

import asyncio
import shlex
import sys
from typing import Any

import click

from ._limits import ENV_PREFIX, MAX_RATE_LIMIT, MAX_SEED
from .console import EXIT_USAGE, Finite, Terminal


def _check_simulator_envelope(
    ctx: click.Context, _param: click.Parameter, envelope: str | None
) -> str | None:
    """Refuse a bare body for a style that needs the object to carry its next step."""
    from .simulator.config import envelope_problem

    if problem := envelope_problem(ctx.params.get("pagination", "page_number"), envelope):
        raise click.BadParameter(problem)
    return envelope


@click.command(
    epilog="""\b
Examples:
  customer-pipeline simulate                      # 12 reqres users, 20% 500/503, rate limited
  customer-pipeline simulate --port 8099 --total 6000 --per-page 6 \\
      --failure-rate 0.2 --truncate-rate 0.01 --drop-rate 0.01
  customer-pipeline simulate --failure-rate 0 --rate-limit 0 --latency-ms 0   # well behaved

\b
One example per pagination style (all serve the same users in the same order):
  customer-pipeline simulate --pagination page_number   # ?page=&per_page=, reqres envelope
  customer-pipeline simulate --pagination offset        # ?offset=&limit=, total in the body
  customer-pipeline simulate --pagination cursor        # ?cursor=, meta.next_cursor (opaque)
  customer-pipeline simulate --pagination link          # Link: rel="next"/"last", bare list
  customer-pipeline simulate --pagination link --no-link-last --envelope object   # walk it
  customer-pipeline simulate --pagination next_url      # links.next: the absolute next URL
  customer-pipeline simulate --pagination offset --envelope bare --clamp --field-style nested
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
    type=Finite(0, 1),
    help="Share of requests answered 500/503 (JSON or HTML body).",
)
@click.option(
    "--rate-limit",
    default=20.0,
    show_default=True,
    type=Finite(0, MAX_RATE_LIMIT),
    help="Requests per second before 429 with Retry-After (0 = off).",
)
@click.option(
    "--latency-ms",
    default=50.0,
    show_default=True,
    type=Finite(0, 3_600_000),
    help="Mean response delay in ms (uniform jitter of +-50%).",
)
@click.option(
    "--dirty-rate",
    default=0.0,
    show_default=True,
    type=Finite(0, 1),
    help="Share of records with missing, blank or invalid fields or unusable ids.",
)
@click.option(
    "--duplicate-rate",
    default=0.0,
    show_default=True,
    type=Finite(0, 1),
    help="Share of users that show up again on the next page.",
)
@click.option(
    "--truncate-rate",
    default=0.0,
    show_default=True,
    type=Finite(0, 1),
    help="Share of 200 answers whose body is cut short.",
)
@click.option(
    "--drop-rate",
    default=0.0,
    show_default=True,
    type=Finite(0, 1),
    help="Share of requests whose connection is dropped without an answer.",
)
@click.option(
    "--seed",
    default=42,
    show_default=True,
    type=click.IntRange(0, MAX_SEED),
    help="Seed of the data, its dirt and the faults.",
)
@click.option(
    "--api-key",
    default=None,
    envvar="CUSTOMER_PIPELINE_SIMULATOR_API_KEY",
    help="Require this x-api-key (401 without it). Off by default.",
)
@click.option(
    "--pagination",
    default="page_number",
    show_default=True,
    is_eager=True,  # read before --envelope, whose check depends on it
    type=click.Choice(["page_number", "offset", "cursor", "link", "next_url"]),
    help="How the listing is paged (see the examples below).",
)
@click.option(
    "--envelope",
    default=None,
    type=click.Choice(["object", "bare"]),
    callback=_check_simulator_envelope,
    help="object = records under a key; bare = the body is the list itself (page_number,"
    " offset, link only).  [default: bare for link, else object]",
)
@click.option(
    "--field-style",
    default="flat",
    show_default=True,
    type=click.Choice(["flat", "nested"]),
    help='nested = {"uid": "1", "contact": {"email"}, "name": {"first", "last"},'
    ' "photo": {"url"}} with string ids.',
)
@click.option(
    "--clamp",
    is_flag=True,
    help="Past the end, answer the last page again instead of an empty one.",
)
@click.option(
    "--link-last/--no-link-last",
    default=True,
    show_default=True,
    help='Put rel="last" in the Link header (without it a client must walk the chain).',
)
@click.option("--etag", is_flag=True, help="Send ETags; answer a matching If-None-Match with 304.")
@click.option("--cache-control", default=None, help='Send this Cache-Control, e.g. "max-age=60".')
@click.option(
    "--quota",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Listing requests allowed per --quota-window, 429 past it (0: no quota).",
)
@click.option(
    "--quota-window",
    "quota_window_s",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds of one --quota window.",
)
@click.option(
    "--rate-headers",
    default="none",
    show_default=True,
    type=click.Choice(["none", "ietf", "x", "x-epoch"]),
    help="Tell what is left of --quota: ietf = RateLimit-Remaining/-Reset, x = "
    "X-RateLimit-* (reset in seconds), x-epoch = X-RateLimit-Reset as a Unix time.",
)
def simulate(host: str, port: int, **options: Any) -> None:
    """Serve a reqres-compatible API that misbehaves on purpose, reproducibly."""
    from .simulator import SimulatorConfig, serve

    config = SimulatorConfig(**options)

    async def serve_forever() -> None:
        async with serve(config, host, port) as (url, sim):
            pages = sim.dataset.total_pages(config.per_page)
            click.echo(url)
            sys.stdout.flush()
            click.echo(simulator_banner(url, config, pages), err=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve_forever())
    except OSError as exc:
        Terminal().error(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(--host / --port; --port 0 picks a free port)"
        )
        sys.exit(EXIT_USAGE)


def simulator_banner(url: str, config: Any, pages: int) -> str:
    """What ``simulate`` says on start: what it serves and the ``run`` command that matches."""
    lines = [
        f"Serving reqres simulator on {url} ({config.total} users, {pages} pages of "
        f"{config.per_page}). Fetch it with:",
        "  " + shlex.join(["customer-pipeline", "run", "--base-url", url, *run_flags(config)]),
    ]
    if config.api_key:
        # Never the key itself: the terminal may be shared or recorded.
        lines.append(
            f"  (it requires an API key: set {ENV_PREFIX}API_KEY to the one given to simulate)"
        )
    lines.append("Ctrl-C to stop")
    return "\n".join(lines)


def run_flags(config: Any) -> list[str]:
    """The ``run`` flags of the settings that read what a simulator serves."""
    flags = []
    for name, value in config.run_settings().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, dict):
            for key, path in value.items():
                flags += [flag, f"{key}={path}"]
        else:
            flags += [flag, str(value)]
    return flags
