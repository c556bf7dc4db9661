"""The public surface: what `customer_pipeline` exports, and one error base for all."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import customer_pipeline
from customer_pipeline import errors

PUBLIC = [
    "ApiError", "ApiStats", "ApiUnreachableError", "AuthError", "BadRequestError",
    "CheckpointError", "ConfigError", "Customer", "FolderInUseError", "IncompleteError",
    "Interrupted", "InvalidBodyError", "OutputError", "Page", "PageFetchError",
    "PageNotFoundError", "PipelineError", "Progress", "RateLimitedError", "ReqresClient",
    "ResponseTooLargeError", "RetryableError", "RunMode", "RunResult", "Settings", "__version__",
    "load_settings", "run_pipeline", "stream_customers",
]  # fmt: skip


def test_public_names_are_pinned_and_sorted() -> None:
    assert customer_pipeline.__all__ == PUBLIC
    assert sorted(PUBLIC) == PUBLIC
    for name in PUBLIC:
        assert hasattr(customer_pipeline, name), name


def test_every_library_error_derives_from_pipeline_error() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, Exception) and c.__module__ == errors.__name__]  # fmt: skip
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, customer_pipeline.PipelineError), cls
        assert cls.__name__ in errors.__doc__, f"{cls.__name__} missing from the tree"


def test_entry_points_are_async() -> None:
    assert inspect.iscoroutinefunction(customer_pipeline.run_pipeline)
    assert inspect.isasyncgenfunction(customer_pipeline.stream_customers)
    assert inspect.isasyncgenfunction(customer_pipeline.ReqresClient.iter_pages)


def test_customer_is_the_export_model_and_costs_no_start_up_until_used() -> None:
    from customer_pipeline.models import Customer

    assert customer_pipeline.Customer is Customer
    code = "import sys, customer_pipeline; print('customer_pipeline.models' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60).stdout.strip()  # fmt: skip
    assert loaded == "False"


def test_no_comment_or_docstring_points_at_a_file_outside_the_repo() -> None:
    root = Path(__file__).resolve().parent.parent
    outside = re.compile(r"\bSP" r"EC\b|\.\./sha" r"red")  # split, so this file does not match
    found = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("customer_pipeline", "tests", "benchmarks")
        for path in sorted((root / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert found == []  # state the rule itself, or point at the README section that does
