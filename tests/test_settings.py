"""Settings: defaults, precedence, validation before any request, the key kept secret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from customer_pipeline import ConfigError, Settings, load_settings

from .conftest import SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_follow_the_seed() -> None:
    s = load_settings()
    assert s.base_url == "https://reqres.in"
    assert s.api_key.get_secret_value() == "reqres-free-v1"
    assert s.seed == 42
    assert s.max_retries == 5 and s.backoff_base == 1 and s.backoff_max == 30
    assert s.transport == "aiohttp"
    assert s.log_path == Path("output/pipeline.log")


def test_flags_beat_environment_beat_dotenv_beat_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "CUSTOMER_PIPELINE_CONCURRENCY=3\nCUSTOMER_PIPELINE_SEED=7\nCUSTOMER_PIPELINE_PER_PAGE=9\n"
    )
    monkeypatch.setenv("CUSTOMER_PIPELINE_SEED", "8")
    monkeypatch.setenv("CUSTOMER_PIPELINE_PER_PAGE", "11")
    s = load_settings(per_page=12, concurrency=None)
    assert s.concurrency == 3  # from .env
    assert s.seed == 8  # environment over .env
    assert s.per_page == 12  # flag over environment
    assert s.rate_limit == 10  # default


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"rate_limit": -1}, "rate_limit"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"base_url": "not a url"}, "base_url"),
        ({"per_page": 0}, "per_page"),
        ({"timeout": 0}, "timeout"),
        ({"transport": "curl"}, "transport"),
        ({"backoff_base": 5, "backoff_max": 1}, "backoff_max"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert named in str(info.value)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMER_PIPELINE_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match="CUSTOMER_PIPELINE_CONCURRENCY"):
        load_settings()


def test_the_key_is_masked_in_every_repr_and_error(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(api_key=SECRET_KEY)
    assert SECRET_KEY not in repr(s) and SECRET_KEY not in str(s)
    assert SECRET_KEY not in repr(s.model_dump())
    with pytest.raises(ConfigError) as info:
        load_settings(api_key=SECRET_KEY, concurrency=-5, base_url=f"ftp://{SECRET_KEY}")
    assert SECRET_KEY not in str(info.value)


def test_credentials_in_the_base_url_are_refused() -> None:
    with pytest.raises(ConfigError, match="credentials"):
        load_settings(base_url="https://user:pw@reqres.in")


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*CUSTOMER_PIPELINE_([A-Z_]+)=", text, flags=re.M))
    assert listed == {name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"rate_limit": float("inf")}, "rate_limit"),
        ({"rate_limit": float("nan")}, "rate_limit"),
        ({"rate_limit": 1e-300}, "rate_limit"),
        ({"rate_limit": 2e6}, "rate_limit"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": 3601}, "timeout"),
        ({"backoff_base": float("inf"), "backoff_max": float("inf")}, "backoff_base"),
        ({"backoff_max": 1e9}, "backoff_max"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -1}, "seed"),
        ({"max_pages": 2**64}, "max_pages"),
        ({"max_pages": 10_000_001}, "max_pages"),
        ({"max_response_bytes": 2**64}, "max_response_bytes"),
        ({"base_url": "http://127.0.0.1:port8099"}, "base_url"),
        ({"base_url": "http://127.0.0.1:99999"}, "base_url"),
        ({"base_url": "http://127.0.0.1:0"}, "base_url"),
        ({"base_url": "http://exam\x01ple.com"}, "base_url"),
        ({"base_url": "http://example.com/a b"}, "base_url"),
        ({"base_url": "http://example.com/api?token=1"}, "base_url"),
        ({"base_url": "http://example.com/#top"}, "base_url"),
        ({"base_url": "http://[::1"}, "base_url"),
        ({"output_dir": "out\x00put"}, "output_dir"),
    ],
)
def test_out_of_bounds_values_are_refused_naming_flag_and_variable(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    message = str(info.value)
    assert f"--{named.replace('_', '-')}" in message
    assert f"CUSTOMER_PIPELINE_{named.upper()}" in message
    for value in overrides.values():
        if isinstance(value, str):
            assert value not in message  # never echoed: it could be a pasted key


def test_the_bounds_themselves_are_accepted() -> None:
    low = load_settings(rate_limit=0.001, seed=0, timeout=0.01, backoff_base=0.001)
    high = load_settings(
        rate_limit=1_000_000,
        seed=2**63 - 1,
        max_pages=10_000_000,
        max_response_bytes=2**31,
        timeout=3600,
        backoff_max=3600,
        base_url="http://127.0.0.1:65535/prefix/",
    )
    assert load_settings(rate_limit=0).rate_limit == 0  # unlimited
    assert low.rate_limit == 0.001 and high.seed == 2**63 - 1
    assert high.base_url == "http://127.0.0.1:65535/prefix"


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        (SECRET_KEY + "\r", "Windows line endings"),
        (SECRET_KEY + "\n", "trailing CR/LF"),
        ("sk-\r\nX-Injected: 1", "CR/LF"),
        (SECRET_KEY + "é", "non-ASCII"),
        (SECRET_KEY + "\t", "control character"),
        (" " + SECRET_KEY, "space"),
    ],
)
def test_a_key_no_http_header_can_carry_is_refused_with_a_hint(key: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(api_key=key)
    message = str(info.value)
    assert "--api-key" in message and "CUSTOMER_PIPELINE_API_KEY" in message
    assert hint in message
    assert SECRET_KEY not in message and "X-Injected" not in message


def test_a_dotenv_that_is_not_utf8_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(
        b"CUSTOMER_PIPELINE_SEED=7\nCUSTOMER_PIPELINE_API_KEY=caf\xe9-" + SECRET_KEY.encode()
    )
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("cannot read .env: ")
    assert "line 2" in message and "(not UTF-8)" in message
    assert SECRET_KEY not in message


def test_a_bad_verify_tls_names_the_real_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMER_PIPELINE_VERIFY_TLS", "perhaps")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "CUSTOMER_PIPELINE_VERIFY_TLS" in message and "--insecure" in message
    assert "--verify-tls" not in message
