"""Logging for a run: its own log file, its run id, and redaction of every spelling of a secret.

Lines are text (FORMAT) or, with ``log_format="json"``, one JSON object each (JsonFormatter).
Several runs may share a process: each run's file receives only that run's lines (a filter
on the run id, a contextvar that anyio and asyncio tasks inherit), at that run's level.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets as random_ids
import sys
import threading
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Re-exported: the checkpoint and older callers find them here.
from ._secret import MIN_SECRET_CHARS as MIN_SECRET_CHARS
from ._secret import spellings as spellings
from .errors import ConfigError

LOGGER_NAME = "customer_pipeline"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MASK = "***"
# A record with this attribute set (``extra``) is shown on the terminal even under a progress
# bar, which shows only warnings otherwise: an INFO line the user needs, e.g. a port picked.
SHOWN = "customer_pipeline_shown"
# The structured fields a JSON line carries when a log call gives them as ``extra``.
FIELDS = ("page", "unit", "status", "attempt", "wait_s")

_run_id: ContextVar[str | None] = ContextVar("customer_pipeline_run_id", default=None)


def current_run_id() -> str | None:
    """The id of the run the calling code belongs to, or None outside a run."""
    return _run_id.get()


# A secret's head this long is masked even when the rest is cut off: a message's excerpt of
# a body (40 bytes, say) may end in the middle of an echoed key. Shorter heads are too likely
# to be ordinary words ("sk-live", "postgres").
HEAD = 10
# Heads are matched up to this length; the rest of a longer secret is masked by whole forms.
HEAD_MAX = 200


def _head_or_whole(form: str) -> str:
    """A pattern for any head of ``form`` at least HEAD long (the longest that fits)."""
    head = form[:HEAD_MAX]
    tail = "".join(f"(?:{re.escape(char)}" for char in head[HEAD:]) + ")?" * (len(head) - HEAD)
    return re.escape(head[:HEAD]) + tail


class Redactor:
    """Replaces every spelling of each secret with ***: the one redaction for log and terminal.

    A spelling's head (HEAD characters or more) is masked too, for a secret an excerpt cut.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret for form in spellings(secret)}
        # Longest first, so a form is never cut short by one of its own prefixes; whole forms
        # before heads, so a head shared by two spellings never stops short of the whole one.
        alternatives = sorted(forms, key=len, reverse=True)
        whole = [re.escape(form) for form in alternatives]
        heads = [_head_or_whole(form) for form in alternatives if len(form) > HEAD]
        self._pattern = re.compile("|".join(whole + heads)) if forms else None

    def redact(self, text: str) -> str:
        """``text`` with every secret masked."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every spelling of each of ``secrets`` masked."""
    return Redactor(secrets).redact(text)


class RedactingFilter(logging.Filter):
    """Masks the secrets in a record's message, traceback and stack (defence in depth)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor.redact
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it, not a filter
            return True
        if (clean := redact(message)) != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if (clean := redact(text)) != text:
                record.exc_info, record.exc_text = None, clean
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, message, run_id, and the
    event's FIELDS when the call gave them; the whole line is redacted once more."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = Redactor(secrets).redact

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "run_id": _run_id.get(),
        }
        for name in FIELDS:
            if (value := getattr(record, name, None)) is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Extra fields pass no filter; a secret in one is masked here, in its JSON spelling.
        return self.redact(json.dumps(entry, ensure_ascii=False, default=str))


def formatter(log_format: str, secrets: Iterable[str] = ()) -> logging.Formatter:
    """The formatter of ``log_format``: text (FORMAT) or json."""
    return JsonFormatter(secrets) if log_format == "json" else logging.Formatter(FORMAT)


class _RunFilter(logging.Filter):
    """Passes only the records logged by one run."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        return _run_id.get() == self.run_id


class _LogFile(logging.FileHandler):
    """A run's log file: if it cannot be written, one warning on stderr, then silence.

    The run's data matters more than its log: a full disk must not fail a finished export.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.shown_path = path
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            self._give_up(error)
        else:
            super().handleError(record)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as error:
            self._give_up(error)

    def close(self) -> None:
        try:
            super().close()
        except OSError as error:
            self._give_up(error)

    def _give_up(self, error: OSError) -> None:
        if self.broken:
            return
        self.broken = True
        sys.stderr.write(
            f"warning: cannot write the log file {self.shown_path}: {error.strerror or error}; "
            "further log lines are dropped\n"
        )


class _SharedLevel:
    """The package logger's level while runs overlap: the lowest any of them asks for.

    Reference-counted, so one run's level never silences another's lines; the level the
    application had set comes back when the last run ends.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.lock = threading.Lock()  # runs may live on several threads, each with a loop
        self.active: list[int] = []
        self.before = logging.NOTSET

    def join(self, level: int) -> None:
        with self.lock:
            if not self.active:
                self.before = self.logger.level
            self.active.append(level)
            self._apply()

    def leave(self, level: int) -> None:
        with self.lock:
            self.active.remove(level)
            self._apply()

    def _apply(self) -> None:
        if not self.active:
            self.logger.setLevel(self.before)
            return
        # A lower level the application chose for its own handlers stays in force.
        floor = [self.before] if self.before != logging.NOTSET else []
        self.logger.setLevel(min(self.active + floor))


_shared_level = _SharedLevel(logging.getLogger(LOGGER_NAME))


@contextlib.contextmanager
def run_logging(
    log_path: Path, level: str, secrets: list[str], log_format: str = "text"
) -> Iterator[logging.Logger]:
    """Log this run's lines at ``level`` to ``log_path`` (appending), under a new run id."""
    logger = logging.getLogger(LOGGER_NAME)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = _LogFile(log_path)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the log file {log_path}: {exc.strerror or exc} "
            "(--log-file / CUSTOMER_PIPELINE_LOG_FILE, or --output-dir)"
        ) from None
    run_id = random_ids.token_hex(4)
    numeric_level = logging.getLevelNamesMapping()[level]
    handler.setLevel(numeric_level)
    handler.setFormatter(formatter(log_format, secrets))
    handler.addFilter(_RunFilter(run_id))
    handler.addFilter(RedactingFilter(secrets))
    token = _run_id.set(run_id)
    _shared_level.join(numeric_level)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        _shared_level.leave(numeric_level)
        _run_id.reset(token)
        handler.close()
