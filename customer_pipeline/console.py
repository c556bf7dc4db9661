"""What ``customer-pipeline run`` shows and how it reacts: progress, log lines, signals, summary."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any, TypedDict

import click

from .checkpoint import RunMode
from .logs import LOGGER_NAME, RedactingFilter
from .pipeline import REPORTED, RunResult, run_pipeline
from .settings import Settings
from .stages import Progress


class RunModes(TypedDict):
    """How a run treats its checkpoint."""

    mode: RunMode
    keep_checkpoint: bool


class Stopper:
    """SIGINT/SIGTERM: the first asks the run to stop gracefully, a second cancels it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signal: int | None = None
        self._task: asyncio.Task[Any] | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self.event.is_set() and self._task is not None:
            self._task.cancel()  # asked twice: stop now
            return
        self.signal = sig
        click.echo(
            f"\n{signal.Signals(sig).name}: finishing the pages in flight (a second signal "
            "stops at once)",
            err=True,
        )
        self.event.set()


async def run_with_progress(
    settings: Settings, console: Any, show_bar: bool, modes: RunModes, stopper: Stopper
) -> RunResult:
    if not show_bar:
        return await run_pipeline(settings, stop=stopper.event, **modes)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as Bar

    columns = (
        SpinnerColumn(),
        TextColumn("pages"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "{task.fields[records]} records, {task.fields[retries]} retries, "
            "{task.fields[r429]} x 429, {task.fields[failed]} failed"
        ),
        TimeElapsedColumn(),
    )
    with Bar(*columns, console=console) as bar:
        task = bar.add_task("fetch", total=None, records=0, retries=0, r429=0, failed=0)

        def update(p: Progress) -> None:
            bar.update(
                task,
                completed=p.pages_done,
                total=p.pages_total,
                records=p.records,
                retries=p.retries,
                r429=p.rate_limited,
                failed=p.failed_pages,
            )

        return await run_pipeline(settings, on_progress=update, stop=stopper.event, **modes)


def stderr_logging(settings: Settings, console: Any | None) -> logging.Handler:
    """Log lines on stderr: warnings only under a progress bar, else at the run's level."""
    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, level=logging.WARNING)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(settings.log_level)
    handler.addFilter(RedactingFilter([settings.api_key.get_secret_value()]))
    # Errors raised to us are printed once, cleanly, by the command itself.
    handler.addFilter(lambda record: not getattr(record, REPORTED, False))
    logging.getLogger(LOGGER_NAME).addHandler(handler)
    return handler


def print_summary(result: RunResult) -> None:
    r = result.report
    bands = r["quality"]["bands"]
    api = r["api"]
    status = "Done" if result.complete else "INCOMPLETE"
    lines = [
        f"{status}: {result.customers} customers (quality high {bands['high_quality']}, "
        f"medium {bands['medium_quality']}, low {bands['low_quality']}), "
        f"{result.duplicates_removed} duplicates removed, {result.rejected} rejected",
        f"API: {api['requests']} requests, {api['retries']} retries, "
        f"{api['rate_limited_429']} rate-limited; {r['timings']['total_s']:.2f}s",
        f"Files: {result.customers_path}, {result.report_path}"
        + (f", {result.rejected_path}" if result.rejected_path else "")
        + f", {result.log_path}",
    ]
    if not result.complete:
        lines.append(
            f"Incomplete: {'; '.join(result.incomplete_reasons)}. The export says complete: "
            "false (exit code 3). "
            + (
                "Later, run the same command with --resume to fetch only the failed pages."
                if result.failed_pages
                else "Raise --max-pages and run the same command with --resume for the rest."
            )
        )
    click.echo("\n".join(lines))
