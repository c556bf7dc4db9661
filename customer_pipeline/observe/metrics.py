"""PipelineMetrics: the run's figures as Prometheus metrics, one more subscriber of the bus.

Imported only when a run asks for metrics (prometheus_client costs start-up time otherwise).
Every name is under ``customer_pipeline_``, in base units, counters end in ``_total``, and
labels take a few fixed values: a status code, a failure kind, an outcome, a band.

    event            metric
    RequestStarted   in_flight_requests (+1)
    RequestDone      http_requests_total{status}, http_request_duration_seconds,
                     in_flight_requests (-1), rate_limited_total (a 429)
    LimiterWaited    rate_limit_wait_seconds_total
    RateLimited      retry_after_wait_seconds_total
    Retrying         retries_total{reason}
    UnitFetched      pages_total{outcome="fetched"}
    UnitFailed       pages_total{outcome="failed"}
    PageDone         pages_total{outcome="replayed"} (a page from the checkpoint)
    RecordRejected   records_total{outcome="rejected"}
    RunEnded         records_total{outcome="accepted"|"duplicate"}, customers{band},
                     run_duration_seconds, run_complete, run_outcome{outcome},
                     last_run_timestamp_seconds, last_success_timestamp_seconds
"""

from __future__ import annotations

import threading
import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .bus import Bus
from .events import (
    CacheHit,
    CacheMiss,
    CacheRevalidated,
    LimiterWaited,
    PageDone,
    RateLimited,
    RecordRejected,
    RequestDone,
    RequestStarted,
    Retrying,
    RunEnded,
    UnitFailed,
    UnitFetched,
)

