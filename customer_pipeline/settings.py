"""Run settings: built once at the edge (CLI or caller) and passed down.

``Settings(...)`` takes only what it is given: library code reads no environment and no file.
``load_settings(...)``, the command line's path, layers the sources, highest first:
flags > ``CUSTOMER_PIPELINE_*`` environment variables > a ``.env`` file in the working folder >
a ``--config`` TOML file (keys = setting names, a ``[field]`` table for the field map) >
the defaults below.
"""

from __future__ import annotations

import json
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ._limits import (
    ENV_PREFIX,
    MAX_PAGES,
    MAX_RATE_LIMIT,
    MAX_RESPONSE_BYTES,
    MAX_SEED,
    MAX_WAIT_S,
    MIN_RATE_LIMIT,
)
from .errors import ConfigError

DEFAULT_BASE_URL = "https://reqres.in"
DEFAULT_API_KEY = "reqres-free-v1"
DEFAULT_SEED = 42
DOTENV = Path(".env")
# Flags whose name is not the setting's.
FLAGS = {"verify_tls": "--insecure"}
# Settings whose empty value means something ("the body is the list", "no such count");
# an empty variable for any other setting means "not set".
EMPTY_MEANS = {
    "data_path": "",
    "total_pages_path": "",
    "total_path": "",
    "next_path": "",
    "log_file": None,
}

Transport = Literal["aiohttp", "httpx"]
Paginator = Literal["page_number", "offset", "cursor", "link", "next_url"]
CUSTOMER_FIELDS = ("id", "email", "first_name", "last_name", "avatar")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _seconds(default: float, description: str) -> Any:
    """A duration setting: positive, finite and at most MAX_WAIT_S."""
    return Field(default, gt=0, le=MAX_WAIT_S, allow_inf_nan=False, description=description)


class Settings(BaseModel):
    """Everything a run can be told; ``load_settings`` also reads it from the environment."""

    # An unknown name is a typo, refused rather than silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

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
    timeout: float = _seconds(10.0, "connect/read timeout per request, seconds")
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


Origin = Literal["flag", "env", "dotenv", "config"]


def load_settings(
    *,
    config: Path | str | None = None,
    env_file: Path | None = DOTENV,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
    **flags: Any,
) -> Settings:
    """Build settings from flags (None values ignored), the environment, ``.env`` and ``config``.

    Raises ConfigError naming each bad setting and where it came from; no message repeats an
    input value, so a mistyped key cannot leak through it.
    """
    config = Path(config) if config is not None else None
    layers: list[tuple[Origin, dict[str, Any]]] = []
    keys: list[str] = []  # every key given anywhere, masked in any message
    origins: dict[str, Origin] = {}
    try:
        if config is not None:
            layers.append(("config", _read_config(config, keys, warn)))
        if env_file is not None and env_file.exists():
            layers.append(("dotenv", _prefixed(_read_dotenv(env_file), f"in {env_file}")))
        environ = os.environ if environ is None else environ
        layers.append(("env", _prefixed(environ, "in the environment")))
        layers.append(("flag", {k: v for k, v in flags.items() if v is not None}))
        keys += [str(layer["api_key"]) for _, layer in layers if layer.get("api_key")]
        values = _merge(layers, origins)
        return Settings(**values)
    except ValidationError as exc:
        message = describe_validation_error(exc, origins, config, env_file)
    except ConfigError as exc:
        message = str(exc)
    from .logs import redact

    raise ConfigError(redact(message, keys)) from None


def _merge(
    layers: list[tuple[Origin, dict[str, Any]]], origins: dict[str, Origin]
) -> dict[str, Any]:
    """Lowest layer first, each name from the highest layer that gives it; field maps merge.

    ``origins`` receives where each name's value came from.
    """
    values: dict[str, Any] = {}
    for origin, layer in layers:
        for name, value in layer.items():
            if name == "field" and isinstance(value, dict) and isinstance(values.get(name), dict):
                values[name] = {**values[name], **value}
            else:
                values[name] = value
            origins[name] = origin
    return values


def _prefixed(environ: Mapping[str, str | None], where: str) -> dict[str, Any]:
    """The settings among ``CUSTOMER_PIPELINE_*`` variables (names in any case)."""
    values: dict[str, Any] = {}
    for variable, value in environ.items():
        upper = variable.upper()
        name = upper.removeprefix(ENV_PREFIX).lower()
        if not upper.startswith(ENV_PREFIX) or name not in Settings.model_fields:
            continue  # another tool's variable, or the simulator's own key
        if value is None:
            continue  # a bare NAME line in .env sets nothing
        if value == "":
            if name in EMPTY_MEANS:
                values[name] = EMPTY_MEANS[name]
        elif name == "field":
            values[name] = _field_json(value, where)
        else:
            values[name] = value
    return values


