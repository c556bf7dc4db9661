"""The ``customer-pipeline`` command: parse options, call the library, map errors to exits.

Exit codes: 0 done, 1 failed, 2 bad usage or configuration, 3 finished incomplete,
130/143 stopped by SIGINT/SIGTERM (checkpoint kept).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._limits import ENV_PREFIX, MAX_RATE_LIMIT, MAX_SEED
from ._version import __version__
from .console import (
    EXIT_FAILED,
    EXIT_SIGINT,
    EXIT_USAGE,
    Commands,
    Finite,
    RunModes,
    Stopper,
    Terminal,
    print_summary,
    run_with_progress,
    signals_restored,
    stderr_logging,
)
from .errors import (
    CheckpointError,
    ConfigError,
    FolderInUseError,
    Interrupted,
    PipelineError,
)
from .logs import LOGGER_NAME

# Each command imports what it needs when it runs, so that --help starts at once and a run
# loads neither pydantic's schema models, nor the simulator, nor rich without a progress bar.
if TYPE_CHECKING:
    from .checkpoint import RunMode
    from .settings import Settings


@click.group(
    cls=Commands,
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


def _check_simulator_envelope(
    ctx: click.Context, _param: click.Parameter, envelope: str | None
) -> str | None:
    """Refuse a bare body for a style that needs the object to carry its next step."""
    from .simulator.config import envelope_problem

    if problem := envelope_problem(ctx.params.get("pagination", "page_number"), envelope):
        raise click.BadParameter(problem)
    return envelope


@main.command(
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


RUN_EPILOG = """\b
Examples:
  customer-pipeline run --simulate                 # offline, against the built-in simulator
  customer-pipeline run                            # reqres.in with the free key, polite defaults
  CUSTOMER_PIPELINE_API_KEY=... customer-pipeline run --concurrency 4 --rate-limit 0.5
  customer-pipeline run --base-url http://127.0.0.1:8099 --rate-limit 0 --concurrency 50 \\
      --output-dir /tmp/customers --no-progress
  customer-pipeline run --config source.toml      # a whole source in one file

\b
Other APIs (the source options; the defaults read reqres):
  # json-server 0.17: a bare list, pages in the Link header
  customer-pipeline run --base-url http://localhost:3000 --resource /users \\
      --paginator link --data-path '' --page-param _page --size-param _limit
  # json-server 1.0: {pages, data}, string ids
  customer-pipeline run --base-url http://localhost:3000 --resource /users \\
      --page-param _page --size-param _per_page --total-pages-path pages
  # a cursor API whose records nest their fields
  customer-pipeline run --base-url https://api.example.com --resource /v1/customers \\
      --paginator cursor --next-path meta.next_cursor \\
      --field id=uid --field email=contact.email --field first_name=name.first

\b
Settings come from, highest first: flags, CUSTOMER_PIPELINE_<NAME> environment variables
(CUSTOMER_PIPELINE_FIELD as JSON: {"id": "uid"}), a .env file in the working folder, the
--config TOML file (keys = setting names, a [field] table for the field map), the defaults.
Exit codes: 0 done, 1 failed, 2 bad usage or settings, 3 finished with failed pages,
130/143 stopped by SIGINT/SIGTERM (the checkpoint is kept: --resume finishes the run).
"""


def _field_map(
    _ctx: click.Context, _param: click.Parameter, pairs: tuple[str, ...]
) -> dict[str, str] | None:
    """``--field NAME=PATH`` repeated, as the field map (None when not given)."""
    fields = {}
    for pair in pairs:
        name, equals, path = pair.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(
                "expects NAME=PATH, e.g. --field email=contact.email (a dotted path)"
            )
        fields[name.strip()] = path.strip()
    return fields or None


def _repeated(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...] | None:
    """A repeatable option's values, None when not given (so lower layers apply)."""
    return values or None


