"""The caching and shared-limit settings: URLs checked, their passwords kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from customer_pipeline import ConfigError, Settings
from customer_pipeline.cli import main
from customer_pipeline.config import load_settings

PASSWORD = "r3dis-Pa55-DO-NOT-LEAK"


def test_the_defaults_cache_nothing_and_share_no_limit() -> None:
    settings = Settings()
    assert settings.cache is None and settings.limiter_url is None
    assert settings.cache_ttl == 3600 and settings.refresh is False
    assert settings.cache_namespace == ""


def test_redis_passwords_are_secrets_masked_in_every_dump() -> None:
    settings = Settings(
        cache=f"redis://:{PASSWORD}@127.0.0.1:6379/0",
        limiter_url=f"redis://user:{PASSWORD}x@127.0.0.1:6379/1",
    )
    assert PASSWORD in settings.secrets and f"{PASSWORD}x" in settings.secrets
    dumped = str(settings.model_dump(mode="json")) + repr(settings.cache) + str(settings)
    assert PASSWORD not in dumped
    assert settings.model_dump(mode="json")["cache"] == "redis://:***@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("cache", "http://127.0.0.1/x", "scheme 'http' is not known"),
        ("cache", "sqlite://", "needs a file"),
        ("cache", "redis:///0", "names no host"),
        ("cache", "redis://h:99999/0", "malformed host or port"),
        ("cache", "redis://h/zero", "must be a number"),
        ("limiter_url", "sqlite:///x.db", "scheme 'sqlite' is not known"),
        ("cache_ttl", 0, "more than 0"),
        ("cache_namespace", "a\nb", "printable"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(name: str, value: object, says: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid {name}: .*{says}"):
        Settings(**{name: value})


def test_the_environment_sets_them_and_an_empty_url_means_none() -> None:
    settings = load_settings(
        env_file=None,
        environ={
            "CUSTOMER_PIPELINE_CACHE": "sqlite:///c.db",
            "CUSTOMER_PIPELINE_CACHE_TTL": "60",
            "CUSTOMER_PIPELINE_REFRESH": "yes",
            "CUSTOMER_PIPELINE_CACHE_NAMESPACE": "tenant-a",
            "CUSTOMER_PIPELINE_LIMITER_URL": "",
        },
    )
    assert settings.cache is not None and settings.cache.get_secret_value() == "sqlite:///c.db"
    assert (settings.cache_ttl, settings.refresh) == (60, True)
    assert settings.cache_namespace == "tenant-a"
    assert settings.limiter_url is None


def test_a_bad_cache_url_on_the_command_line_exits_2_without_its_password(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["run", "--output-dir", str(tmp_path), "--cache", f"redis://:{PASSWORD}@h:99999/0"],
    )
    assert result.exit_code == 2
    assert "error: " in result.output and "invalid cache" in result.output
    assert PASSWORD not in result.output and "Traceback" not in result.output


def test_the_flags_are_in_the_help() -> None:
    text = CliRunner().invoke(main, ["run", "--help"]).output
    for flag in ("--cache ", "--cache-ttl", "--refresh", "--cache-namespace", "--limiter-url"):
        assert flag in text