def _field_json(text: str, where: str) -> dict[str, Any]:
    """CUSTOMER_PIPELINE_FIELD: a JSON object of NAME: dotted.path."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(
            f"invalid field (--field / {ENV_PREFIX}FIELD {where}): must be a JSON object "
            """such as {"id": "uid", "email": "contact.email"}"""
        )
    return value


def _read_dotenv(path: Path) -> dict[str, str | None]:
    """The variables a ``.env`` file sets."""
    import io

    from dotenv import dotenv_values  # only when there is a .env to read

    return dotenv_values(stream=io.StringIO(_read_text(path)))


def _read_text(path: Path) -> str:
    """A settings file's text, or ConfigError naming the file (and the line, if not UTF-8)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"cannot read {path}: byte 0x{data[exc.start]:02x} on line {line} (not UTF-8); "
            "save the file as UTF-8"
        ) from None


def _read_config(path: Path, keys: list[str], warn: Callable[[str], None] | None) -> dict[str, Any]:
    """The settings a ``--config`` TOML file gives, its keys checked against the settings."""
    import tomllib

    text = _read_text(path)
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages give the line and column, never the value.
        raise ConfigError(f"cannot read {path}: not valid TOML: {exc}") from None
    if isinstance(key := values.get("api_key"), str):
        keys.append(key)
        _warn_if_readable(path, warn)
    problems = []
    for name in values:
        if name not in Settings.model_fields:
            import difflib

            line = _line_of(text, None, name)
            close = difflib.get_close_matches(name, Settings.model_fields, n=1)
            problems.append(
                f"unknown key {name} in {path}{f' (line {line})' if line else ''}: "
                + (f"did you mean {close[0]}? " if close else "")
                + f"(the keys are the names in .env.example without {ENV_PREFIX}, lower-case)"
            )
    if problems:
        raise ConfigError("\n".join(problems))
    return {k: EMPTY_MEANS[k] if v == "" and k in EMPTY_MEANS else v for k, v in values.items()}


def _warn_if_readable(path: Path, warn: Callable[[str], None] | None) -> None:
    """Warn, as ssh does for a key file, when others may read the file that holds the key."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if os.name != "posix" or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return
    message = (
        f"{path} holds api_key and others can read it (mode {stat.S_IMODE(mode):04o}): "
        f"chmod 600 {path}, or set {ENV_PREFIX}API_KEY instead"
    )
    if warn is None:
        import logging

        from .logs import LOGGER_NAME

        warn = logging.getLogger(LOGGER_NAME).warning
    warn(message)


def _line_of(text: str, table: str | None, key: str) -> int | None:
    """The line that sets ``key`` (in ``[table]``, or at the top) in a TOML text, if found."""
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if header := re.match(r"\s*\[\s*([^\]]+?)\s*\]", line):
            current = header.group(1)
            if table is None and current == key:
                return number  # [field] is where the field map is set
            continue
        assigned = re.match(r"""\s*(["']?)([\w.-]+)\1\s*=""", line)
        if assigned is None:
            continue
        name = assigned.group(2)
        if (current == table and name == key) or (current is None and name == f"{table}.{key}"):
            return number
    return _line_of(text, None, table) if table is not None else None


def describe_validation_error(
    exc: ValidationError,
    origins: Mapping[str, Origin] | None = None,
    config: Path | None = None,
    env_file: Path | None = DOTENV,
) -> str:
    """One line per bad setting, naming its flag and variable, or its line in the config file."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error["loc"]]
        message = error["msg"].removeprefix("Value error, ")
        if not loc:
            lines.append(f"invalid settings: {message}")
            continue
        name = ".".join(loc)
        origin = (origins or {}).get(loc[0], "flag")
        if origin == "config" and config is not None:
            line = _line_of(_text_or_empty(config), loc[0] if len(loc) > 1 else None, loc[-1])
            at = f"line {line}, " if line else ""
            lines.append(f"invalid {name} in {config} ({at}key {loc[-1]}): {message}")
            continue
        flag = FLAGS.get(loc[0], "--" + loc[0].replace("_", "-"))
        where = f" in {env_file}" if origin == "dotenv" else ""
        lines.append(f"invalid {name} ({flag} / {ENV_PREFIX}{loc[0].upper()}{where}): {message}")
    return "\n".join(lines)


def _text_or_empty(path: Path) -> str:
    """A file's text, or nothing if it cannot be read again."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
