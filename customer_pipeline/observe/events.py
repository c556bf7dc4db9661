"""What the fetcher, the source and the stages report as they work: small event objects.

Events are plain slotted records, built where something happens and handed to the run's Bus;
they carry numbers and short labels, never a body and never the API key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RequestStarted:
    """A request left for the API; ``in_flight`` counts it with the others not yet answered."""

    in_flight: int


@dataclass(slots=True)
class RequestDone:
    """A request ended: its HTTP status (None without one) and what went wrong, if anything.

    ``failure`` is None for a usable answer, else a short key: the status ("503"), the
    transport error's name ("ReadTimeout"), "deadline", "invalid_body" or "too_large".
    """

    status: int | None
    failure: str | None
    seconds: float
    bytes_received: int
    what: str = ""  # the unit it asked for ("page 3"), for the DEBUG log


@dataclass(slots=True)
class LimiterWaited:
    """A request waited this long on the client's own rate limit."""

    seconds: float


@dataclass(slots=True)
class Retrying:
    """A failed attempt will be tried again after ``wait`` seconds."""

    what: str
    attempt: int
    wait: float
    reason: str
    # A short, fixed key for counting by (a status such as "503", "invalid_body", "timeout",
    # "connection"): ``reason`` is free text.
    kind: str = "other"


@dataclass(slots=True)
class NotRetried:
    """A failure the fetcher will not try again: its retries are spent (``retryable``) or no
    retry fixes it (a redirect, a 404, a bad key)."""

    what: str
    attempts: int
    reason: str
    retryable: bool


@dataclass(slots=True)
class RateLimited:
    """A 429 paused every worker: the server's Retry-After (if any) and the seconds it added."""

    retry_after: float | None
    added_s: float


@dataclass(slots=True)
class CacheHit:
    """A request was answered from the response cache: no request left for the API."""

    what: str


@dataclass(slots=True)
class CacheMiss:
    """The response cache had no usable answer (or was told to refresh); the API was asked."""

    what: str


@dataclass(slots=True)
class CacheRevalidated:
    """A stale cached answer was confirmed by the API (304 Not Modified) and served."""

    what: str


@dataclass(slots=True)
class UnitFetched:
    """A unit (a page of the walk) came back usable, with this many raw records."""

    number: int
    records: int


@dataclass(slots=True)
class UnitsKnown:
    """How many units the walk has, once known (None: not known yet)."""

    total: int | None


@dataclass(slots=True)
class PageDone:
    """A page entered the stages, fetched now or replayed from the checkpoint."""

    number: int
    records: int
    replayed: bool


@dataclass(slots=True)
class UnitFailed:
    """A unit failed for good (after its retries, or with an answer no retry can fix)."""

    number: int
    reason: str


@dataclass(slots=True)
class RecordRejected:
    """A raw record could not become a customer; it is written to the rejects as sent."""

    number: int
    position: int
    reason: str


@dataclass(slots=True)
class StageTimed:
    """A stage finished: its name and the seconds it worked."""

    stage: str
    seconds: float


@dataclass(slots=True)
class RunEnded:
    """A run ended: ``outcome`` is complete, incomplete, failed or interrupted.

    ``finished_at`` is Unix time. ``bands`` (customers per quality band), ``unique`` and
    ``duplicates`` are known only once the dedup has told them: None and 0 before that.
    """

    outcome: str
    seconds: float
    finished_at: float
    bands: dict[str, int] | None = None
    unique: int = 0
    duplicates: int = 0
