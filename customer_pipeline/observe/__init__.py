"""Observers, not counters: the core emits small events; stats, progress and (next) metrics
subscribe to them. This package imports no other part of customer_pipeline.

    emitters                    events                     subscribers
    http.fetcher   ──► RequestStarted, RequestDone,   ──► ApiStats (the report's api block)
                       LimiterWaited, Retrying,           ProgressTracker (bar, log line)
                       RateLimited
    sources        ──► UnitFetched, UnitsKnown,
                       UnitFailed
    stages         ──► PageDone, RecordRejected,
                       StageTimed
"""

from .bus import Bus
from .events import (
    LimiterWaited,
    PageDone,
    RateLimited,
    RecordRejected,
    RequestDone,
    RequestStarted,
    Retrying,
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
    "LimiterWaited",
    "PageDone",
    "Progress",
    "ProgressCallback",
    "ProgressTracker",
    "RateLimited",
    "RecordRejected",
    "RequestDone",
    "RequestStarted",
    "Retrying",
    "StageTimed",
    "UnitFailed",
    "UnitFetched",
    "UnitsKnown",
]
