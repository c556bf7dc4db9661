"""The field table: it alone drives the rules, the summary code, the report and the model."""

from __future__ import annotations

import random
import re
from collections import Counter
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customer_pipeline import dedup
from customer_pipeline.dedup import CODE_BITS, CODE_LAYOUT, CodeLayout
from customer_pipeline.fields import (
    FIELD_TABLE,
    BusinessField,
    DerivedField,
    FieldTable,
    RuleField,
    full_name,
)
from customer_pipeline.models import Customer, ExportDocument, QualitySummary
from customer_pipeline.report import business_summary, quality_summary
from customer_pipeline.rules import RULES, RecordRules, Rejected, parse_id


def phone_digits(value: str) -> str:
    """The digits of a phone number (7 to 15, spaces and a leading + allowed); "" if invalid."""
    digits = value.removeprefix("+").replace(" ", "")
    return digits if digits.isascii() and digits.isdigit() and 7 <= len(digits) <= 15 else ""


def table_with(**changes: Any) -> FieldTable:
    """The default table with some of its parts replaced."""
    parts: dict[str, Any] = {
        "rules": FIELD_TABLE.rules,
        "derived": FIELD_TABLE.derived,
        "business": FIELD_TABLE.business,
        "columns": FIELD_TABLE.columns,
        "bands": FIELD_TABLE.bands,
    }
    return FieldTable(**(parts | changes))


WITH_PHONE = table_with(
    rules=(*FIELD_TABLE.rules, RuleField("phone", check=phone_digits, keep_as="phone_digits")),
    columns=(*FIELD_TABLE.columns, "phone", "phone_digits"),
)
REGION = BusinessField(
    "region", ("north", "south", "east", "west", "central"), (0.30, 0.25, 0.20, 0.15, 0.10)
)
WITH_REGION = table_with(business=(*FIELD_TABLE.business, REGION))

GOOD = {
    "email": "ann.lee@example.com",
    "first_name": "Ann",
    "last_name": "Lee",
    "avatar": "https://x.io/a.png",
    "phone": "+44 20 7946 0958",
}
BAD = {"email": "ann@", "first_name": 5, "last_name": [], "avatar": "ftp://x", "phone": "call me"}


