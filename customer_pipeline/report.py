"""The summary report and the export metadata, from the run's counters."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from ._version import __version__
from .dedup import CODE_LAYOUT, CodeLayout
from .fields import ISSUE_KINDS


def utc_now() -> str:
    """ISO 8601 UTC timestamp, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def quality_summary(code_counts: Counter[int], layout: CodeLayout = CODE_LAYOUT) -> dict[str, Any]:
    """Score statistics, band counts and issues per field over the unique customers."""
    table = layout.table
    bands = {band.key: 0 for band in table.bands}  # under the seed's names, in its order
    per_field = {name: dict.fromkeys(ISSUE_KINDS, 0) for name in table.rule_names}
    total = 0
    score_sum = 0
    scores: list[int] = []
    for code, count in code_counts.items():
        issues, _ = layout.unpack(code)
        score = table.score(len(issues))
        bands[table.band(score).key] += count
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


def business_summary(
    code_counts: Counter[int], layout: CodeLayout = CODE_LAYOUT
) -> dict[str, dict[str, dict[str, float]]]:
    """Count and share of every business-field value over the unique customers."""
    fields = layout.table.business
    counts: list[Counter[str]] = [Counter() for _ in fields]
    total = 0
    for code, count in code_counts.items():
        _, values = layout.unpack(code)
        for counter, value in zip(counts, values, strict=True):
            counter[value] += count
        total += count
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for field, counter in zip(fields, counts, strict=True):
        summary[field.name] = {
            value: {
                "count": counter[value],
                "share": round(counter[value] / total, 4) if total else 0.0,
            }
            for value in field.values
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
