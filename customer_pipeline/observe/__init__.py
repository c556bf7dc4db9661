"""Observers, not counters: the core emits small events; stats, progress and metrics
subscribe to them. This package imports no other part of customer_pipeline.

    emitters                    events                     subscribers
    http.fetcher   ──► RequestStarted, RequestDone,   ──► ApiStats (the report's api block)
                       LimiterWaited, Retrying,           ProgressTracker (bar, log line)
                       NotRetried, RateLimited,           DebugLog (--log-level DEBUG only)
                       CacheHit, CacheMiss,
                       CacheRevalidated
    sources        ──► UnitFetched, UnitsKnown,           metrics.PipelineMetrics (Prometheus;
                       UnitFailed                           imported only when asked for)
    stages         ──► PageDone, RecordRejected,
                       StageTimed
    pipeline       ──► RunEnded
"""

from .bus import Bus
from .debug import DebugLog
from .events import (
    CacheHit,
    CacheMiss,
    CacheRevalidated,
    LimiterWaited,
    NotRetried,
    PageDone,
    RateLimited,
    RecordRejected,
    RequestDone,
    RequestStarted,
    Retrying,
    RunEnded,
    StageTimed,
    UnitFailed,
    UnitFetched,
    UnitsKnown,
)
from .progress import Progress, ProgressCallback, ProgressTracker
from .stats import ApiStats

__all__ = [
    "ApiStats",
    "Bus",
    "CacheHit",
    "CacheMiss",
    "CacheRevalidated",
    "DebugLog",
    "LimiterWaited",
    "NotRetried",
    "PageDone",
    "Progress",
    "ProgressCallback",
    "ProgressTracker",
    "RateLimited",
    "RecordRejected",
    "RequestDone",
    "RequestStarted",
    "Retrying",
    "RunEnded",
    "StageTimed",
    "UnitFailed",
    "UnitFetched",
    "UnitsKnown",
]
