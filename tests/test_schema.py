"""The JSON Schemas of the outputs (``customer-pipeline schema``), checked by an independent
validator (jsonschema, format checking on) against the files of real simulator runs."""

from __future__ import annotations

import asyncio
import copy
import json
import operator
import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from customer_pipeline import models, run_pipeline
from customer_pipeline._version import __version__
from customer_pipeline.cli import main
from customer_pipeline.fields import FIELD_TABLE, ISSUE_KINDS, email_domain, is_valid_avatar
from customer_pipeline.simulator import SimulatorConfig, serve

from .conftest import fast_settings

DIALECT = "https://json-schema.org/draft/2020-12/schema"
MAJOR = __version__.split(".", 1)[0]
FORMATS = Draft202012Validator.FORMAT_CHECKER


def cli_schema(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["schema", *args])
    assert result.exit_code == 0, result.output
    schema: dict[str, Any] = json.loads(result.output)
    return schema


def problems(schema: dict[str, Any], document: Any) -> list[str]:
    """What a strict 2020-12 validator, formats asserted, finds wrong with ``document``."""
    Draft202012Validator.check_schema(schema)
    checker = Draft202012Validator(schema, format_checker=FORMATS)
    return [f"{list(e.absolute_path)}: {e.message}" for e in checker.iter_errors(document)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The export and report of a dirty, flaky, complete run and of an incomplete one."""
    config = SimulatorConfig(
        total=300, per_page=6, failure_rate=0.2, rate_limit=0.0, latency_ms=0.0,
        dirty_rate=0.3, duplicate_rate=0.05, seed=7,
    )  # fmt: skip
    folders = {name: tmp_path_factory.mktemp(name) for name in ("complete", "incomplete")}

    async def run_both() -> None:
        async with serve(config) as (base, _):
            for name, max_pages in (("complete", 100), ("incomplete", 3)):
                settings = fast_settings(
                    base_url=base, output_dir=folders[name], per_page=6, max_retries=12,
                    max_pages=max_pages, seed=7,
                )  # fmt: skip
                result = await run_pipeline(settings)
                assert result.exit_code == (0 if name == "complete" else 3)

    asyncio.run(run_both())
    return {
        name: {
            "export": orjson.loads((folder / "processed_customers.json").read_bytes()),
            "report": orjson.loads((folder / "summary_report.json").read_bytes()),
        }
        for name, folder in folders.items()
    }


@pytest.mark.parametrize(
    ("args", "document"),
    [([], "processed_customers"), (["--export"], "processed_customers"),
     (["--report"], "summary_report")],
)  # fmt: skip
def test_each_schema_names_its_dialect_and_a_versioned_id(args: list[str], document: str) -> None:
    schema = cli_schema(*args)
    assert list(schema)[:2] == ["$schema", "$id"]
    assert schema["$schema"] == DIALECT
    assert schema["$id"] == f"urn:customer-pipeline:schema:{document}:v{MAJOR}"
    Draft202012Validator.check_schema(schema)


def test_schema_help_shows_both_documents_with_examples() -> None:
    result = CliRunner().invoke(main, ["schema", "--help"])
    assert result.exit_code == 0
    assert "--report" in result.output and "--export" in result.output
    assert "customer-pipeline schema --report > report.schema.json" in result.output


@pytest.mark.parametrize("name", ["complete", "incomplete"])
def test_real_outputs_validate_against_both_schemas(
    runs: dict[str, dict[str, Any]], name: str
) -> None:
    export, report = runs[name]["export"], runs[name]["report"]
    assert problems(cli_schema(), export) == []
    assert problems(cli_schema("--report"), report) == []
    assert report["run"]["complete"] is (name == "complete")
    if name == "complete":  # the claims' conditions are exercised, not just skipped over
        issues = {issue for c in export["customers"] for issue in c["quality_issues"]}
        assert {"email:invalid", "avatar:invalid", "email:missing"} <= issues
        assert report["counts"]["rejected"] > 0 and report["counts"]["duplicates_removed"] > 0


def _first(flagged: bool, issue: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The first customer whose quality_issues hold ``issue`` (or not, when not flagged)."""

    def pick(export: dict[str, Any]) -> dict[str, Any]:
        return next(c for c in export["customers"] if (issue in c["quality_issues"]) is flagged)

    return pick


def _bad_email(doc: dict[str, Any]) -> None:
    _first(False, "email:invalid")(doc)["email"] = "george at reqres.in"


def _bad_avatar(doc: dict[str, Any]) -> None:
    _first(False, "avatar:invalid")(doc)["avatar"] = "ftp://faces/1"


def _bad_domain(doc: dict[str, Any]) -> None:
    _first(False, "email:invalid")(doc)["email_domain"] = "reqres in"


def _bad_timestamp(doc: dict[str, Any]) -> None:
    doc["metadata"]["export_timestamp"] = "27/11/2026 21:02"


def _complete_with_failed_pages(doc: dict[str, Any]) -> None:
    doc["metadata"]["failed_pages"] = [2]


def _incomplete_without_reason(doc: dict[str, Any]) -> None:
    doc["metadata"]["complete"] = False


@pytest.mark.parametrize(
    "spoil",
    [_bad_email, _bad_avatar, _bad_domain, _bad_timestamp, _complete_with_failed_pages,
     _incomplete_without_reason],
)  # fmt: skip
def test_the_export_schema_catches_what_the_pipeline_never_writes(
    runs: dict[str, dict[str, Any]], spoil: Callable[[dict[str, Any]], None]
) -> None:
    doc = copy.deepcopy(runs["complete"]["export"])
    spoil(doc)
    assert problems(cli_schema(), doc) != []


def test_a_value_flagged_invalid_is_not_held_to_the_rule(runs: dict[str, dict[str, Any]]) -> None:
    doc = copy.deepcopy(runs["complete"]["export"])
    _first(True, "email:invalid")(doc)["email"] = "anything, it was flagged"
    _first(True, "avatar:invalid")(doc)["avatar"] = "also anything"
    assert problems(cli_schema(), doc) == []


def _drop(*path: str) -> Callable[[dict[str, Any]], None]:
    def spoil(report: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            report = report[key]
        del report[last]

    spoil.__name__ = "drop " + ".".join(path)
    return spoil


def _set(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
    def spoil(report: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            report = report[key]
        report[last] = value

    spoil.__name__ = f"set {'.'.join(path)}"
    return spoil


REPORT_SPOILERS = [
    *(_drop(block) for block in ("run", "counts", "quality", "business_fields", "api", "timings")),
    _drop("run", "incomplete_reasons"),
    _drop("run", "settings"),
    _drop("counts", "rejected"),
    _drop("quality", "bands", "low_quality"),
    _drop("quality", "issues_per_field", "avatar"),
    _drop("quality", "issues_per_field", "email", "invalid"),
    _drop("business_fields", "market_segment"),
    _drop("business_fields", "market_segment", "APAC"),
    _drop("business_fields", "customer_tier", "basic", "share"),
    _drop("api", "retries"),
    _drop("api", "failures_by_status"),
    _drop("timings", "records_per_s"),
    _set({"count": 1, "share": 0.1}, "business_fields", "market_segment", "Mars"),
    _set(1.5, "business_fields", "activity_status", "active", "share"),
    _set(-1, "counts", "rejected"),
    _set("yesterday", "run", "started_at"),
    _set("sk-live-123", "run", "settings", "api_key"),
    _set(False, "run", "complete"),  # incomplete, yet no reason given
    _set(["page 2 failed"], "run", "incomplete_reasons"),  # complete, yet a reason given
]


@pytest.mark.parametrize("spoil", REPORT_SPOILERS, ids=lambda spoil: spoil.__name__)
def test_the_report_schema_catches_a_missing_or_wrong_block(
    runs: dict[str, dict[str, Any]], spoil: Callable[[dict[str, Any]], None]
) -> None:
    report = copy.deepcopy(runs["complete"]["report"])
    spoil(report)
    assert problems(cli_schema("--report"), report) != []


def _formats(schema: Any, path: str = "") -> dict[str, str]:
    """Every ``format`` the schema claims, by where it is."""
    found: dict[str, str] = {}
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "format":
                found[path] = value
            else:
                found.update(_formats(value, f"{path}/{key}"))
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found.update(_formats(value, f"{path}/{i}"))
    return found


def test_only_the_formats_the_pipeline_guarantees_are_claimed() -> None:
    assert _formats(cli_schema()) == {
        "/$defs/ExportMetadata/properties/export_timestamp": "date-time"
    }
    assert _formats(cli_schema("--report")) == {
        "/$defs/RunInfo/properties/started_at": "date-time",
        "/$defs/RunInfo/properties/finished_at": "date-time",
    }
    # Why not email and uri: the rules accept values that strict checkers refuse. RFC 5321
    # allows no two dots in a row in a local part; RFC 3986 allows no "<" in a URL.
    assert email_domain("a..b@example.com") == "example.com"
    assert is_valid_avatar("https://x/a<b>") and not FORMATS.conforms("https://x/a<b>", "uri")


def test_the_whitespace_class_is_pythons_whitespace() -> None:
    every = "".join(map(chr, range(0x110000)))
    spaces = re.compile(f"[{models.WHITESPACE}]")
    assert spaces.findall(every) == [c for c in every if c.isspace()]


EMAILISH = st.text(alphabet="ab.@_( \t\n\x85\x1c\ufeff\u3000\u00e9", max_size=12)
URLISH = st.builds(
    operator.add,
    st.sampled_from(["http://", "https://", "ftp://", "http:/", "HTTP://", ""]),
    st.text(alphabet="a1:/?#@.%< \t\n\x85\ufeff\u00e9", max_size=12),
)


@given(st.one_of(EMAILISH, st.builds("{}@{}".format, EMAILISH, EMAILISH)))
def test_the_email_pattern_is_the_email_rule(value: str) -> None:
    domain = email_domain(value)
    assert (re.fullmatch(models.EMAIL_PATTERN, value) is not None) is (domain is not None)
    if domain is not None:
        assert re.fullmatch(models.EMAIL_DOMAIN_PATTERN, domain)


@given(URLISH)
def test_the_avatar_pattern_is_the_avatar_rule(value: str) -> None:
    assert (re.fullmatch(models.AVATAR_PATTERN, value) is not None) is is_valid_avatar(value)


def test_the_report_models_follow_the_table() -> None:
    assert tuple(models.IssuesPerField.model_fields) == FIELD_TABLE.rule_names
    assert tuple(models.IssueCounts.model_fields) == ISSUE_KINDS
    business = models.BusinessFields.model_fields
    assert tuple(business) == FIELD_TABLE.business_names
    schema = cli_schema("--report")
    for field in FIELD_TABLE.business:
        assert schema["$defs"]["BusinessFields"]["properties"][field.name]["required"] == list(
            field.values
        )


# Characters where Python's and ECMA-262's whitespace differ, and a few that are no whitespace.
ODD = ["\x1c", "\x1f", "\x85", "\ufeff", "\u2028", "\u3000", "\xa0", "\t", "\u00e9", "\U0001f600"]


def test_the_patterns_mean_the_same_in_javascript() -> None:
    """JSON Schema patterns are ECMA-262 regexes: node (as ajv would) must agree with the rules."""
    from .jsonserver import unavailable

    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed: apt-get install nodejs")
    emails = [f"a{c}b@x.com" for c in ODD] + [f"ab@x{c}y.com" for c in ODD] + ["a..b@x.y"]
    avatars = [f"https://x/a{c}b" for c in ODD] + [f"https://u{c}v@host/" for c in ODD]
    avatars += ["http://b@:c", "http://:x@c", "http://a://b@c", "https://x/a<b>"]
    cases = [(models.EMAIL_PATTERN, s, email_domain(s) is not None) for s in emails]
    cases += [(models.AVATAR_PATTERN, s, is_valid_avatar(s)) for s in avatars]
    assert {expected for *_, expected in cases} == {True, False}
    script = (
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(cases.map(([p, s]) => new RegExp(p, 'u').test(s))));"
    )
    proc = subprocess.run(
        [node, "-e", script], input=json.dumps([[p, s] for p, s, _ in cases]),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(proc.stdout) == [expected for *_, expected in cases]
