"""The ``customer-pipeline`` command: parse options, call the library, map errors to exits.

Exit codes: 0 done, 1 failed, 2 bad usage or configuration, 3 finished incomplete,
130/143 stopped by SIGINT/SIGTERM (checkpoint kept).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._limits import ENV_PREFIX
from ._version import __version__
from .cli_simulate import simulate
from .console import (
    EXIT_FAILED,
    EXIT_SIGINT,
    EXIT_USAGE,
    Commands,
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


main.add_command(simulate)


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
        if name.strip() in fields:
            raise click.BadParameter(f"names {name.strip()!r} twice; give each field once")
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
    "--cache",
    metavar="URL",
    help="Cache listing responses: sqlite:///path/cache.db or redis://host:6379/0; a rerun "
    "within --cache-ttl asks the API nothing (prefer CUSTOMER_PIPELINE_CACHE for a password).",
)
@click.option(
    "--cache-ttl",
    type=float,
    help="Seconds a cached response is served without asking the API.  [default: 3600]",
)
@click.option(
    "--refresh",
    is_flag=True,
    default=None,
    help="Refetch the cached responses and replace them.",
)
@click.option(
    "--cache-namespace",
    help="Keeps apart the caches of API keys that see different data.  [default: none]",
)
@click.option(
    "--limiter-url",
    metavar="URL",
    help="Share --rate-limit through this Redis with every process that names it and the same "
    "API origin: redis://host:6379/0.",
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
    "--dask",
    metavar="local:N|tcp://HOST:PORT",
    help="Run on a Dask cluster: local:N starts N worker processes for the run, "
    "tcp://scheduler:8786 uses a running one (pip install 'customer-pipeline[dask]'). "
    "Several workers share --rate-limit only through --limiter-url.",
)
@click.option(
    "--shards",
    type=int,
    help="Dask tasks a page-numbered or offset walk is split into (cursor and next-URL walks "
    "are one task).  [default: twice the workers]",
)
@click.option(
    "--dask-retries",
    type=int,
    help="Times Dask reruns a shard task that raised, 0 to 100; it resumes the shard's "
    "checkpoint when the workers share the output folder.  [default: 2]",
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
    for name in ("cache", "limiter_url"):
        urls += [options.get(name) or "", os.environ.get(f"{ENV_PREFIX}{name.upper()}", "")]
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
