"""customer-pipeline: fetch reqres-style customers concurrently, score, enrich, export JSON."""

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
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

if TYPE_CHECKING:
    from .checkpoint import RunMode
    from .client import ApiStats, ReqresClient
    from .config import load_settings
    from .models import Customer
    from .pipeline import RunResult, run_pipeline, stream_customers
    from .settings import Settings
    from .sources import Page
    from .stages import Progress

# Each public name's module, imported on first use: the command line then starts before the
# HTTP stack loads, so its entry point can catch a Ctrl-C that comes during start-up.
_HOMES = {
    "ApiStats": "client",
    "Customer": "models",
    "Page": "sources",
    "Progress": "stages",
    "ReqresClient": "client",
    "RunMode": "checkpoint",
    "RunResult": "pipeline",
    "Settings": "settings",
    "load_settings": "config",
    "run_pipeline": "pipeline",
    "stream_customers": "pipeline",
}

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
    """Import a public name from its module on first use (PEP 562)."""
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, imported or not."""
    return sorted({*globals(), *__all__})