def dirty_records(n: int, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Records whose fields are each valid, missing, blank or invalid, at random (seeded)."""
    rng = random.Random(9)
    records = []
    for customer_id in range(1, n + 1):
        record: dict[str, Any] = {"id": customer_id}
        for name in fields:
            state = rng.choice(["good", "good", "missing", "blank", "bad"])
            if state != "missing":
                record[name] = {"good": GOOD, "bad": BAD}.get(state, {}).get(name, "  ")
        records.append(record)
    return records


def report_from_customers(table: FieldTable, customers: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's figures counted straight from the customers, with the bands spelled out."""
    scores = [c["data_quality_score"] for c in customers]
    bands = {"high_quality": 0, "medium_quality": 0, "low_quality": 0}
    for score in scores:
        band = "high" if score >= 90 else "medium" if score >= 70 else "low"
        bands[f"{band}_quality"] += 1
    issues = Counter(issue for c in customers for issue in c["quality_issues"])
    return {
        "quality": {
            "mean_score": round(sum(scores) / len(scores), 2),
            "min_score": min(scores),
            "max_score": max(scores),
            "bands": bands,
            "issues_per_field": {
                name: {kind: issues[f"{name}:{kind}"] for kind in ("missing", "invalid")}
                for name in table.rule_names
            },
        },
        "business": {
            field.name: {
                value: {
                    "count": (count := sum(c[field.name] == value for c in customers)),
                    "share": round(count / len(customers), 4),
                }
                for value in field.values
            }
            for field in table.business
        },
    }


def check_table_end_to_end(
    table: FieldTable, records: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Process, pack and report over ``table``; assert it all agrees; customers and figures."""
    rules = RecordRules(table)
    layout = CodeLayout(table)
    customers = [rules.process(raw, seed=42) for raw in records]
    codes: Counter[int] = Counter()
    for customer in customers:
        assert list(customer) == list(table.column_names)
        code = layout.pack(customer)
        values = tuple(customer[name] for name in table.business_names)
        assert layout.unpack(code) == (customer["quality_issues"], values)
        codes[code] += 1
    expected = report_from_customers(table, customers)
    quality = quality_summary(codes, layout)
    assert quality == expected["quality"]
    assert business_summary(codes, layout) == expected["business"]
    return customers, quality


def test_a_fifth_rule_field_is_scored_packed_and_reported() -> None:
    _, report = check_table_end_to_end(WITH_PHONE, dirty_records(2000, tuple(GOOD)))
    assert report["issues_per_field"]["phone"]["missing"] > 300
    assert report["issues_per_field"]["phone"]["invalid"] > 300
    worst = RecordRules(WITH_PHONE).process({"id": 1, **BAD}, seed=1)
    assert worst["quality_issues"][-1] == "phone:invalid" and worst["phone_digits"] is None
    assert worst["data_quality_score"] == WITH_PHONE.min_score == 50
    assert report["min_score"] == 50 and report["bands"]["low_quality"] > 0
    good = RecordRules(WITH_PHONE).process({"id": 2, **GOOD, "phone": " 555 0100 99 "}, seed=1)
    assert good["phone"] == "555 0100 99" and good["phone_digits"] == "555010099"
    assert good["data_quality_score"] == 100


def test_a_business_field_with_five_values_is_drawn_packed_and_reported() -> None:
    assert CodeLayout(WITH_REGION).bits == CODE_BITS  # 8 + 9 + 3: fits exactly
    customers, _ = check_table_end_to_end(WITH_REGION, dirty_records(20_000, tuple(GOOD)[:4]))
    counts = Counter(c["region"] for c in customers)
    for value, share in zip(REGION.values, REGION.shares, strict=True):
        assert counts[value] / len(customers) == pytest.approx(share, abs=0.01), value
    # Independent of the other fields: the shares hold among the highly engaged too.
    engaged = [c["region"] for c in customers if c["engagement_level"] == "high"]
    for value, share in zip(REGION.values, REGION.shares, strict=True):
        assert engaged.count(value) / len(engaged) == pytest.approx(share, abs=0.02), value
    # A new field draws from a further mix: the five fields before it keep their values.
    before = RULES.business_fields
    after = RecordRules(WITH_REGION).business_fields
    assert all(after(42, i)[:5] == before(42, i) for i in range(1, 2000))


def test_the_report_stays_right_for_the_default_table() -> None:
    check_table_end_to_end(FIELD_TABLE, dirty_records(2000, tuple(GOOD)[:4]))


def test_a_table_too_wide_for_the_spool_key_is_refused() -> None:
    extra = tuple(RuleField(f"extra_{i}") for i in range(4))
    wide = table_with(
        rules=(*FIELD_TABLE.rules, *extra),
        columns=(*FIELD_TABLE.columns, *(f.name for f in extra)),
    )
    message = r"needs 25 bits .* the spool key holds 20: raise CODE_DIGITS in .*dedup\.py"
    with pytest.raises(ValueError, match=message):
        CodeLayout(wide)
    assert CodeLayout(FIELD_TABLE, width=17).bits == 17
    with pytest.raises(ValueError, match="needs 17 bits"):
        CodeLayout(FIELD_TABLE, width=16)


def test_the_spool_key_holds_the_widest_code_of_its_layout() -> None:
    assert CODE_LAYOUT.table is FIELD_TABLE and CODE_LAYOUT.bits <= CODE_BITS
    widest = (1 << CODE_BITS) - 1
    entry = dedup._KEY % (2**63 - 1, 40, 10**10 - 1, 10**7 - 1, widest)
    assert len(entry) == dedup._KEY_LEN
    assert int(entry[dedup._CODE_AT], 16) == widest


def interpret(table: FieldTable, raw: Any) -> dict[str, Any]:
    """What the table says a raw record becomes, read the slow, plain way."""
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    values: dict[str, Any] = {"customer_id": parse_id(raw.get("id"))}
    issues = []
    for field in table.rules:
        value = raw.get(field.name)
        if isinstance(value, str) and value.strip():
            value = value.strip()
            result = field.check(value) if field.check else True
            if not result:
                issues.append(f"{field.name}:invalid")
        else:
            blank = value is None or isinstance(value, str)
            issues.append(f"{field.name}:{'missing' if blank else 'invalid'}")
            value = result = None
        values[field.name] = value
        if field.keep_as:
            values[field.keep_as] = result or None
    for derived in table.derived:
        values[derived.name] = derived.derive(*(values[name] for name in derived.inputs))
    score = table.top_score - table.penalty * len(issues)
    extra = {"data_quality_score": score, "quality_issues": issues}
    return {name: (values | extra).get(name) for name in table.column_names}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=6,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(-2, 10**6) | st.sampled_from(["7", " 8 ", "x", ""]) | json_values,
        "email": st.emails() | st.sampled_from(["a@b", " A@B.IO ", "  "]) | json_values,
        "first_name": st.text(max_size=5) | json_values,
        "last_name": st.text(max_size=5) | json_values,
        "avatar": st.sampled_from(["https://x.io/a", "ftp://x", " http://h "]) | json_values,
        "phone": st.sampled_from(["+1 555 010 0999", "12", "   "]) | st.text() | json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(records, json_values), st.sampled_from([RULES, RecordRules(WITH_PHONE)]))
def test_the_validator_does_what_the_table_says(raw: Any, rules: RecordRules) -> None:
    try:
        expected = interpret(rules.table, raw)
    except Rejected as exc:
        with pytest.raises(Rejected, match=re.escape(exc.reason)):
            rules.validate_and_score(raw)
        return
    got = rules.validate_and_score(raw)
    assert got == expected and list(got) == list(expected)


def test_odd_field_names_work_as_any_other() -> None:
    odd = 'it\'s "odd"\n\\'
    table = table_with(
        rules=(*FIELD_TABLE.rules, RuleField(odd, check=str.isdigit)),
        business=(*FIELD_TABLE.business[:4], BusinessField(odd + "!", ("a'", 'b"'), (0.5, 0.5))),
        columns=(*FIELD_TABLE.columns, odd),
    )
    customer = RecordRules(table).process({"id": 3, odd: " x "}, seed=1)
    assert customer[odd] == "x" and customer["quality_issues"][-1] == f"{odd}:invalid"
    assert customer[odd + "!"] == "a'"  # seed 1 draws the first value, seed 0 the second
    assert RecordRules(table).process({"id": 3}, seed=0)[odd + "!"] == 'b"'
    layout = CodeLayout(table)
    assert layout.unpack(layout.pack(customer))[0] == customer["quality_issues"]


def test_the_export_model_follows_the_table() -> None:
    assert tuple(Customer.model_fields) == FIELD_TABLE.column_names
    for field in FIELD_TABLE.business:
        enum = Customer.model_fields[field.name].annotation
        assert isinstance(enum, type) and issubclass(enum, StrEnum)
        assert tuple(enum) == field.values, field.name
    score = ExportDocument.model_json_schema()["$defs"]["Customer"]["properties"]
    assert score["data_quality_score"]["minimum"] == FIELD_TABLE.min_score
    assert score["data_quality_score"]["maximum"] == FIELD_TABLE.top_score


def test_the_band_counts_follow_the_table_bands() -> None:
    bands = FIELD_TABLE.bands
    assert tuple(QualitySummary.model_fields) == tuple(band.key for band in bands)
    ranges = [f">= {bands[0].min_score}"]
    ranges += [f"{b.min_score}-{bands[i].min_score - 1}" for i, b in enumerate(bands[1:-1])]
    ranges.append(f"< {bands[-2].min_score}")
    descriptions = [f.description for f in QualitySummary.model_fields.values()]
    assert descriptions == [f"data_quality_score {r}" for r in ranges]
    assert [FIELD_TABLE.band(s).name for s in (100, 90, 89, 70, 69, 60)] == [
        "high", "high", "medium", "medium", "low", "low",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rules": (*FIELD_TABLE.rules, RuleField("email"))}, "'email' appears twice"),
        ({"business": (BusinessField("avatar", ("a",), (1.0,)),)}, "'avatar' appears twice"),
        ({"business": (BusinessField("x", ("a", "b"), (0.5, 0.4)),)}, "must be > 0, sum 1"),
        ({"business": (BusinessField("x", ("a", "a"), (0.5, 0.5)),)}, "'a' appears twice"),
        ({"business": (BusinessField("x", ("a", "b"), (1.0,)),)}, "one share per value"),
        ({"columns": FIELD_TABLE.columns[:-1]}, "must list customer_id and every"),
        (
            {"derived": (DerivedField("full_name", full_name, ("first_name", "phone")),)},
            "each must be customer_id, a rule or kept field",
        ),
        ({"bands": tuple(reversed(FIELD_TABLE.bands))}, "from the highest min_score down"),
        ({"bands": FIELD_TABLE.bands[:2]}, "lowest band starts at 70, above the lowest score 60"),
        ({"penalty": 0}, "penalty per issue must be > 0"),
        (
            {
                "rules": (*FIELD_TABLE.rules, RuleField("a:b")),
                "columns": (*FIELD_TABLE.columns, "a:b"),
            },
            "has a ':' in its name",
        ),
    ],
)
def test_an_inconsistent_table_is_refused_with_the_reason(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        table_with(**changes)
