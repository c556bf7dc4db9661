"""The report's figures and the export's metadata, on small hand-made inputs."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from customer_pipeline import __version__
from customer_pipeline.dedup import CODE_LAYOUT
from customer_pipeline.report import business_summary, export_metadata, quality_summary, utc_now

NAMES = ("engagement_level", "activity_status", "acquisition_channel", "market_segment",
         "customer_tier")  # fmt: skip


def code(issues: list[str], *values: str) -> int:
    """The summary code of a customer with these issues and business values."""
    return CODE_LAYOUT.pack({"quality_issues": issues, **dict(zip(NAMES, values, strict=True))})


# Seven unique customers: (issues, business values) x how many have them.
CUSTOMERS = Counter({
    code([], "high", "active", "website", "US-West", "basic"): 3,  # 100
    code(["avatar:invalid"], "medium", "inactive", "mobile", "EU", "premium"): 1,  # 90
    code(["email:invalid", "first_name:missing", "avatar:missing"],
         "low", "active", "email", "APAC", "enterprise"): 2,  # 70
    code(["email:missing", "first_name:missing", "last_name:missing", "avatar:invalid"],
         "high", "active", "website", "US-East", "basic"): 1,  # 60
})  # fmt: skip


def test_quality_summary_counts_scores_bands_and_issues_per_field() -> None:
    summary = quality_summary(CUSTOMERS)
    assert summary == {
        "mean_score": 84.29,  # (3 * 100 + 90 + 2 * 70 + 60) / 7
        "min_score": 60,
        "max_score": 100,
        "bands": {"high_quality": 4, "medium_quality": 2, "low_quality": 1},  # 90 and 70 are in
        "issues_per_field": {
            "email": {"missing": 1, "invalid": 2},
            "first_name": {"missing": 3, "invalid": 0},
            "last_name": {"missing": 1, "invalid": 0},
            "avatar": {"missing": 2, "invalid": 2},
        },
    }
    assert list(summary["bands"]) == ["high_quality", "medium_quality", "low_quality"]
    assert list(summary["issues_per_field"]) == ["email", "first_name", "last_name", "avatar"]


def test_quality_summary_of_no_customers_has_no_scores_and_zero_counts() -> None:
    assert quality_summary(Counter()) == {
        "mean_score": None,
        "min_score": None,
        "max_score": None,
        "bands": {"high_quality": 0, "medium_quality": 0, "low_quality": 0},
        "issues_per_field": {
            name: {"missing": 0, "invalid": 0}
            for name in ("email", "first_name", "last_name", "avatar")
        },
    }


def shares(**counts: int) -> dict[str, dict[str, float]]:
    return {value: {"count": n, "share": round(n / 7, 4)} for value, n in counts.items()}


def test_business_summary_counts_and_shares_every_value_in_the_table_order() -> None:
    summary = business_summary(CUSTOMERS)
    assert summary == {
        "engagement_level": shares(high=4, medium=1, low=2),
        "activity_status": shares(active=6, inactive=1),
        "acquisition_channel": shares(website=4, mobile=1, email=2),
        "market_segment": shares(**{"US-West": 3, "US-East": 1, "EU": 1, "APAC": 2}),
        "customer_tier": shares(basic=4, premium=1, enterprise=2),
    }
    assert summary["activity_status"]["active"] == {"count": 6, "share": 0.8571}
    assert list(summary) == list(NAMES)
    assert list(summary["market_segment"]) == ["US-West", "US-East", "EU", "APAC"]


def test_business_summary_lists_values_no_customer_has() -> None:
    one = Counter({code([], "low", "inactive", "email", "APAC", "enterprise"): 1})
    summary = business_summary(one)
    assert summary["customer_tier"] == {
        "basic": {"count": 0, "share": 0.0},
        "premium": {"count": 0, "share": 0.0},
        "enterprise": {"count": 1, "share": 1.0},
    }
    empty = business_summary(Counter())
    assert empty["engagement_level"] == {v: {"count": 0, "share": 0.0}
                                         for v in ("high", "medium", "low")}  # fmt: skip


def test_export_metadata_holds_what_it_is_given_in_the_export_order() -> None:
    bands = {"high_quality": 4, "medium_quality": 2, "low_quality": 1}
    before = datetime.now(UTC).replace(microsecond=0)
    metadata: dict[str, Any] = export_metadata(
        total_customers=7, bands=bands, complete=False, failed_pages=[3, 5],
        incomplete_reasons=["pages [3, 5] failed after every retry"],
        source="http://api.test/api/users", seed=9,
    )  # fmt: skip
    after = datetime.now(UTC)
    stamp = metadata.pop("export_timestamp")
    assert metadata == {
        "total_customers": 7,
        "data_quality_summary": bands,
        "complete": False,
        "failed_pages": [3, 5],
        "incomplete_reasons": ["pages [3, 5] failed after every retry"],
        "source": "http://api.test/api/users",
        "seed": 9,
        "pipeline_version": __version__,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert before <= datetime.fromisoformat(stamp) <= after
    keys = list(export_metadata(total_customers=0, bands={}, complete=True, failed_pages=[],
                                incomplete_reasons=[], source="", seed=0))  # fmt: skip
    assert keys == [
        "total_customers", "export_timestamp", "data_quality_summary", "complete",
        "failed_pages", "incomplete_reasons", "source", "seed", "pipeline_version",
    ]  # fmt: skip


def test_utc_now_is_iso_8601_to_the_second_with_z() -> None:
    stamp = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert datetime.fromisoformat(stamp).utcoffset() is not None
    assert abs((datetime.fromisoformat(stamp) - datetime.now(UTC)).total_seconds()) < 60
