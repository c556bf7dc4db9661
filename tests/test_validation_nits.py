"""Input validation nits an independent tester found: each case fails the way it was reported
without its fix (query parameter names, parameters sent twice, non-canonical ids, TOML keys
that landed inside the [field] table)."""

from __future__ import annotations

import pytest

from customer_pipeline import Settings
from customer_pipeline.config import load_settings
from customer_pipeline.errors import ConfigError

PARAMS = ("page_param", "size_param", "offset_param", "cursor_param")

# 1. A query parameter name with whitespace (or an invisible character) in it.


@pytest.mark.parametrize("name", PARAMS)
@pytest.mark.parametrize(
    "value", ["a b", " page", "page ", "a\tb", "a\u00a0b", "a\u3000b", "a\u200bb", "a\u00adb"]
)
def test_a_query_parameter_name_with_whitespace_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid {name}: .*no .*spaces"):
        Settings(**{name: value})


@pytest.mark.parametrize("value", ["_page", "page[number]", "p\u00e1gina", "x-y.z"])
def test_a_query_parameter_name_without_whitespace_is_accepted(value: str) -> None:
    assert Settings(page_param=value).page_param == value


def test_a_query_parameter_name_with_a_space_names_the_flag_and_variable() -> None:
    with pytest.raises(ConfigError, match="invalid page_param \\(--page-param / "
                       "CUSTOMER_PIPELINE_PAGE_PARAM\\)") as info:  # fmt: skip
        load_settings(env_file=None, environ={}, page_param="a b")
    assert "a b" not in str(info.value)


# 2. Two settings that name the same query parameter: one would be sent twice.


@pytest.mark.parametrize(
    ("paginator", "given", "clash"),
    [
        ("page_number", {"page_param": "per_page"}, "page_param and size_param"),
        ("page_number", {"page_param": "n", "size_param": "n"}, "page_param and size_param"),
        ("link", {"size_param": "page"}, "page_param and size_param"),
        ("offset", {"offset_param": "per_page"}, "offset_param and size_param"),
        ("cursor", {"cursor_param": "per_page"}, "cursor_param and size_param"),
    ],
)
def test_two_parameters_of_one_name_are_refused_naming_both(
    paginator: str, given: dict[str, str], clash: str
) -> None:
    extra = {"next_path": "next"} if paginator == "cursor" else {}
    with pytest.raises(ConfigError, match=f"invalid settings: {clash} ") as info:
        Settings(paginator=paginator, **given, **extra)
    flags = [f"--{name.replace('_', '-')}" for name in clash.split(" and ")]
    assert all(flag in str(info.value) for flag in flags), info.value


@pytest.mark.parametrize(
    ("paginator", "given"),
    [
        # Each paginator sends only its own parameters: a clash with one it never sends is moot.
        ("page_number", {"offset_param": "per_page", "cursor_param": "per_page"}),
        ("offset", {"page_param": "per_page", "cursor_param": "per_page"}),
        ("cursor", {"page_param": "per_page", "offset_param": "per_page"}),
        ("next_url", {"page_param": "per_page", "cursor_param": "per_page"}),
    ],
)
def test_a_clash_with_a_parameter_the_paginator_never_sends_is_accepted(
    paginator: str, given: dict[str, str]
) -> None:
    extra = {"next_path": "next"} if paginator in ("cursor", "next_url") else {}
    assert Settings(paginator=paginator, **given, **extra).paginator == paginator
