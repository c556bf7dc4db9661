"""What the command shows and how it reacts: errors, progress, log lines, signals, summary."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import click
from click.exceptions import NoArgsIsHelpError

from .logs import LOGGER_NAME, SHOWN, JsonFormatter, RedactingFilter, Redactor

# The pipeline is imported when a run starts, not when the command line parses its options.
if TYPE_CHECKING:
    from .checkpoint import RunMode
    from .pipeline import RunResult
    from .settings import Settings
    from .stages import Progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
EXIT_SIGINT = 128 + signal.SIGINT


class Commands(click.Group):
    """click's group, with its own errors worded like ours: ``error: ...``, same exit codes."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()  # the help itself, not an error
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            if exc.ctx is not None:
                click.echo(exc.ctx.get_usage(), err=True)
                click.echo(f"Try '{exc.ctx.command_path} --help' for help.\n", err=True)
            Terminal().error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            Terminal().error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            # click turns a Ctrl-C during a command into Abort.
            if isinstance(exc.__cause__, KeyboardInterrupt):
                sys.exit(EXIT_SIGINT)
            Terminal().error("aborted")
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


class Finite(click.FloatRange):
    """A float range that refuses inf and nan too (click's own lets nan through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


# pipeline.log's timestamps (ISO 8601), not rich's locale date.
TIME_FORMAT = "[%Y-%m-%d %H:%M:%S]"


class Terminal:
    """Lines for the terminal, redacted as the log is: the key never reaches the screen."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.redact = Redactor(secrets).redact

    def error(self, message: str) -> None:
        """Print ``error: message`` on stderr."""
        click.echo(f"error: {self.redact(message)}", err=True)

    def warning(self, message: str) -> None:
        """Print ``warning: message`` on stderr."""
        click.echo(f"warning: {self.redact(message)}", err=True)

    def echo(self, message: str, *, err: bool = False) -> None:
        """Print a line on stdout (or stderr)."""
        click.echo(self.redact(message), err=err)


class RunModes(TypedDict):
    """How a run treats its checkpoint."""

    mode: RunMode
    keep_checkpoint: bool


@contextlib.contextmanager
def signals_restored() -> Iterator[None]:
    """Put SIGINT/SIGTERM's handlers back as they were when the block ends.

    A Stopper ignores both once its run is over; the command's process exits right after,
    but a caller that runs the command in-process (a test, an embedding) gets its own back.
    """
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


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
        """Stop listening. The run is over: a signal from here until the exit is ignored
        (until ``signals_restored`` ends), so it cannot turn a finished run's exit code into
        130/143, which says "stopped, checkpoint kept"."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

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
    settings: Settings, console: Any | None, modes: RunModes, stopper: Stopper
) -> RunResult:
    """Run the pipeline, under a progress bar on ``console`` (a rich Console) if there is one."""
    from .pipeline import run_pipeline

    if console is None:
        return await run_pipeline(settings, stop=stopper.event, **modes)
    from rich.progress import Progress as Bar

    with Bar(*progress_columns(), console=console, expand=True) as bar:
        task = bar.add_task("fetch", total=None, figures=progress_figures(None))

        def update(p: Progress) -> None:
            bar.update(task, completed=p.pages_done, total=p.pages_total,
                       figures=progress_figures(p))  # fmt: skip

        return await run_pipeline(settings, on_progress=update, stop=stopper.event, **modes)


def progress_columns() -> tuple[Any, ...]:
    """The bar's columns: the page count first, never shrunk; then the bar; then the figures,
    most useful (ETA, rates) first, cut with an ellipsis on a narrow terminal (60 columns)."""
    from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn
    from rich.table import Column

    return (
        SpinnerColumn(),
        TextColumn("pages"),
        MofNCompleteColumn(),
        BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=5)),
        TextColumn("{task.fields[figures]}",
                   table_column=Column(no_wrap=True, overflow="ellipsis", ratio=3)),
    )  # fmt: skip


def progress_figures(p: Progress | None) -> str:
    """What the bar shows after the page count: ETA, rates, then retries, 429s, failures."""
    from .observe.progress import format_eta

    if p is None:
        return "starting"
    return (
        f"ETA {format_eta(p.eta_s)} · {p.pages_per_s:,.1f} pages/s · "
        f"{p.records_per_s:,.0f} records/s · {p.records:,} records · {p.retries} retries · "
        f"{p.rate_limited} x 429 · {p.failed_pages} failed"
    )


def stderr_logging(settings: Settings, console: Any | None) -> logging.Handler:
    """Log lines on stderr: warnings only under a progress bar, else at the run's level."""
    from .pipeline import REPORTED

    handler: logging.Handler
    if settings.log_format == "json":
        handler = _JsonLines(console)
        handler.setFormatter(JsonFormatter(settings.secrets))
        handler.setLevel(settings.log_level)
        if console is not None:
            handler.addFilter(_under_a_bar)
    elif console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, log_time_format=TIME_FORMAT)
        handler.addFilter(_under_a_bar)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(settings.log_level)
    handler.addFilter(RedactingFilter(settings.secrets))
    # Errors raised to us are printed once, cleanly, by the command itself.
    handler.addFilter(lambda record: not getattr(record, REPORTED, False))
    logging.getLogger(LOGGER_NAME).addHandler(handler)
    return handler


def _under_a_bar(record: logging.LogRecord) -> bool:
    """Whether a line shows above the progress bar: a warning, or one marked SHOWN."""
    return record.levelno >= logging.WARNING or getattr(record, SHOWN, False)


class _JsonLines(logging.StreamHandler):  # type: ignore[type-arg]
    """JSON log lines on stderr; above the progress bar when there is one."""

    def __init__(self, console: Any | None) -> None:
        super().__init__(sys.stderr)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if self.console is None:
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_summary(result: RunResult, echo: Callable[[str], None] = click.echo) -> None:
    r = result.report
    bands = r["quality"]["bands"]
    api = r["api"]
    status = "Done" if result.complete else "INCOMPLETE"
    rejects = [result.rejected_path] if result.rejected_path else []
    files = [*(result.files or [result.customers_path]), result.report_path, *rejects,
             result.log_path]  # fmt: skip
    lines = [
        f"{status}: {result.customers} customers (quality high {bands['high_quality']}, "
        f"medium {bands['medium_quality']}, low {bands['low_quality']}), "
        f"{result.duplicates_removed} duplicates removed, {result.rejected} rejected",
        f"API: {api['requests']} requests, {api['retries']} retries, "
        f"{api['rate_limited_429']} rate-limited"
        + (f", {api['cache_hits']} from the cache" if api.get("cache_hits") else "")
        + f"; {r['timings']['total_s']:.2f}s",
        "Files: " + ", ".join(map(str, files)),
    ]
    if result.databases:
        lines.append(f"Loaded into: {', '.join(result.databases)}")
    if not result.complete:
        retried = set(result.failed_pages) - set(result.not_retried_pages)
        if retried:
            hint = "Later, run the same command with --resume to fetch only the failed pages."
        elif result.failed_pages:
            hint = "No retry fixes those pages: see the reasons; --resume fetches them again."
        elif any("max_pages" in reason for reason in result.incomplete_reasons):
            hint = "Raise --max-pages and run the same command with --resume for the rest."
        else:
            hint = "See the reasons: running again as it is would give the same result."
        lines.append(
            f"Incomplete: {'; '.join(result.incomplete_reasons)}. The export says complete: "
            f"false (exit code 3). {hint}"
        )
    echo("\n".join(lines))
