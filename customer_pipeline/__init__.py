"""customer-pipeline: fetch reqres-style customers concurrently, score, enrich, export JSON."""

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
from .pipeline import RunResult, run_pipeline, stream_customers
from .settings import Settings, load_settings
from .sources import Page
from .stages import Progress

__all__ = [
    "ApiError",
    "ApiStats",
    "ApiUnreachableError",
    "AuthError",
    "BadRequestError",
    "CheckpointError",
    "ConfigError",
    "FolderInUseError",
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
