"""Input validation nits an independent tester found: each case fails the way it was reported
without its fix (query parameter names, parameters sent twice, non-canonical ids, TOML keys
that landed inside the [field] table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from customer_pipeline import Settings
from customer_pipeline.config import load_settings
from customer_pipeline.errors import ConfigError
from customer_pipeline.rules import Rejected, parse_id, process

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


# 3. Ids: only the canonical decimal string of an integer is an id.

NOT_CANONICAL = "id is not a canonical integer string: "


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (" 18 ", NOT_CANONICAL + "surrounding whitespace"),
        ("18\n", NOT_CANONICAL + "surrounding whitespace"),
        ("024", NOT_CANONICAL + "leading zero"),
        ("00", NOT_CANONICAL + "leading zero"),
        ("+5", NOT_CANONICAL + "plus sign"),
        ("0" * 5000 + "7", NOT_CANONICAL + "leading zero"),
    ],
)
def test_an_id_string_that_is_not_canonical_is_rejected_saying_why(value: str, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        parse_id(value)
    assert info.value.reason == reason


@pytest.mark.parametrize("value", ["-27", "-1", "-0", " -5 ", "-" + "9" * 5000])
def test_a_negative_id_string_says_what_a_negative_int_says(value: str) -> None:
    with pytest.raises(Rejected) as as_int:
        parse_id(-27)
    with pytest.raises(Rejected) as as_str:
        parse_id(value)
    assert as_str.value.reason == as_int.value.reason


@pytest.mark.parametrize(("value", "expected"), [("18", 18), ("1", 1), ("9223372036854775807",
                         2**63 - 1), ("10", 10)])  # fmt: skip
def test_a_canonical_id_string_is_the_id(value: str, expected: int) -> None:
    assert parse_id(value) == expected


def test_a_padded_id_is_not_merged_with_the_customer_it_would_collide_with() -> None:
    raw: dict[str, Any] = {"email": "a@b.co", "first_name": "A", "last_name": "B"}
    assert process({**raw, "id": 18}, 42)["customer_id"] == 18
    for padded in (" 18 ", "018"):
        with pytest.raises(Rejected, match="not a canonical integer string"):
            process({**raw, "id": padded}, 42)


# 4. A top-level key written after [field] is, for TOML, a key of the field table.


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "source.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ('seed = 1\n\n[field]\nid = "uid"\n\nconcurrency = 0\n', "concurrency", 6),
        ('[field]\nid = "uid"\nbase_url = "http://127.0.0.1:8000"\n', "base_url", 3),
        ('[field]\nid = "uid"\npaginator = "offset"\nseed = 3\n', "paginator", 3),
    ],
)
def test_a_setting_after_the_field_table_is_said_to_be_inside_it(
    tmp_path: Path, text: str, key: str, line: int
) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(config=config, env_file=None, environ={})
    message = str(info.value)
    assert f"key {key} on line {line} of {config} is inside the [field] table" in message
    assert "top-level keys must come before any [table]" in message
    assert "invalid field" not in message


def test_every_misplaced_setting_is_named_at_once(tmp_path: Path) -> None:
    config = write(tmp_path, '[field]\nid = "uid"\nconcurrency = 0\nseed = 3\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config=config, env_file=None, environ={})
    assert "key concurrency on line 3" in str(info.value)
    assert "key seed on line 4" in str(info.value)


def test_an_unknown_name_in_the_field_table_is_named_on_its_own_line(tmp_path: Path) -> None:
    config = write(tmp_path, '[field]\nid = "uid"\n\nphone = "tel"\n')
    with pytest.raises(ConfigError, match=r"line 4.*phone.*the fields are id, email"):
        load_settings(config=config, env_file=None, environ={})


def test_a_quoted_table_header_is_found_too(tmp_path: Path) -> None:
    config = write(tmp_path, '[ "field" ]\nid = "uid"\nconcurrency = 0\n')
    with pytest.raises(ConfigError, match=r"key concurrency on line 3 of .* inside the \[field\]"):
        load_settings(config=config, env_file=None, environ={})


def test_settings_above_the_field_table_still_load(tmp_path: Path) -> None:
    config = write(tmp_path, 'concurrency = 3\n[field]\nid = "uid"\n')
    settings = load_settings(config=config, env_file=None, environ={})
    assert (settings.concurrency, settings.field) == (3, {"id": "uid"})
