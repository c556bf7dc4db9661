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


def test_the_key_is_masked_in_every_repr_and_error() -> None:
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


def test_settings_built_in_code_read_no_environment_and_no_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CUSTOMER_PIPELINE_SEED=7\n")
    monkeypatch.setenv("CUSTOMER_PIPELINE_PER_PAGE", "11")
    monkeypatch.setenv("CUSTOMER_PIPELINE_API_KEY", SECRET_KEY)
    s = Settings()
    assert (s.seed, s.per_page) == (42, 6)
    assert s.api_key.get_secret_value() == "reqres-free-v1"
    assert load_settings().seed == 7  # the command line's path still reads them


def test_a_misspelt_setting_in_code_is_refused_not_ignored() -> None:
    with pytest.raises(TypeError, match="concurency"):
        Settings(concurency=3)  # type: ignore[call-arg]


def write_config(tmp_path: Path, text: str, name: str = "source.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_precedence_is_flags_environment_dotenv_config_file_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, "concurrency = 2\nseed = 1\nper_page = 3\nmax_retries = 4\nbackoff_base = 0.5\n"
    )
    (tmp_path / ".env").write_text(
        "CUSTOMER_PIPELINE_SEED=7\nCUSTOMER_PIPELINE_PER_PAGE=9\nCUSTOMER_PIPELINE_MAX_RETRIES=8\n"
    )
    monkeypatch.setenv("CUSTOMER_PIPELINE_PER_PAGE", "11")
    monkeypatch.setenv("CUSTOMER_PIPELINE_MAX_RETRIES", "12")
    s = load_settings(config=config, max_retries=13, concurrency=None)
    assert s.backoff_base == 0.5  # config file over the default
    assert s.concurrency == 2  # config file: no flag (None), no variable
    assert s.seed == 7  # .env over the config file
    assert s.per_page == 11  # environment over .env
    assert s.max_retries == 13  # flag over the environment
    assert s.rate_limit == 10  # default


def test_a_source_is_one_toml_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """# json-server 1.0, nested field names
base_url = "http://127.0.0.1:3000"
resource = "/users"
paginator = "page_number"
page_param = "_page"
size_param = "_per_page"
total_pages_path = "pages"
data_path = "data"
per_page = 10
verify_tls = false
output_dir = "out"

[field]
id = "uid"
email = "contact.email"
""",
    )
    s = load_settings(config=config)
    assert (s.base_url, s.resource, s.page_param, s.size_param) == (
        "http://127.0.0.1:3000", "/users", "_page", "_per_page"
    )  # fmt: skip
    assert s.total_pages_path == "pages" and s.per_page == 10 and s.verify_tls is False
    assert s.output_dir == Path("out")
    assert s.field == {"id": "uid", "email": "contact.email"}


def test_field_maps_merge_per_name_and_the_higher_source_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_config(tmp_path, '[field]\nid = "uid"\nemail = "contact.email"\n')
    monkeypatch.setenv("CUSTOMER_PIPELINE_FIELD", '{"email": "mail", "avatar": "photo.url"}')
    s = load_settings(config=config, field={"avatar": "img"})
    assert s.field == {"id": "uid", "email": "mail", "avatar": "img"}


def test_an_empty_variable_means_empty_where_empty_means_something(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_config(tmp_path, 'data_path = "items"\nlog_file = "x.log"\n')
    monkeypatch.setenv("CUSTOMER_PIPELINE_DATA_PATH", "")  # the body is the list
    monkeypatch.setenv("CUSTOMER_PIPELINE_LOG_FILE", "")  # the default place
    monkeypatch.setenv("CUSTOMER_PIPELINE_CONCURRENCY", "")  # not set
    s = load_settings(config=config)
    assert s.data_path == "" and s.log_file is None and s.concurrency == 10


@pytest.mark.parametrize("value", ["uid", "[1]", '{"id": "uid"'])
def test_a_field_variable_that_is_not_a_json_object_names_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CUSTOMER_PIPELINE_FIELD", value)
    with pytest.raises(ConfigError, match=r"CUSTOMER_PIPELINE_FIELD .*JSON object"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed = 1\nconcurrency = = 3\n", "not valid TOML: .*line 2"),
        (
            "seed = 1\n\nconcurency = 3\n",
            "unknown key concurency in .*source.toml \\(line 3\\): did you mean concurrency\\?",
        ),
        (
            'seed = 1\nconcurrency = "ten"\n',
            "invalid concurrency in .*source.toml \\(line 2, key concurrency\\): ",
        ),
        (
            'seed = 1\n[field]\nid = "uid"\nemail = 3\n',
            "invalid field.email in .*source.toml \\(line 4, key email\\): ",
        ),
        (
            '[field]\nphone = "tel"\n',
            "invalid field.phone in .*source.toml \\(line 2, key phone\\): the fields are ",
        ),
        ("[seed]\nx = 1\n", "invalid seed in .*source.toml \\(line 1, key seed\\): "),
        ("seed = 1\n", None),
    ],
)
def test_a_bad_config_file_names_the_file_the_key_and_the_line(
    tmp_path: Path, text: str, expected: str | None
) -> None:
    config = write_config(tmp_path, text)
    if expected is None:
        assert load_settings(config=config).seed == 1
        return
    with pytest.raises(ConfigError, match=expected):
        load_settings(config=config)


