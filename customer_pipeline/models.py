"""The shapes of what comes in and what goes out, as pydantic models.

The hot path handles plain dicts built by ``rules`` (pydantic per record would cost more than
the rest of the pipeline); these models document the contract, give consumers a JSON Schema
(``customer-pipeline schema``) and let tests validate every file we write.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .fields import (
    FIELD_TABLE,
    AcquisitionChannel,
    ActivityStatus,
    CustomerTier,
    EngagementLevel,
    MarketSegment,
)


class RawUser(BaseModel):
    """A user as the API sends it. Lenient: every field may be missing or of any type."""

    model_config = ConfigDict(extra="allow")

    id: Any = None
    email: Any = None
    first_name: Any = None
    last_name: Any = None
    avatar: Any = None


class ApiEnvelope(BaseModel):
    """One listing page as the API sends it; extra keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    page: Any = None
    per_page: Any = None
    total: Any = None
    total_pages: Any = None
    data: list[Any]


class Customer(BaseModel):
    """One processed, analytics-ready customer."""

    model_config = ConfigDict(extra="forbid")

    # The columns of fields.FIELD_TABLE, in its order (a test holds them together).
    customer_id: int = Field(ge=1)
    first_name: str | None
    last_name: str | None
    full_name: str | None
    email: str | None
    email_domain: str | None = Field(description="lower-cased; null when the email is invalid")
    avatar: str | None
    engagement_level: EngagementLevel
    activity_status: ActivityStatus
    acquisition_channel: AcquisitionChannel
    market_segment: MarketSegment
    customer_tier: CustomerTier
    data_quality_score: int = Field(ge=FIELD_TABLE.min_score, le=FIELD_TABLE.top_score)
    quality_issues: list[str] = Field(description='e.g. ["email:invalid", "last_name:missing"]')


class QualitySummary(BaseModel):
    """Customers per quality band, under the seed's keys."""

    model_config = ConfigDict(extra="forbid")

    # The bands of fields.FIELD_TABLE, in its order (a test holds them together).
    high_quality: int = Field(ge=0, description="data_quality_score >= 90")
    medium_quality: int = Field(ge=0, description="data_quality_score 70-89")
    low_quality: int = Field(ge=0, description="data_quality_score < 70")


class ExportMetadata(BaseModel):
    total_customers: int
    export_timestamp: str = Field(description="ISO 8601, UTC")
    data_quality_summary: QualitySummary
    complete: bool = Field(description="false when pages may be missing: failed, or past max_pages")
    failed_pages: list[int]
    incomplete_reasons: list[str] = Field(
        default_factory=list,
        description='why complete is false, e.g. "the API reports 100050 pages; max_pages is '
        '100000"; empty when it is true',
    )
    source: str = Field(description="the API's base URL (never the key)")
    seed: int
    pipeline_version: str


class ExportDocument(BaseModel):
    """``processed_customers.json``: customers sorted by customer_id."""

    metadata: ExportMetadata
    customers: list[Customer]


class Rejection(BaseModel):
    """One line of ``rejected_records.jsonl``."""

    page: int
    position: int
    reason: str
    record: Any


class SummaryReport(BaseModel):
    """``summary_report.json``."""

    model_config = ConfigDict(extra="allow")

    run: dict[str, Any]
    counts: dict[str, int]
    quality: dict[str, Any]
    business_fields: dict[str, dict[str, dict[str, float]]]
    api: dict[str, Any]
    timings: dict[str, float]
