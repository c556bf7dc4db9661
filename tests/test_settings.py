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
