"""Run settings: built once at the edge (CLI or caller) and passed down.

Precedence: explicit arguments (CLI flags) > ``CUSTOMER_PIPELINE_*`` environment variables >
a ``.env`` file > the defaults below.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

ENV_PREFIX = "CUSTOMER_PIPELINE_"
DEFAULT_BASE_URL = "https://reqres.in"
DEFAULT_API_KEY = "reqres-free-v1"
DEFAULT_SEED = 42
MIN_RATE_LIMIT = 0.001
MAX_RATE_LIMIT = 1_000_000
MAX_WAIT_S = 3600  # longest timeout or backoff: an hour is already a stall
MAX_PAGES = 10_000_000
MAX_RESPONSE_BYTES = 2**31
MAX_SEED = 2**63 - 1  # a signed 64-bit integer, so every JSON reader keeps it exact
# Flags whose name is not the setting's.
FLAGS = {"verify_tls": "--insecure"}

Transport = Literal["aiohttp", "httpx"]
Paginator = Literal["page_number", "offset", "cursor", "link", "next_url"]
CUSTOMER_FIELDS = ("id", "email", "first_name", "last_name", "avatar")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _seconds(default: float, description: str) -> Any:
    """A duration setting: positive, finite and at most MAX_WAIT_S."""
    return Field(default, gt=0, le=MAX_WAIT_S, allow_inf_nan=False, description=description)


class Settings(BaseSettings):
    """Everything a run can be told; every field is also ``CUSTOMER_PIPELINE_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        validate_default=True,
        env_ignore_empty=True,
    )

    base_url: str = Field(DEFAULT_BASE_URL, description="API root (http or https)")
    api_key: SecretStr = Field(
        SecretStr(DEFAULT_API_KEY), description="sent as the x-api-key header, never logged"
    )
    concurrency: int = Field(10, ge=1, le=1000, description="requests in flight at most")
    rate_limit: float = Field(
        10.0,
        ge=0,
        le=MAX_RATE_LIMIT,
        allow_inf_nan=False,
        description="requests per second at most, retries included (0 = unlimited)",
    )
    max_retries: int = Field(5, ge=0, le=100, description="retries per page before it fails")
    backoff_base: float = _seconds(1.0, "first backoff wait, seconds (doubles)")
    backoff_max: float = _seconds(30.0, "longest backoff or Retry-After wait, seconds")
    timeout: float = _seconds(10.0, "seconds one attempt may take, connect to last byte")
    per_page: int = Field(6, ge=1, le=10_000, description="records requested per page")
    max_pages: int = Field(
        100_000, ge=1, le=MAX_PAGES, description="never page past this (guards a bogus total)"
    )
    max_response_bytes: int = Field(
        10_000_000, ge=1024, le=MAX_RESPONSE_BYTES, description="larger response bodies are refused"
    )
    seed: int = Field(
        DEFAULT_SEED, ge=0, le=MAX_SEED, description="seed of the deterministic business fields"
    )
    output_dir: Path = Field(Path("output"), description="folder for the output files")
    transport: Transport = Field(
        "aiohttp", description="HTTP transport under the httpx API: aiohttp (fast) or httpx"
    )
    log_file: Path | None = Field(None, description="log file (default: <output_dir>/pipeline.log)")
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    verify_tls: bool = Field(True, description="verify TLS certificates")

    # The source: which listing, how it pages, where the records and counts are in a body.
    resource: str = Field("/api/users", description="path of the listing under base_url")
    paginator: Paginator = Field(
        "page_number", description="page_number, offset, cursor, link or next_url"
    )
    page_param: str = Field("page", description="query parameter of the page number")
    size_param: str = Field("per_page", description="query parameter of the page size")
    first_page: int = Field(1, ge=0, le=1, description="number of the first page (0 or 1)")
    offset_param: str = Field("offset", description="query parameter of the offset (offset)")
    cursor_param: str = Field("cursor", description="query parameter of the cursor (cursor)")
    data_path: str = Field("data", description="dotted path of the records; empty: the body")
    total_pages_path: str = Field("total_pages", description="dotted path of the page count")
    total_path: str = Field("total", description="dotted path of the record count")
    next_path: str = Field(
        "", description="dotted path of the next cursor (cursor) or next URL (next_url)"
    )
    field: dict[str, str] = Field(
        default_factory=dict,
        description="where a customer field is in a record: NAME=dotted.path (id, email, "
        "first_name, last_name, avatar); unnamed fields keep their own names",
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip()
        if any(c.isspace() or unicodedata.category(c) == "Cc" for c in value):
            raise ValueError("contains a space or a control character")
        if "?" in value or "#" in value:
            # The client appends the listing's own query; a second "?" would corrupt it.
            raise ValueError("must not carry a query (?...) or a fragment (#...)")
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            raise ValueError("has a malformed host or port (a number from 1 to 65535)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use api_key")
        if port == 0:
            raise ValueError("has port 0; give a port from 1 to 65535 or none")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr) -> SecretStr:
        # The messages describe the key, never show it.
        key = value.get_secret_value()
        if "\r" in key or "\n" in key:
            raise ValueError(
                "contains a line break: a trailing CR/LF? a file with Windows line endings? "
                "(strip it, e.g. tr -d '\\r\\n')"
            )
        if not key.isascii():
            raise ValueError("contains a non-ASCII character, which no HTTP header can carry")
        if not key.isprintable():
            raise ValueError("contains a control character (a tab?), which no HTTP header carries")
        if key != key.strip():
            raise ValueError("starts or ends with a space, which HTTP drops; remove it")
        return value

    @field_validator("resource")
    @classmethod
    def _check_resource(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith("/") or any(c in value for c in "?#") or not value.isprintable():
            raise ValueError("must be a path starting with / with no query or fragment")
        return value

    @field_validator("page_param", "size_param", "offset_param", "cursor_param")
    @classmethod
    def _check_param(cls, value: str) -> str:
        if not value or any(c in value for c in "&=#?") or not value.isprintable():
            raise ValueError("must be a query parameter name (no &, =, ?, # or spaces)")
        return value

    @field_validator("data_path", "total_pages_path", "total_path", "next_path")
    @classmethod
    def _check_path_expr(cls, value: str) -> str:
        value = value.strip()
        if value and any(part == "" for part in value.split(".")):
            raise ValueError("must be a dotted path such as meta.next (no empty part)")
        return value

    @field_validator("field")
    @classmethod
    def _check_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if name not in CUSTOMER_FIELDS:
                raise ValueError(f"names {name!r}; the fields are {', '.join(CUSTOMER_FIELDS)}")
            if not path or any(part == "" for part in path.split(".")):
                raise ValueError(f"gives {name} an empty or malformed dotted path")
        return value

    @field_validator("output_dir", "log_file")
    @classmethod
    def _check_path(cls, value: Path | None) -> Path | None:
        if value is not None and "\x00" in str(value):
            raise ValueError("contains a NUL character")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: float) -> float:
        if 0 < value < MIN_RATE_LIMIT:
            # Slower than one request in 1000 s would look like a hang.
            raise ValueError(f"must be 0 (unlimited) or at least {MIN_RATE_LIMIT}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_backoff(self) -> Settings:
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max must be at least backoff_base")
        if self.paginator in ("cursor", "next_url") and not self.next_path:
            raise ValueError(f"paginator {self.paginator} needs next_path (--next-path)")
        return self

    @property
    def log_path(self) -> Path:
        """Where the log file goes."""
        return self.log_file if self.log_file is not None else self.output_dir / "pipeline.log"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from overrides (None values ignored), the environment and ``.env``.

    Raises ConfigError naming each bad setting; the message never repeats the input value,
    so a mistyped key cannot leak through it.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"cannot read .env: byte 0x{exc.object[exc.start]:02x} on line {line} (not UTF-8); "
            "save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read .env: {exc.strerror or exc}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad setting, naming the flag and the environment variable."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        message = error["msg"].removeprefix("Value error, ")
        if name == "settings":
            lines.append(f"invalid settings: {message}")
            continue
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        lines.append(f"invalid {name} ({flag} / {ENV_PREFIX}{name.upper()}): {message}")
    return "\n".join(lines)