@main.command(epilog=RUN_EPILOG)
@click.option("--base-url", help="API root, http or https.  [default: https://reqres.in]")
@click.option(
    "--api-key",
    help="x-api-key value (prefer CUSTOMER_PIPELINE_API_KEY: flags show "
    "in the process list).  [default: reqres-free-v1]",
)
@click.option("--concurrency", type=int, help="Requests in flight at most.  [default: 10]")
@click.option(
    "--rate-limit",
    type=float,
    help="Requests per second at most, retries included; 0 = unlimited.  [default: 10]",
)
@click.option("--max-retries", type=int, help="Retries per page.  [default: 5]")
@click.option("--backoff-base", type=float, help="First backoff wait, seconds.  [default: 1]")
@click.option(
    "--backoff-max", type=float, help="Longest backoff or Retry-After wait, seconds.  [default: 30]"
)
@click.option(
    "--timeout",
    type=float,
    help="Seconds one attempt may take, connect to last byte (and each read).  [default: 10]",
)
@click.option("--per-page", type=int, help="Records requested per page.  [default: 6]")
@click.option("--max-pages", type=int, help="Never page past this.  [default: 100000]")
@click.option(
    "--max-response-bytes", type=int, help="Refuse larger response bodies.  [default: 10000000]"
)
@click.option("--seed", type=int, help="Seed of the business fields.  [default: 42]")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the output files.  [default: output]",
)
@click.option(
    "--transport",
    type=click.Choice(["aiohttp", "httpx"]),
    help="HTTP transport under the httpx API.  [default: aiohttp]",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Log file.  [default: <output-dir>/pipeline.log]",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level.  [default: INFO]",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file of settings (keys = setting names, a [field] table); flags, variables "
    "and .env override it.",
)
@click.option("--resource", help="Path of the listing under the base URL.  [default: /api/users]")
@click.option(
    "--paginator",
    type=click.Choice(["page_number", "offset", "cursor", "link", "next_url"]),
    help="How the API pages: page_number, offset, cursor, link (RFC 8288 Link header), "
    "next_url (the next URL in the body).  [default: page_number]",
)
@click.option("--page-param", help="Query parameter of the page number.  [default: page]")
@click.option("--size-param", help="Query parameter of the page size.  [default: per_page]")
@click.option("--first-page", type=int, help="Number of the first page, 0 or 1.  [default: 1]")
@click.option("--offset-param", help="Query parameter of the offset (offset).  [default: offset]")
@click.option("--cursor-param", help="Query parameter of the cursor (cursor).  [default: cursor]")
@click.option(
    "--data-path",
    help="Dotted path of the records in a body; '' = the body is the list.  [default: data]",
)
@click.option(
    "--total-pages-path", help="Dotted path of the page count in a body.  [default: total_pages]"
)
@click.option("--total-path", help="Dotted path of the record count in a body.  [default: total]")
@click.option(
    "--next-path",
    help="Dotted path of the next cursor (cursor) or next URL (next_url); needed by both.",
)
@click.option(
    "--field",
    multiple=True,
    metavar="NAME=PATH",
    callback=_field_map,
    help="Where a customer field (id, email, first_name, last_name, avatar) is in a record, "
    "as a dotted path; repeatable.  [default: its own name]",
)
@click.option(
    "--format",
    multiple=True,
    callback=_repeated,
    help="Output file format: json, jsonl, parquet; repeatable.  [default: json]",
)
@click.option(
    "--db",
    multiple=True,
    metavar="URL",
    callback=_repeated,
    help="Also load the customers into a database (upsert by customer_id); repeatable: "
    "duckdb:///path.duckdb, sqlite:///path.db, postgresql://user:pass@host:5432/db "
    "(prefer CUSTOMER_PIPELINE_DB for a password: flags show in the process list).",
)
@click.option("--table", help="Table of the customers in --db.  [default: customers]")
@click.option(
    "--db-mode",
    type=click.Choice(["upsert", "replace"]),
    help="upsert keeps customers this run did not see; replace swaps the whole table in "
    "the same transaction.  [default: upsert]",
)
@click.option(
    "--metrics-port",
    type=int,
    help="Serve Prometheus metrics on http://HOST:PORT/metrics while the run lasts "
    "(0: any free port, logged).",
)
@click.option("--metrics-host", help="Address --metrics-port listens on.  [default: 127.0.0.1]")
@click.option(
    "--pushgateway",
    metavar="URL",
    help="Push the final metrics to this Prometheus Pushgateway when the run ends, however "
    "it ends (job customer_pipeline); http://user:pass@host:9091 for basic auth (prefer "
    "CUSTOMER_PIPELINE_PUSHGATEWAY for a password).",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the final metrics to this node_exporter textfile (*.prom) when the run ends.",
)
@click.option(
    "--metrics-instance",
    help="Instance label of the Pushgateway group.  [default: the host name]",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log lines as text, or json: one object per line (log file and stderr).  [default: text]",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Do not verify TLS certificates (a test server you trust only; loudly warned).",
)
@click.option(
    "--simulate",
    is_flag=True,
    help="Serve the built-in simulator on a free loopback port for this run (offline).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted or incomplete run from its checkpoint in the output folder.",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Discard the checkpoint in the output folder first, whatever it holds.",
)
@click.option("--keep-checkpoint", is_flag=True, help="Keep the checkpoint after a complete run.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: on when stderr is a terminal).",
)
def run(
    simulate: bool,
    progress: bool | None,
    insecure: bool,
    resume: bool,
    restart: bool,
    keep_checkpoint: bool,
    config: Path | None,
    **options: Any,
) -> None:
    """Fetch every customer, score and enrich them, and write the JSON outputs."""
    # Until the settings are read, redact the keys that might become the run's key.
    from .settings import DatabaseUrl

    urls = [*(options.get("db") or ()), os.environ.get(f"{ENV_PREFIX}DB", "")]
    urls += [options.get("pushgateway") or "", os.environ.get(f"{ENV_PREFIX}PUSHGATEWAY", "")]
    terminal = Terminal(
        [
            options.get("api_key") or "",
            os.environ.get(f"{ENV_PREFIX}API_KEY", ""),
            *(password for url in urls for password in DatabaseUrl(url).passwords),
        ]
    )
    if resume and restart:
        terminal.error("--resume and --restart contradict each other; pick one")
        sys.exit(EXIT_USAGE)
    from .config import load_settings

    try:
        settings = load_settings(
            config=config,
            warn=terminal.warning,
            verify_tls=False if insecure else None,
            **options,
        )
    except ConfigError as exc:
        terminal.error(str(exc))
        sys.exit(EXIT_USAGE)
    if not settings.verify_tls:
        click.secho(
            "WARNING: TLS certificate verification is OFF: anyone between you and the API "
            "can read and change the data and the API key.",
            err=True,
            fg="red",
            bold=True,
        )
    show_bar = sys.stderr.isatty() if progress is None else progress
    mode: RunMode = "resume" if resume else "restart" if restart else "new"
    modes = RunModes(mode=mode, keep_checkpoint=keep_checkpoint)
    # The run's modules load before its signal handlers are in place, so that a Ctrl-C while
    # they load is one during start-up: exit 130, nothing started.
    import customer_pipeline.pipeline  # noqa: F401

    with signals_restored():
        code = asyncio.run(_run(settings, simulate=simulate, show_bar=show_bar, modes=modes))
    sys.exit(code)


