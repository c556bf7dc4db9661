"""What the simulator serves and how it misbehaves: one immutable, validated config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Pagination = Literal["page_number", "offset", "cursor", "link", "next_url"]
Envelope = Literal["object", "bare"]
FieldStyle = Literal["flat", "nested"]
RateHeaders = Literal["none", "ietf", "x", "x-epoch"]

PAGINATIONS: tuple[Pagination, ...] = ("page_number", "offset", "cursor", "link", "next_url")
ENVELOPES: tuple[Envelope, ...] = ("object", "bare")
FIELD_STYLES: tuple[FieldStyle, ...] = ("flat", "nested")
RATE_HEADERS: tuple[RateHeaders, ...] = ("none", "ietf", "x", "x-epoch")
# Styles whose body must carry the next step (cursor, URL), so it cannot be a bare list.
NEEDS_OBJECT: frozenset[str] = frozenset({"cursor", "next_url"})


def default_envelope(pagination: str) -> Envelope:
    """The body a style has when none is asked for: json-server 0.17 sends Link + bare lists."""
    return "bare" if pagination == "link" else "object"


def envelope_problem(pagination: str, envelope: str | None) -> str | None:
    """Why this envelope cannot go with this pagination, or None when it can."""
    if envelope == "bare" and pagination in NEEDS_OBJECT:
        return (
            f"a bare list cannot carry the next step of pagination {pagination!r}: "
            "use envelope 'object', or pagination page_number, offset or link"
        )
    return None


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulator serves and how it misbehaves. Rates are per request or record.

    ``envelope`` None means the style's own default (bare for ``link``, else object);
    ``clamp`` answers the last page again past the end; ``link_last`` puts ``rel="last"``
    in the Link header. ``etag`` sends an ETag with every listing and answers a matching
    If-None-Match with 304; ``cache_control`` is sent as Cache-Control when set. ``quota``
    (0: none) allows that many listing requests per ``quota_window_s`` window, 429 past it;
    ``rate_headers`` tells the client what is left: ``ietf`` (RateLimit-Remaining/-Reset in
    seconds), ``x`` (X-RateLimit-* in seconds) or ``x-epoch`` (X-RateLimit-Reset a Unix time).
    """

    total: int = 12
    per_page: int = 6
    failure_rate: float = 0.2
    rate_limit: float = 20.0
    latency_ms: float = 50.0
    dirty_rate: float = 0.0
    duplicate_rate: float = 0.0
    truncate_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int = 42
    api_key: str | None = None
    pagination: Pagination = "page_number"
    envelope: Envelope | None = None
    field_style: FieldStyle = "flat"
    clamp: bool = False
    link_last: bool = True
    etag: bool = False
    cache_control: str | None = None
    quota: int = 0
    quota_window_s: float = 1.0
    rate_headers: RateHeaders = "none"

    def __post_init__(self) -> None:
        for name in ("failure_rate", "dirty_rate", "duplicate_rate", "truncate_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.total < 0 or self.per_page < 1:
            raise ValueError("total must be >= 0 and per_page >= 1")
        if self.rate_limit < 0 or self.latency_ms < 0:
            raise ValueError("rate_limit and latency_ms must be >= 0")
        if self.quota < 0 or not self.quota_window_s > 0:
            raise ValueError("quota must be >= 0 and quota_window_s > 0")
        for name, allowed in (
            ("pagination", PAGINATIONS),
            ("field_style", FIELD_STYLES),
            ("envelope", (*ENVELOPES, None)),
            ("rate_headers", RATE_HEADERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if problem := envelope_problem(self.pagination, self.envelope):
            raise ValueError(f"envelope: {problem}")

    @property
    def bare(self) -> bool:
        """Whether listing bodies are the JSON list itself."""
        return (self.envelope or default_envelope(self.pagination)) == "bare"

    def run_settings(self) -> dict[str, Any]:
        """The settings (besides base_url) with which ``customer-pipeline run`` reads this."""
        found: dict[str, Any] = {"per_page": self.per_page}
        found.update(_STYLE_SETTINGS[self.pagination])
        if self.bare:
            found["data_path"] = ""
        if self.field_style == "nested":
            found["field"] = dict(NESTED_FIELDS)
        return found

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={'***' if k == 'api_key' and v else v!r}" for k, v in self.__dict__.items()
        )
        return f"SimulatorConfig({fields})"


# How a client reads each style: the wire format of ``pagination`` and ``dataset``.
_STYLE_SETTINGS: dict[str, dict[str, Any]] = {
    "page_number": {},
    "offset": {"paginator": "offset", "size_param": "limit"},
    "cursor": {"paginator": "cursor", "next_path": "meta.next_cursor"},
    "link": {"paginator": "link"},
    "next_url": {"paginator": "next_url", "next_path": "links.next"},
}
NESTED_FIELDS: dict[str, str] = {
    "id": "uid",
    "email": "contact.email",
    "first_name": "name.first",
    "last_name": "name.last",
    "avatar": "photo.url",
}
