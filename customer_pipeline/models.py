"""The shapes of what comes in and what goes out, as pydantic models.

The hot path handles plain dicts built by ``rules`` (pydantic per record would cost more than
the rest of the pipeline); these models document the contract, give consumers a JSON Schema
(``customer-pipeline schema``) and let tests validate every file we write.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class EngagementLevel(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class ActivityStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class AcquisitionChannel(StrEnum):
    WEBSITE = "website"
    MOBILE = "mobile"
    EMAIL = "email"


class MarketSegment(StrEnum):
    US_WEST = "US-West"
    US_EAST = "US-East"
    EU = "EU"
    APAC = "APAC"


class CustomerTier(StrEnum):
    BASIC = "basic"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"


class QualityBand(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Customer(BaseModel):
    """One processed, analytics-ready customer."""

    model_config = ConfigDict(extra="forbid")

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
    data_quality_score: int = Field(ge=60, le=100)
    quality_issues: list[str] = Field(description='e.g. ["email:invalid", "last_name:missing"]')


class QualitySummary(BaseModel):
    """Customers per quality band, under the seed's keys."""

    model_config = ConfigDict(extra="forbid")

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
