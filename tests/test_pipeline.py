"""run_pipeline and stream_customers end to end against the simulator."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from customer_pipeline import (
    AuthError,
    PageFetchError,
    Progress,
    run_pipeline,
    stream_customers,
)
from customer_pipeline.console import print_summary
from customer_pipeline.models import ExportDocument, Rejection, SummaryReport
from customer_pipeline.simulator import Dataset

from .conftest import BASE_URL, SECRET_KEY, fast_settings
from .helpers import pages_api
from .reference import expected_customers, expected_rejections


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


async def test_defaults_reproduce_the_seed_sample(simulator: Any, tmp_path: Path) -> None:
    base, _ = await simulator(failure_rate=0.2)  # 12 users on 2 pages, 20% 500/503
    result = await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path))
    doc = load(result.customers_path)
    ExportDocument.model_validate(doc)
    george = doc["customers"][0]
    assert george["customer_id"] == 1 and george["full_name"] == "George Bluth"
    assert george["email_domain"] == "reqres.in" and george["data_quality_score"] == 100
    assert [c["customer_id"] for c in doc["customers"]] == list(range(1, 13))
    assert doc["metadata"]["total_customers"] == 12
    assert doc["metadata"]["data_quality_summary"] == {
        "high_quality": 12, "medium_quality": 0, "low_quality": 0,
    }  # fmt: skip
    assert doc["metadata"]["complete"] is True and result.exit_code == 0
    assert result.rejected_path is None and not (tmp_path / "rejected_records.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pipeline.log",  # no lock file, and no checkpoint: the run completed
        "processed_customers.json",
        "summary_report.json",
    ]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_hostile_api_exports_every_customer_exactly_once(
    simulator: Any, tmp_path: Path, transport: str
) -> None:
    config = {
        "total": 1200,
        "per_page": 6,
        "failure_rate": 0.2,
        "dirty_rate": 0.1,
        "duplicate_rate": 0.05,
        "truncate_rate": 0.01,
        "drop_rate": 0.01,
        "seed": 42,
    }
    base, sim = await simulator(**config)
    settings = fast_settings(
        base_url=base, output_dir=tmp_path, concurrency=16, max_retries=12, per_page=6,
        transport=transport, rate_limit=0, backoff_max=0.05,
    )  # fmt: skip
    result = await run_pipeline(settings)
    dataset = Dataset(1200, 42, 0.1, 0.05)
    expected = expected_customers(dataset, 6, seed=42)
    doc = load(result.customers_path)
    assert doc["customers"] == expected
    assert result.complete and result.failed_pages == []
    report = load(result.report_path)
    SummaryReport.model_validate(report)
    counts = report["counts"]
    assert counts["unique_customers"] == len(expected)
    assert counts["rejected"] == expected_rejections(dataset, 6) > 0
    assert counts["duplicates_removed"] > 0
    assert counts["raw_records"] == (
        counts["unique_customers"] + counts["duplicates_removed"] + counts["rejected"]
    )
    rejected = [orjson.loads(line) for line in result.rejected_path.read_bytes().splitlines()]
    assert len(rejected) == counts["rejected"]
    for line in rejected:
        Rejection.model_validate(line)
    # Every failed request was seen and retried once: none ran out of retries.
    api = report["api"]
    failures = api["failures_by_status"]
    assert api["successes"] == api["pages_fetched"] == sim.stats.ok - sim.stats.truncated == 200
    assert api["retries"] == sum(failures.values()) == api["requests"] - api["successes"]
    assert failures.get("500", 0) + failures.get("503", 0) == sim.stats.errors_5xx > 0
    assert failures["invalid_body"] == sim.stats.truncated > 0
    assert set(failures) <= {"500", "503", "invalid_body", "RemoteProtocolError"}
    # aiohttp sends a GET again by itself when a reused connection drops; httpx never does.
    dropped_seen = failures.get("RemoteProtocolError", 0)
    assert sim.stats.dropped > 0 and dropped_seen <= sim.stats.dropped
    if transport == "httpx":
        assert dropped_seen == sim.stats.dropped
    assert api["rate_limited_429"] == sim.stats.rate_limited == 0


async def test_dedup_winners_follow_score_then_page(simulator: Any, tmp_path: Path) -> None:
    base, _ = await simulator(total=600, per_page=6, dirty_rate=0.3, duplicate_rate=0.3)
    result = await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path, per_page=6))
    by_id = {c["customer_id"]: c for c in load(result.customers_path)["customers"]}
    ds = Dataset(600, 42, 0.3, 0.3)
    fixed = [
        i
        for i in range(1, 595)
        if ds.duplicated(i)
        and ds.dirt(i) in ("email_invalid", "email_missing", "first_name_blank", "avatar_invalid")
    ]
    degraded = [i for i in range(1, 595) if ds.duplicated(i) and ds.dirt(i) is None
                and "avatar" not in ds.duplicate_record(i)]  # fmt: skip
    assert fixed and degraded
    for i in fixed:  # the clean copy on the later page wins on score
        assert by_id[i]["data_quality_score"] == 100, i
    for i in degraded:  # the complete copy on the earlier page wins on score
        assert by_id[i]["avatar"] is not None and by_id[i]["data_quality_score"] == 100


async def test_concurrency_1_and_32_export_identical_customers(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(
        total=900, per_page=10, failure_rate=0.1, dirty_rate=0.1, duplicate_rate=0.1
    )
    outputs = []
    for concurrency in (1, 32):
        out = tmp_path / f"c{concurrency}"
        settings = fast_settings(
            base_url=base, output_dir=out, concurrency=concurrency, per_page=10, max_retries=10
        )
        result = await run_pipeline(settings)
        outputs.append(load(result.customers_path)["customers"])
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) > 800


async def test_report_counts_shares_and_timings(simulator: Any, tmp_path: Path) -> None:
    base, _ = await simulator(total=3000, per_page=50, dirty_rate=0.2)
    result = await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path, per_page=50))
    report = load(result.report_path)
    quality = report["quality"]
    assert sum(quality["bands"].values()) == result.customers
    assert quality["min_score"] <= quality["mean_score"] <= quality["max_score"] == 100
    assert quality["issues_per_field"]["email"]["missing"] > 0
    tiers = report["business_fields"]["customer_tier"]
    assert sum(v["count"] for v in tiers.values()) == result.customers
    assert tiers["basic"]["share"] == pytest.approx(0.6, abs=0.04)
    assert set(report["timings"]) >= {"fetch_s", "validate_s", "enrich_s", "dedup_s", "write_s"}
    assert report["api"]["pages_fetched"] == 60 and report["api"]["total_pages"] == 60
    # Shares and bands recomputed from the exported customers agree with the report.
    customers = load(result.customers_path)["customers"]
    assert sum(c["customer_tier"] == "basic" for c in customers) == tiers["basic"]["count"]
    assert sum(c["data_quality_score"] >= 90 for c in customers) == quality["bands"]["high_quality"]


async def test_failed_pages_make_an_incomplete_export(tmp_path: Path) -> None:
    with pages_api({3, 5}):
        result = await run_pipeline(fast_settings(output_dir=tmp_path, max_retries=2))
    doc = load(result.customers_path)
    assert result.failed_pages == [3, 5] and result.exit_code == 3
    assert doc["metadata"]["complete"] is False
    assert doc["metadata"]["failed_pages"] == [3, 5]
    ids = [c["customer_id"] for c in doc["customers"]]
    assert ids == [i for i in range(1, 49) if (i - 1) // 6 + 1 not in (3, 5)]
    assert load(result.report_path)["api"]["failed_pages"] == [3, 5]


async def test_auth_error_is_raised_once_and_leaves_no_files(
    simulator: Any, tmp_path: Path
) -> None:
    base, _ = await simulator(api_key="the-right-key")
    with pytest.raises(AuthError, match="CUSTOMER_PIPELINE_API_KEY"):
        await run_pipeline(fast_settings(base_url=base, output_dir=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline.log"]
    assert "API key missing or invalid" in (tmp_path / "pipeline.log").read_text()


async def test_key_is_in_no_output_or_log(simulator: Any, tmp_path: Path) -> None:
    base, _ = await simulator(api_key=SECRET_KEY, total=200, failure_rate=0.3, dirty_rate=0.2)
    settings = fast_settings(base_url=base, output_dir=tmp_path, log_level="DEBUG")
    result = await run_pipeline(settings)
    assert result.customers > 0
    for path in tmp_path.rglob("*"):
        assert SECRET_KEY.encode() not in path.read_bytes(), path


async def test_progress_callback_sees_every_page(simulator: Any, tmp_path: Path) -> None:
    base, _ = await simulator(total=60, per_page=6)
    seen: list[Progress] = []
    await run_pipeline(
        fast_settings(base_url=base, output_dir=tmp_path, per_page=6), on_progress=seen.append
    )
    assert [p.pages_done for p in seen] == list(range(1, 11))
    assert seen[-1].pages_total == 10 and seen[-1].records == 60


async def test_stream_customers_yields_processed_customers(simulator: Any) -> None:
    base, _ = await simulator(total=40, per_page=6, dirty_rate=0.2, seed=5)
    customers = [c async for c in stream_customers(fast_settings(base_url=base, seed=9))]
    expected = expected_customers(Dataset(40, 5, 0.2, 0.0), 6, seed=9)
    assert sorted(customers, key=lambda c: c["customer_id"]) == expected


async def test_stream_customers_raises_after_yielding_when_pages_failed() -> None:
    got: list[dict[str, Any]] = []
    with pages_api({4}), pytest.raises(PageFetchError, match=r"\[4\]"):
        async for customer in stream_customers(fast_settings(max_retries=1)):
            got.append(customer)
    assert len(got) == 7 * 6  # every good page came through first


async def test_more_pages_than_max_pages_is_an_incomplete_run_that_says_why(
    tmp_path: Path,
) -> None:
    with pages_api(set(), total_pages=8):
        result = await run_pipeline(fast_settings(output_dir=tmp_path, max_pages=6))
    reason = "the API reports 8 pages; max_pages is 6"
    assert result.exit_code == 3 and not result.complete and result.failed_pages == []
    assert result.incomplete_reasons == [reason]
    doc = load(result.customers_path)
    ExportDocument.model_validate(doc)
    assert doc["metadata"]["complete"] is False
    assert doc["metadata"]["incomplete_reasons"] == [reason]
    assert len(doc["customers"]) == 6 * 6
    report = load(result.report_path)
    assert report["run"]["complete"] is False and report["run"]["incomplete_reasons"] == [reason]
    assert reason in result.log_path.read_text()


async def test_a_run_past_max_pages_says_so_on_the_terminal_and_resume_fetches_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pages_api(set(), total_pages=8):
        result = await run_pipeline(fast_settings(output_dir=tmp_path, max_pages=6))
        print_summary(result)
        out = capsys.readouterr().out
        assert "the API reports 8 pages; max_pages is 6" in out and "Pages []" not in out
        assert "Raise --max-pages" in out
        again = await run_pipeline(fast_settings(output_dir=tmp_path, max_pages=8),
                                   mode="resume")  # fmt: skip
    assert again.exit_code == 0 and again.customers == 8 * 6


async def test_a_complete_run_has_empty_incomplete_reasons(tmp_path: Path) -> None:
    with pages_api(set()):
        result = await run_pipeline(fast_settings(output_dir=tmp_path))
    assert result.exit_code == 0 and result.incomplete_reasons == []
    assert load(result.customers_path)["metadata"]["incomplete_reasons"] == []
    assert load(result.report_path)["run"]["incomplete_reasons"] == []


async def test_failed_pages_are_a_reason_too(tmp_path: Path) -> None:
    with pages_api({3, 5}):
        result = await run_pipeline(fast_settings(output_dir=tmp_path, max_retries=1))
    assert result.incomplete_reasons == ["pages [3, 5] failed after every retry"]
    assert load(result.customers_path)["metadata"]["incomplete_reasons"] == [
        "pages [3, 5] failed after every retry"
    ]


async def test_a_gap_without_counts_gives_one_result_at_any_concurrency(tmp_path: Path) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        for _ in range(10 if page == 3 else 1):  # the empty page comes in last
            await asyncio.sleep(0)
        data = [] if page == 3 or page > 5 else [
            {"id": page * 10 + i, "email": f"u{i}@x.io"} for i in range(6)]  # fmt: skip
        return httpx.Response(200, json={"data": data})

    exports = []
    for concurrency in (1, 10):
        out = tmp_path / f"c{concurrency}"
        with respx.mock:
            respx.get(f"{BASE_URL}/api/users").mock(side_effect=answer)
            result = await run_pipeline(
                fast_settings(output_dir=out, concurrency=concurrency), keep_checkpoint=True
            )
        exports.append(load(result.customers_path)["customers"])
        with sqlite3.connect(out / ".checkpoint.sqlite3") as db:
            recorded = sorted(n for (n,) in db.execute("SELECT number FROM units"))
        assert recorded == [1, 2, 3], concurrency  # pages past the end are never recorded
        assert result.complete
    assert exports[0] == exports[1] and len(exports[0]) == 12
