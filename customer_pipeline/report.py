"""The summary report and the export metadata, from the run's counters."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from ._version import __version__
from .dedup import describe_code
from .rules import BUSINESS_FIELDS, FIELDS, quality_band


def utc_now() -> str:
    """ISO 8601 UTC timestamp, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# The seed's names for the band counts (in the export's data_quality_summary and the report).
BAND_KEYS = {"high": "high_quality", "medium": "medium_quality", "low": "low_quality"}


def quality_summary(code_counts: Counter[int]) -> dict[str, Any]:
    """Score statistics, band counts and issues per field over the unique customers."""
    bands = dict.fromkeys(BAND_KEYS.values(), 0)
    per_field: dict[str, dict[str, int]] = {f: {"missing": 0, "invalid": 0} for f in FIELDS}
    total = 0
    score_sum = 0
    scores: list[int] = []
    for code, count in code_counts.items():
        issues, _ = describe_code(code)
        score = 100 - 10 * len(issues)
        bands[BAND_KEYS[quality_band(score)]] += count
        for issue in issues:
            field, _, kind = issue.partition(":")
            per_field[field][kind] += count
        total += count
        score_sum += score * count
        scores.append(score)
    return {
        "mean_score": round(score_sum / total, 2) if total else None,
        "min_score": min(scores) if scores else None,
        "max_score": max(scores) if scores else None,
        "bands": bands,
        "issues_per_field": per_field,
    }


def business_summary(code_counts: Counter[int]) -> dict[str, dict[str, dict[str, float]]]:
    """Count and share of every business-field value over the unique customers."""
    counts: list[Counter[str]] = [Counter() for _ in BUSINESS_FIELDS]
    total = 0
    for code, count in code_counts.items():
        _, values = describe_code(code)
        for counter, value in zip(counts, values, strict=True):
            counter[value] += count
        total += count
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for (name, choices), counter in zip(BUSINESS_FIELDS, counts, strict=True):
        summary[name] = {
            value: {
                "count": counter[value],
                "share": round(counter[value] / total, 4) if total else 0.0,
            }
            for value, _ in choices
        }
    return summary


def export_metadata(
    *,
    total_customers: int,
    bands: dict[str, int],
    complete: bool,
    failed_pages: list[int],
    incomplete_reasons: list[str],
    source: str,
    seed: int,
) -> dict[str, Any]:
    """The ``metadata`` block of processed_customers.json."""
    return {
        "total_customers": total_customers,
        "export_timestamp": utc_now(),
        "data_quality_summary": bands,
        "complete": complete,
        "failed_pages": failed_pages,
        "incomplete_reasons": incomplete_reasons,
        "source": source,
        "seed": seed,
        "pipeline_version": __version__,
    }