NAMESPACE = "customer_pipeline"
OUTCOMES = ("complete", "incomplete", "failed", "interrupted")
# The seed's band keys, as the report names them, and the label value each gets.
BANDS = {"high_quality": "high", "medium_quality": "medium", "low_quality": "low"}
LAST_SUCCESS = f"{NAMESPACE}_last_success_timestamp_seconds"
LAST_RUN = f"{NAMESPACE}_last_run_timestamp_seconds"
# Seconds: most answers take milliseconds; a slow or throttled API takes up to --timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PipelineMetrics:
    """The metrics of every run fed to it, in one registry; ``attach`` one per run's bus."""

    def __init__(self, registry: CollectorRegistry, *, version: str) -> None:
        self.registry = registry
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by status code (error: no answer, e.g. a timeout)",
            ["status"], namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Seconds from sending a request to its last byte (or its failure)",
            namespace=NAMESPACE, registry=registry, buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.retries = Counter(
            "retries_total", "Attempts made again, by the failure that caused them",
            ["reason"], namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "rate_limited_total", "429 Too Many Requests answers",
            namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.limiter_wait = Counter(
            "rate_limit_wait_seconds_total",
            "Seconds requests waited on the client's own rate limit (--rate-limit)",
            namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.retry_after_wait = Counter(
            "retry_after_wait_seconds_total",
            "Seconds every worker paused after 429s (Retry-After)",
            namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.pages = Counter(
            "pages_total", "Pages by outcome: fetched, failed (after its retries), replayed "
            "(from the checkpoint)", ["outcome"], namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.records = Counter(
            "records_total", "Raw records by outcome: accepted (a unique customer), "
            "duplicate (removed), rejected", ["outcome"], namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.cache = Counter(
            "cache_requests_total", "Listing requests looked up in the response cache (--cache), "
            "by outcome: hit (no request), miss (the API was asked), revalidated (a 304)",
            ["outcome"], namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.customers = Gauge(
            "customers", "Customers of the last run, by data-quality band",
            ["band"], namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "in_flight_requests", "Requests sent and not yet answered",
            namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.run_duration = Gauge(
            "run_duration_seconds", "Seconds the last run took",
            namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.run_complete = Gauge(
            "run_complete", "1 if the last run fetched every page, else 0",
            namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.run_outcome = Gauge(
            "run_outcome", "1 for how the last run ended (complete, incomplete, failed, "
            "interrupted), 0 for the others", ["outcome"], namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.last_run = Gauge(
            "last_run_timestamp_seconds", "Unix time the last run ended",
            namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.last_success = Gauge(
            "last_success_timestamp_seconds", "Unix time the last complete run ended",
            namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        Info("build", "The pipeline's version", namespace=NAMESPACE, registry=registry).info(
            {"version": version}
        )
        # Children looked up once: labels() costs a lock and a tuple per call.
        self._status: dict[int | None, Counter] = {}
        self._reasons: dict[str, Counter] = {}
        self._fetched = self.pages.labels("fetched")
        self._failed = self.pages.labels("failed")
        self._replayed = self.pages.labels("replayed")
        self._rejected = self.records.labels("rejected")
        self._hit, self._miss, self._revalidated = (
            self.cache.labels(outcome) for outcome in ("hit", "miss", "revalidated")
        )
        for outcome in ("accepted", "duplicate"):
            self.records.labels(outcome)
        for band in BANDS.values():
            self.customers.labels(band)
        for outcome in OUTCOMES:
            self.run_outcome.labels(outcome)
        self.success_seen = False

    def attach(self, bus: Bus) -> PipelineMetrics:
        """Count the events of ``bus`` from now on; returns self."""
        bus.subscribe(RequestStarted, self._started)
        bus.subscribe(RequestDone, self._done)
        bus.subscribe(LimiterWaited, self._limiter_waited)
        bus.subscribe(RateLimited, self._paused)
        bus.subscribe(Retrying, self._retrying)
        bus.subscribe(UnitFetched, self._unit_fetched)
        bus.subscribe(UnitFailed, self._unit_failed)
        bus.subscribe(PageDone, self._page_done)
        bus.subscribe(RecordRejected, self._rejected_record)
        bus.subscribe(RunEnded, self._run_ended)
        bus.subscribe(CacheHit, lambda event: self._hit.inc())
        bus.subscribe(CacheMiss, lambda event: self._miss.inc())
        bus.subscribe(CacheRevalidated, lambda event: self._revalidated.inc())
        return self

    def _started(self, event: RequestStarted) -> None:
        self.in_flight.inc()

    def _done(self, event: RequestDone) -> None:
        self.in_flight.dec()
        status = event.status
        child = self._status.get(status)
        if child is None:
            child = self._status[status] = self.requests.labels(
                "error" if status is None else str(status)
            )
        child.inc()
        self.duration.observe(event.seconds)
        if status == 429:
            self.rate_limited.inc()

    def _limiter_waited(self, event: LimiterWaited) -> None:
        if event.seconds > 0:
            self.limiter_wait.inc(event.seconds)

    def _paused(self, event: RateLimited) -> None:
        if event.added_s > 0:
            self.retry_after_wait.inc(event.added_s)

    def _retrying(self, event: Retrying) -> None:
        child = self._reasons.get(event.kind)
        if child is None:
            child = self._reasons[event.kind] = self.retries.labels(event.kind)
        child.inc()

    def _unit_fetched(self, event: UnitFetched) -> None:
        self._fetched.inc()

    def _unit_failed(self, event: UnitFailed) -> None:
        self._failed.inc()

    def _page_done(self, event: PageDone) -> None:
        if event.replayed:
            self._replayed.inc()

    def _rejected_record(self, event: RecordRejected) -> None:
        self._rejected.inc()

    def _run_ended(self, event: RunEnded) -> None:
        self.in_flight.set(0)  # a cancelled request reports no end: nothing is in flight now
        if event.bands is not None:
            self.records.labels("accepted").inc(event.unique)
            self.records.labels("duplicate").inc(event.duplicates)
            for key, band in BANDS.items():
                self.customers.labels(band).set(event.bands.get(key, 0))
        self.run_duration.set(event.seconds)
        self.run_complete.set(1 if event.outcome == "complete" else 0)
        for outcome in OUTCOMES:
            self.run_outcome.labels(outcome).set(1 if outcome == event.outcome else 0)
        self.last_run.set(event.finished_at)
        if event.outcome == "complete":
            self.last_success.set(event.finished_at)
            self.success_seen = True


_LOCK = threading.Lock()
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, PipelineMetrics] = (
    weakref.WeakKeyDictionary()
)


def metrics_for(registry: CollectorRegistry, *, version: str) -> PipelineMetrics:
    """The pipeline's metrics in ``registry``, made on first use: runs sharing it add up."""
    with _LOCK:
        metrics = _BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _BY_REGISTRY[registry] = PipelineMetrics(registry, version=version)
        return metrics
