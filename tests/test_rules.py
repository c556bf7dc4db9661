"""The record rules of the field table, one by one, and as properties."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customer_pipeline.fields import FIELD_TABLE, email_domain, is_valid_avatar
from customer_pipeline.models import Customer
from customer_pipeline.rules import (
    Rejected,
    business_fields,
    parse_id,
    process,
    validate_and_score,
)

GOOD = {
    "id": 7,
    "email": "michael.lawson@reqres.in",
    "first_name": "Michael",
    "last_name": "Lawson",
    "avatar": "https://reqres.in/img/faces/7-image.jpg",
}


def with_(**changes: Any) -> dict[str, Any]:
    record = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            del record[key]
        else:
            record[key] = value
    return record


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1), ("17", 17), ("9223372036854775807", 2**63 - 1), (2**63 - 1, 2**63 - 1)],
)
def test_usable_ids(value: Any, expected: int) -> None:
    assert parse_id(value) == expected


MISSING, BOOLEAN, BELOW_1, NOT_INT = ("id missing", "id is a boolean", "id is less than 1",
                                     "id is not an integer")  # fmt: skip


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, MISSING), ("", MISSING), ("  ", MISSING), (True, BOOLEAN), (False, BOOLEAN),
     (0, BELOW_1), (-3, BELOW_1), ("0", BELOW_1), ("-1", BELOW_1), ("abc", NOT_INT),
     ("1.5", NOT_INT), (3.0, NOT_INT), (2.5, NOT_INT), ([1], NOT_INT), ({}, NOT_INT),
     ("١٢", NOT_INT), (2**63, "id 9223372036854775808 is larger than 2**63-1"),
     ("99999999999999999999", "id 99999999999999999999 is larger than 2**63-1")],
)  # fmt: skip
def test_unusable_ids_are_rejected_saying_why(value: Any, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        parse_id(value)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("value", "shown"),
    [(2**63, "9223372036854775808"), (10**29, str(10**29)), ("99999999999999999999",
     "99999999999999999999"), (10**200, "1000000000000000000000000000000...(201 digits)")],
)  # fmt: skip
def test_an_id_too_wide_for_64_bits_is_rejected_naming_it(value: Any, shown: str) -> None:
    with pytest.raises(Rejected) as info:
        parse_id(value)
    assert info.value.reason == f"id {shown} is larger than 2**63-1"


def test_missing_id_and_non_objects_are_rejected_with_a_reason() -> None:
    with pytest.raises(Rejected, match="id missing"):
        validate_and_score(with_(id=...))
    for raw in ([1, 2], "george", 5, None, 1.5):
        with pytest.raises(Rejected, match="not a JSON object"):
            validate_and_score(raw)


@pytest.mark.parametrize(
    ("email", "domain"),
    [
        ("george.bluth@reqres.in", "reqres.in"),
        ("A.B@Example.COM", "example.com"),
        ("x@sub.domain.co.uk", "sub.domain.co.uk"),
        ("no-at-sign.example.com", None),
        ("two@@example.com", None),
        ("a@b@example.com", None),
        ("@example.com", None),
        ("user@localhost", None),
        ("user@example..com", None),
        ("user@.example.com", None),
        ("user@example.com.", None),
        ("us er@example.com", None),
        ("user@exa\tmple.com", None),
    ],
)
def test_email_rules(email: str, domain: str | None) -> None:
    assert email_domain(email) == domain


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("https://reqres.in/img/faces/1-image.jpg", True),
        ("http://example.com", True),
        ("http://example.com:8080/a?b#c", True),
        ("ftp://example.com/a.png", False),
        ("https://", False),
        ("https:///path", False),
        ("https://exa mple.com/x", False),
        ("example.com/a.png", False),
        ("javascript:alert(1)", False),
        ("http://:80/x", False),
        ("http://user:pw@host:8080/p?q#f", True),
        ("http://x/@y", True),
        ("http://user@", False),
        ("http://u@:80/x", False),
    ],
)
def test_avatar_rules(url: str, valid: bool) -> None:
    assert is_valid_avatar(url) is valid


def test_a_clean_record_scores_100_with_trimmed_fields() -> None:
    c = validate_and_score(with_(first_name="  Michael ", id="7"))
    assert c["customer_id"] == 7
    assert c["first_name"] == "Michael" and c["full_name"] == "Michael Lawson"
    assert c["email_domain"] == "reqres.in"
    assert c["data_quality_score"] == 100 and c["quality_issues"] == []


def test_each_missing_or_invalid_field_costs_ten_and_is_listed_in_order() -> None:
    c = validate_and_score(with_(email="bad", last_name=..., avatar="ftp://x", first_name=12))
    assert c["quality_issues"] == [
        "email:invalid",
        "first_name:invalid",
        "last_name:missing",
        "avatar:invalid",
    ]
    assert c["data_quality_score"] == 60
    assert c["email"] == "bad" and c["email_domain"] is None
    assert c["full_name"] is None and c["first_name"] is None


def test_blank_counts_as_missing_and_full_name_uses_the_valid_part() -> None:
    c = validate_and_score(with_(first_name="   ", email=None))
    assert c["quality_issues"] == ["email:missing", "first_name:missing"]
    assert c["full_name"] == "Lawson"
    assert c["data_quality_score"] == 80


@pytest.mark.parametrize(
    ("score", "band"), [(100, "high"), (90, "high"), (89, "medium"), (70, "medium"), (60, "low")]
)
def test_bands(score: int, band: str) -> None:
    assert FIELD_TABLE.band(score).name == band


def test_business_fields_are_deterministic_per_seed_and_id() -> None:
    assert business_fields(42, 1) == business_fields(42, 1)
    differing = sum(business_fields(42, i) != business_fields(43, i) for i in range(1, 200))
    assert differing > 150  # another seed gives other values


def test_processed_customer_matches_the_export_model() -> None:
    customer = process(GOOD, seed=42)
    assert list(customer) == list(Customer.model_fields)
    Customer.model_validate(customer)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(-5, 10**20) | st.text(max_size=6) | json_values,
        "email": st.emails() | st.text() | json_values,
        "first_name": st.text() | json_values,
        "last_name": st.text() | json_values,
        "avatar": st.text() | st.just("https://x.io/a.png") | json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, record_like))
def test_processing_never_raises_anything_but_rejected(raw: Any) -> None:
    try:
        customer = process(raw, seed=7)
    except Rejected as exc:
        assert exc.reason
        return
    Customer.model_validate(customer)
    assert customer["data_quality_score"] == 100 - 10 * len(customer["quality_issues"])


def test_enrichment_shares_converge_on_the_table() -> None:
    n = 40_000
    counts = [Counter[str]() for _ in FIELD_TABLE.business]
    for customer_id in range(1, n + 1):
        for counter, value in zip(counts, business_fields(42, customer_id), strict=True):
            counter[value] += 1
    for field, counter in zip(FIELD_TABLE.business, counts, strict=True):
        for value, share in zip(field.values, field.shares, strict=True):
            assert counter[value] / n == pytest.approx(share, abs=0.01), (field.name, value)