@pytest.mark.parametrize("content", [None, b'seed = 1\nx = "caf\xe9"\n'])
def test_a_missing_or_undecodable_config_file_is_named(
    tmp_path: Path, content: bytes | None
) -> None:
    config = tmp_path / "source.toml"
    if content is not None:
        config.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_settings(config=config)
    message = str(info.value)
    assert message.startswith(f"cannot read {config}: ")
    assert ("No such file" if content is None else "line 2 (not UTF-8)") in message


@pytest.mark.parametrize(
    "text",
    [
        f'api_key = "{SECRET_KEY}"\nconcurrency = 0\n',
        f'api_key = "{SECRET_KEY}"\nbase_url = "ftp://{SECRET_KEY}"\n',
        f'api_key = "{SECRET_KEY}\\r"\n',
        f'api_key = "{SECRET_KEY}"\n{SECRET_KEY} = 1\n',
    ],
)
def test_the_key_in_a_config_file_never_shows_in_a_message(tmp_path: Path, text: str) -> None:
    config = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(config=config)
    assert SECRET_KEY not in str(info.value)


def test_a_config_file_holding_the_key_warns_when_others_can_read_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'api_key = "{SECRET_KEY}"\n')
    warnings: list[str] = []
    assert load_settings(config=config, warn=warnings.append).api_key.get_secret_value()
    assert warnings == []  # 0600: private
    config.chmod(0o644)
    load_settings(config=config, warn=warnings.append)
    assert warnings == [
        f"{config} holds api_key and others can read it (mode 0644): chmod 600 {config}, "
        "or set CUSTOMER_PIPELINE_API_KEY instead"
    ]
    assert SECRET_KEY not in warnings[0]
    write_config(tmp_path, "seed = 1\n", "plain.toml").chmod(0o644)
    load_settings(config=tmp_path / "plain.toml", warn=warnings.append)
    assert len(warnings) == 1  # no key, nothing to protect


def test_a_bad_value_in_code_raises_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(concurrency=0, timeout="soon", api_key=SECRET_KEY + "\n")
    assert str(info.value).splitlines() == [
        "invalid api_key: contains a line break: a trailing CR/LF? a file with Windows line "
        "endings? (strip it, e.g. tr -d '\\r\\n')",
        "invalid concurrency: must be at least 1",
        "invalid timeout: must be a number",
    ]


def test_values_convert_as_they_come_from_text(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"PER_PAGE": " 8 ", "RATE_LIMIT": "2.5", "VERIFY_TLS": "no",
                        "LOG_LEVEL": "debug", "OUTPUT_DIR": "out"}.items():  # fmt: skip
        monkeypatch.setenv(f"CUSTOMER_PIPELINE_{name}", value)
    s = load_settings()
    assert (s.per_page, s.rate_limit, s.verify_tls, s.log_level) == (8, 2.5, False, "DEBUG")
    assert s.output_dir == Path("out")
    assert Settings(max_pages=10.0).max_pages == 10  # a whole float is a whole number
    for bad in (True, 2.5, "2.5", None):
        with pytest.raises(ConfigError, match="invalid max_pages: must be a whole number"):
            Settings(max_pages=bad)


def test_settings_copy_dump_and_pickle_keep_the_key_hidden_and_whole() -> None:
    import pickle

    s = Settings(api_key=SECRET_KEY, field={"id": "uid"})
    dumped = s.model_dump(mode="json")
    assert dumped["api_key"] == "**********" and dumped["output_dir"] == "output"
    assert SECRET_KEY not in repr(dumped) and "api_key" not in s.model_dump(exclude={"api_key"})
    copy = s.model_copy(update={"seed": 7})
    assert (copy.seed, s.seed, copy.api_key.get_secret_value()) == (7, 42, SECRET_KEY)
    unchecked = s.model_copy(update={"max_pages": 0}).model_copy(update={"seed": 8})
    assert (unchecked.max_pages, unchecked.seed) == (0, 8)  # copies never check, as pydantic's
    assert pickle.loads(pickle.dumps(s)) == s  # shards get their settings this way
    with pytest.raises(AttributeError):
        s.seed = 1  # type: ignore[misc]
