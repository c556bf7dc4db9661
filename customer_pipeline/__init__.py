"""customer-pipeline: fetch reqres-style customers concurrently, score, enrich, export JSON."""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .checkpoint import RunMode
from .client import ApiStats, ReqresClient
from .errors import (
    ApiError,
    ApiUnreachableError,
    AuthError,
    BadRequestError,
    CheckpointError,
    ConfigError,
    FolderInUseError,
    IncompleteError,
    Interrupted,
    InvalidBodyError,
    OutputError,
    PageFetchError,
    PageNotFoundError,
    PipelineError,
    RateLimitedError,
    ResponseTooLargeError,
    RetryableError,
)
from .paging import Page
from .pipeline import RunResult, run_pipeline, stream_customers
from .settings import Settings, load_settings
from .stages import Progress

if TYPE_CHECKING:
    from .models import Customer

__all__ = [
    "ApiError",
    "ApiStats",
    "ApiUnreachableError",
    "AuthError",
    "BadRequestError",
    "CheckpointError",
    "ConfigError",
    "Customer",
    "FolderInUseError",
    "IncompleteError",
    "Interrupted",
    "InvalidBodyError",
    "OutputError",
    "Page",
    "PageFetchError",
    "PageNotFoundError",
    "PipelineError",
    "Progress",
    "RateLimitedError",
    "ReqresClient",
    "ResponseTooLargeError",
    "RetryableError",
    "RunMode",
    "RunResult",
    "Settings",
    "__version__",
    "load_settings",
    "run_pipeline",
    "stream_customers",
]


def __getattr__(name: str) -> Any:
    """``Customer`` on first use: the pydantic models cost start-up time runs do not need."""
    if name == "Customer":
        from .models import Customer

        return Customer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