async def _run(settings: Settings, *, simulate: bool, show_bar: bool, modes: RunModes) -> int:
    # First, so that a signal from here on stops the run gracefully.
    stopper = Stopper()
    stopper.install()
    terminal = Terminal(settings.secrets)
    console = None
    if show_bar:
        from rich.console import Console

        console = Console(stderr=True)
    handler = stderr_logging(settings, console)
    if not settings.verify_tls:
        logging.getLogger(LOGGER_NAME).warning("TLS certificate verification is OFF")
    try:
        if simulate:
            from .simulator import SimulatorConfig, serve

            async with serve(SimulatorConfig()) as (url, _):
                settings = settings.model_copy(update={"base_url": url})
                terminal.echo(f"Simulator serving on {url}", err=True)
                result = await run_with_progress(settings, console, modes, stopper)
        else:
            result = await run_with_progress(settings, console, modes, stopper)
    except (ConfigError, CheckpointError, FolderInUseError) as exc:
        terminal.error(str(exc))
        return EXIT_USAGE
    except Interrupted as exc:
        terminal.echo(str(exc), err=True)
        return 128 + (stopper.signal or signal.SIGINT)
    except asyncio.CancelledError:
        if stopper.signal is None:
            return EXIT_SIGINT  # Ctrl-C before our handlers were in place: nothing started
        from .checkpoint import CHECKPOINT_FILE

        if (settings.output_dir / CHECKPOINT_FILE).exists():
            saved = "every page completed so far is in the checkpoint: run the same command "
            saved += "again with --resume to finish"
        else:  # an empty checkpoint is deleted
            saved = "no page was saved: run the same command again to start over"
        terminal.echo(f"stopped at once; {saved}", err=True)
        return 128 + stopper.signal
    except PipelineError as exc:
        terminal.error(str(exc))
        return EXIT_FAILED
    except Exception as exc:  # a bug, not an input: still one clear line
        logging.getLogger(LOGGER_NAME).debug("unexpected error", exc_info=True)
        terminal.error(
            f"unexpected {type(exc).__name__}: {exc} (a bug: please report it; "
            "--log-level DEBUG --no-progress shows where it happened)"
        )
        return EXIT_FAILED
    finally:
        stopper.uninstall()
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
    print_summary(result, terminal.echo)
    return result.exit_code


@main.command(
    epilog="\b\nExamples:\n"
    "  customer-pipeline schema > customers.schema.json\n"
    "  customer-pipeline schema --report > report.schema.json"
)
@click.option(
    "--export", "document", flag_value="export", default=True,
    help="The schema of processed_customers.json (the default).",
)  # fmt: skip
@click.option(
    "--report", "document", flag_value="report", help="The schema of summary_report.json."
)
def schema(document: str) -> None:
    """Print the JSON Schema (2020-12) of processed_customers.json or summary_report.json."""
    import orjson

    from .models import export_schema, report_schema

    chosen = report_schema() if document == "report" else export_schema()
    click.echo(orjson.dumps(chosen, option=orjson.OPT_INDENT_2))
