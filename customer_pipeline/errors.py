"""Every error the library raises, under one base.

    PipelineError
    ├── ConfigError              a setting is invalid; nothing was requested
    ├── ApiError                 the API answered in a way we cannot use (url, status)
    │   ├── AuthError            401/403: key missing or invalid
    │   ├── BadRequestError      400: the request itself is wrong
    │   ├── PageNotFoundError    404 for a listing page
    │   ├── RetryableError       a transient answer worth another try (5xx, 408, 429, bad body)
    │   │   ├── RateLimitedError 429, with the server's Retry-After
    │   │   └── InvalidBodyError a 200 whose body is not the reqres envelope
    │   └── ResponseTooLargeError the body exceeds ``max_response_bytes``
    ├── PageFetchError           a page failed for good (page, cause, retried)
    │   └── ApiUnreachableError  page 1 failed: nothing can be fetched (url)
    ├── IncompleteError          a stream ended without every page (reasons: max_pages)
    ├── CheckpointError          an unfinished run is in the way, resuming would change it,
    │                            or the checkpoint is unreadable
    ├── Interrupted              stopped on request (SIGINT/SIGTERM); the checkpoint is kept
    └── OutputError              an output file or the checkpoint could not be written
        └── FolderInUseError     another run holds the output folder

Messages name the URL, the page and the fix; they never contain the API key.
"""

from __future__ import annotations

import errno


class PipelineError(Exception):
    """Base of every error raised by customer_pipeline."""


class ConfigError(PipelineError):
    """A setting is invalid; raised before any request is made."""


class ApiError(PipelineError):
    """The API answered in a way we cannot use."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class AuthError(ApiError):
    """401/403: the API key is missing or invalid."""


class BadRequestError(ApiError):
    """400: the API rejected the request itself."""


class PageNotFoundError(ApiError):
    """404 for a listing page: the base URL probably points at the wrong API."""


class RetryableError(ApiError):
    """A transient failure: another try may succeed."""


class RateLimitedError(RetryableError):
    """429 Too Many Requests; ``retry_after`` is the server's wait in seconds, if it sent one."""

    def __init__(self, message: str, *, url: str, retry_after: float | None) -> None:
        super().__init__(message, url=url, status=429)
        self.retry_after = retry_after


class InvalidBodyError(RetryableError):
    """A 200 whose body is not JSON or not the reqres envelope (e.g. truncated)."""


class ResponseTooLargeError(ApiError):
    """The response body is larger than ``max_response_bytes``."""


class PageFetchError(PipelineError):
    """A page failed for good: after every retry, or (``retried=False``) with an answer no
    retry fixes (a redirect, a 404, a body too large)."""

    def __init__(
        self, message: str, *, page: int, url: str, cause: str, retried: bool = True
    ) -> None:
        super().__init__(message)
        self.page = page
        self.url = url
        self.cause = cause
        self.retried = retried


class ApiUnreachableError(PageFetchError):
    """The first page could not be fetched, so nothing can be."""


class IncompleteError(PipelineError):
    """The pages fetched may not be all of them (``reasons``), though none failed."""

    def __init__(self, message: str, *, reasons: list[str]) -> None:
        super().__init__(message)
        self.reasons = reasons


class CheckpointError(PipelineError):
    """The checkpoint cannot be used as asked (an unfinished run, changed settings, corrupt)."""


class Interrupted(PipelineError):
    """The run was asked to stop; completed pages stay in the checkpoint for --resume."""

    def __init__(self, message: str, *, pages_recorded: int) -> None:
        super().__init__(message)
        self.pages_recorded = pages_recorded


class OutputError(PipelineError):
    """An output file or the checkpoint could not be written (``disk_full``: for lack of space)."""

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full

    @classmethod
    def writing(cls, what: object, exc: OSError, note: str = "") -> OutputError:
        """``cannot write <what>: <why><note>`` for an OSError, noting a full disk."""
        return cls(
            f"cannot write {what}: {exc.strerror or exc}{note}",
            disk_full=exc.errno in (errno.ENOSPC, errno.EDQUOT),
        )


class FolderInUseError(OutputError):
    """Another run is using the output folder."""
