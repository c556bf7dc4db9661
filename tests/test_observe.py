"""The event bus and its subscribers: the report's API figures and progress."""

from __future__ import annotations

import logging

import pytest

from customer_pipeline.observe import (
    ApiStats,
    Bus,
    PageDone,
    Progress,
    ProgressTracker,
    RateLimited,
    RequestDone,
    RequestStarted,
    Retrying,
    UnitFailed,
    UnitFetched,
    UnitsKnown,
)


def test_the_bus_hands_each_event_to_the_subscribers_of_its_type_only() -> None:
    bus = Bus()
    got: list[object] = []
    bus.subscribe(RequestDone, got.append)
    bus.subscribe(RequestDone, lambda e: got.append("second"))
    bus.subscribe(Retrying, got.append)
    done = RequestDone(200, None, 0.1, 10)
    bus.emit(done)
    bus.emit(RequestStarted(1))  # nobody listens: dropped
    assert got == [done, "second"]
    assert bus.wants(RequestDone) and not bus.wants(UnitFetched)


def test_api_stats_count_the_events_as_the_report_shows_them() -> None:
    bus = Bus()
    stats = ApiStats().attach(bus)
    for event in [RequestStarted(1), RequestStarted(2), RequestDone(429, "429", 0.1, 0),
                  RequestDone(200, None, 0.2, 300), RequestStarted(1),
                  RequestDone(None, "ReadTimeout", 0.1, 0), UnitFetched(1, 6)]:  # fmt: skip
        bus.emit(event)
    figures = stats.as_dict()
    assert figures["requests"] == 3 and figures["max_in_flight"] == 2
    assert figures["successes"] == 1 and figures["bytes_received"] == 300
    assert figures["failures_by_status"] == {"429": 1, "ReadTimeout": 1}
    assert figures["rate_limited_429"] == 1 and figures["pages_fetched"] == 1


def test_progress_reports_every_page_and_logs_at_most_every_few_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    now = [0.0]
    seen: list[Progress] = []
    bus = Bus()
    ProgressTracker(seen.append, log_every_s=2.0, clock=lambda: now[0]).attach(bus)
    bus.emit(UnitsKnown(4))
    for number, at in [(1, 0.5), (2, 1.0), (3, 2.5), (4, 3.0)]:
        now[0] = at
        if number == 3:
            bus.emit(Retrying("page 3", 1, 0.1, "HTTP 503"))
            bus.emit(RequestDone(429, "429", 0.1, 0))
            bus.emit(RateLimited(1.0, 1.0))
        bus.emit(PageDone(number, 6, replayed=number == 1))
    bus.emit(UnitFailed(5, "HTTP 500"))
    assert [p.pages_done for p in seen] == [1, 2, 3, 4]
    assert seen[-1] == Progress(pages_done=4, pages_total=4, records=24, retries=1,
                                rate_limited=1, failed_pages=0)  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress")]
    assert lines == ["progress: 3/4 pages, 18 records, 1 retries, 0 failed pages"]
