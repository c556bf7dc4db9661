"""The event bus and its subscribers: the report's API figures and progress."""

from __future__ import annotations

import io
import logging
import re

import pytest

from customer_pipeline.console import progress_columns, progress_figures
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
from customer_pipeline.observe.progress import format_eta


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
    # Rates count the 3 pages fetched, not the one replayed, over the 3 s since the start.
    assert seen[-1] == Progress(pages_done=4, pages_total=4, records=24, retries=1,
                                rate_limited=1, failed_pages=0, elapsed_s=3.0, pages_per_s=1.0,
                                records_per_s=6.0, eta_s=0.0)  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress")]
    assert lines == [
        "progress: 3/4 pages, 18 records, 0.8 pages/s, 5 records/s, ETA 0:01, 1 retries, "
        "0 failed pages"
    ]


def test_eta_waits_for_the_total_and_a_rate() -> None:
    now = [0.0]
    bus = Bus()
    tracker = ProgressTracker(clock=lambda: now[0]).attach(bus)
    assert tracker.snapshot().eta_s is None  # no page, no total
    now[0] = 2.0
    bus.emit(PageDone(1, 100, replayed=False))
    assert tracker.snapshot().eta_s is None  # a rate, no total
    bus.emit(UnitsKnown(11))
    snapshot = tracker.snapshot()
    assert (snapshot.pages_per_s, snapshot.records_per_s) == (0.5, 50.0)
    assert snapshot.eta_s == 20.0  # 10 pages left at half a page a second


@pytest.mark.parametrize(("seconds", "shown"), [(None, "?"), (0.4, "0:00"), (59.6, "1:00"),
                                                (3725, "1:02:05")])  # fmt: skip
def test_eta_is_shown_as_clock_time(seconds: float | None, shown: str) -> None:
    assert format_eta(seconds) == shown


@pytest.mark.parametrize("width", [60, 80, 160])
def test_the_bar_keeps_the_page_count_visible_and_fits_the_terminal(width: int) -> None:
    from rich.console import Console
    from rich.progress import Progress as Bar

    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    progress = Progress(pages_done=1234, pages_total=20000, records=123400, retries=17,
                        rate_limited=3, failed_pages=1, elapsed_s=30.0, pages_per_s=41.1,
                        records_per_s=4113.3, eta_s=457.0)  # fmt: skip
    with Bar(*progress_columns(), console=console, auto_refresh=False, expand=True) as bar:
        bar.add_task("fetch", total=20000, completed=1234, figures=progress_figures(progress))
        bar.refresh()
    line = out.getvalue().split("\r")[-1].strip("\n").replace("\x1b[2K", "")
    line = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", line).rstrip()
    assert re.search(r"pages +1234/20000 ", line), line
    assert "ETA 7:37 · 41.1 pages/s" in line
    assert len(line) <= width
    if width >= 160:
        assert "4,113 records/s" in line and "3 x 429" in line and "1 failed" in line
