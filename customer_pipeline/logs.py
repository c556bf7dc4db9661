"""Logging for a run: the log file, and a filter that keeps secrets out of every line."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError

LOGGER_NAME = "customer_pipeline"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Replaces each secret with *** in a record's final message (defence in depth)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if any(secret in text for secret in self.secrets):
                record.exc_info = None
                record.exc_text = None
        return True


@contextlib.contextmanager
def run_logging(log_path: Path, level: str, secrets: list[str]) -> Iterator[logging.Logger]:
    """Log this package at ``level`` to ``log_path`` (appending) for the length of a run."""
    logger = logging.getLogger(LOGGER_NAME)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the log file {log_path}: {exc.strerror or exc} "
            "(--log-file / CUSTOMER_PIPELINE_LOG_FILE, or --output-dir)"
        ) from None
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactingFilter(secrets))
    previous_level = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        handler.close()
