"""Run settings: built once at the edge (CLI or caller), validated, and passed down.

``Settings(...)`` takes only what it is given: library code reads no environment and no file.
``config.load_settings``, the command line's path, layers the sources, highest first:
flags > ``CUSTOMER_PIPELINE_*`` variables > ``.env`` > a ``--config`` TOML file > the defaults.
A plain frozen dataclass, not a pydantic model: pydantic costs the command about 0.1 s of
start-up, a tenth of a typical run. It keeps the three pydantic names the code uses
(``model_fields``, ``model_copy``, ``model_dump``) with pydantic's meaning.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args
from urllib.parse import unquote, urlsplit

from ._limits import (
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

Transport = Literal["aiohttp", "httpx"]
Paginator = Literal["page_number", "offset", "cursor", "link", "next_url"]
CUSTOMER_FIELDS = ("id", "email", "first_name", "last_name", "avatar")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
DbMode = Literal["upsert", "replace"]
LogFormat = Literal["text", "json"]

Problem = tuple[tuple[str, ...], str]  # where (setting, maybe a key in it) and what is wrong


class Secret:
    """A string kept out of every repr, str and dump: the API key."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The string itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class DatabaseUrl(Secret):
    """A database URL whose password is a secret: shown as ``scheme://user:***@host/db``."""

    __slots__ = ()

    def _userinfo(self) -> tuple[str, str, str] | None:
        """(user, password, the rest after "@") or None; up to the LAST "@", so never short."""
        _, has_scheme, rest = self._value.partition("://")
        at = rest.rfind("@") if has_scheme else -1
        if at < 0 or ":" not in rest[:at]:
            return None
        user, _, password = rest[:at].partition(":")
        return user, password, rest[at + 1 :]

    @property
    def masked(self) -> str:
        """The URL with its password (if any) replaced by ``***``."""
        if (parts := self._userinfo()) is None:
            return self._value
        user, _, rest = parts
        return f"{self._value.partition('://')[0]}://{user}:***@{rest}"

    @property
    def scheme(self) -> str:
        """The URL's scheme, lower case, without a driver suffix (``postgresql+asyncpg``)."""
        return self._value.partition("://")[0].split("+")[0].lower()

    @property
    def passwords(self) -> list[str]:
        """The password as written in the URL and percent-decoded (none when there is none)."""
        if (parts := self._userinfo()) is None or not parts[1]:
            return []
        return list(dict.fromkeys([parts[1], unquote(parts[1])]))

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.masked!r})"

    def __str__(self) -> str:
        return self.masked


def _setting(
    default: Any,
    description: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A field with its bounds and its check (which returns the value, or raises ValueError)."""
    metadata = {"description": description, "ge": ge, "gt": gt, "le": le, "check": check}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _seconds(default: float, description: str) -> Any:
    """A duration setting: positive, finite and at most MAX_WAIT_S."""
    return _setting(default, description, gt=0, le=MAX_WAIT_S)


def _check_base_url(value: str) -> str:
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


def _check_api_key(value: Secret) -> Secret:
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


def _check_rate_limit(value: float) -> float:
    if 0 < value < MIN_RATE_LIMIT:
        # Slower than one request in 1000 s would look like a hang.
        raise ValueError(f"must be 0 (unlimited) or at least {MIN_RATE_LIMIT}")
    return value


def _check_no_nul(value: Path | None) -> Path | None:
    if value is not None and "\x00" in str(value):
        raise ValueError("contains a NUL character")
    return value


def _check_resource(value: str) -> str:
    value = value.strip()
    if not value.startswith("/") or any(c in value for c in "?#") or not value.isprintable():
        raise ValueError("must be a path starting with / with no query or fragment")
    return value


def _check_param(value: str) -> str:
    # isprintable() lets the plain space through; a server would read "a b" as another name.
    if not value or any(c in value for c in "&=#? ") or not value.isprintable():
        raise ValueError(
            "must be a query parameter name (no &, =, ?, #, spaces or invisible characters)"
        )
    return value


def _check_dotted(value: str) -> str:
    value = value.strip()
    if value and any(part == "" for part in value.split(".")):
        raise ValueError("must be a dotted path such as meta.next (no empty part)")
    return value


def _check_fields(value: dict[str, str]) -> dict[str, str]:
    for name, path in value.items():
        if name not in CUSTOMER_FIELDS:
            raise ValueError(f"names {name!r}; the fields are {', '.join(CUSTOMER_FIELDS)}")
        if not path or any(part == "" for part in path.split(".")):
            raise ValueError(f"gives {name} an empty or malformed dotted path")
    return value


def _check_formats(value: tuple[str, ...]) -> tuple[str, ...]:
    from .sinks import FORMATS  # the registry: a new format is known here with no edit

    if not value:
        raise ValueError(f"names no format; give at least one of {', '.join(FORMATS)}")
    for name in value:
        if name not in FORMATS:
            raise ValueError(f"names {name!r}; the formats are {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(value))  # a format named twice is written once


DB_EXAMPLES = "duckdb:///path.duckdb, sqlite:///path.db or postgresql://user:pass@host:5432/db"


def _check_dbs(value: tuple[DatabaseUrl, ...]) -> tuple[DatabaseUrl, ...]:
    from .sinks import DATABASES

    # The messages never show the URL: it may carry a password.
    for number, url in enumerate(value, 1):
        text = url.get_secret_value()
        where = f"URL {number} of {len(value)}" if len(value) > 1 else "the URL"
        if any(c.isspace() or unicodedata.category(c) == "Cc" for c in text):
            raise ValueError(f"{where} contains a space or a control character")
        scheme, has_scheme, rest = text.partition("://")
        if not has_scheme or not rest:
            raise ValueError(f"{where} is not a database URL such as {DB_EXAMPLES}")
        if url.scheme not in DATABASES:
            known = ", ".join(f"{name}://" for name in DATABASES) or "none installed"
            raise ValueError(f"{where} has the scheme {scheme[:20]!r}; known: {known}")
        try:
            _ = urlsplit(text).port  # raises for a port out of range or a bad IPv6 host
        except ValueError:
            raise ValueError(f"{where} has a malformed host or port") from None
    return tuple(dict.fromkeys(value))


def _check_table(value: str) -> str:
    # An identifier we can put in SQL unquoted on every database we load.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
        raise ValueError(
            "must be a plain SQL name: a letter or _, then letters, digits or _ (63 at most)"
        )
    if value.lower() == "pipeline_runs":
        raise ValueError("must not be pipeline_runs: that table records the runs")
    return value


class PushgatewayUrl(DatabaseUrl):
    """A Pushgateway URL: its password masked as a database URL's is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"PushgatewayUrl({self.masked!r})"


def _check_port(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError("must be a port from 1 to 65535 (0: any free port)")
    return value


def _check_host(value: str) -> str:
    value = value.strip()
    if not value or any(c.isspace() or c in "/?#@" for c in value) or not value.isprintable():
        raise ValueError("must be a host name or an IP address, such as 127.0.0.1 or 0.0.0.0")
    return value


def _check_pushgateway(value: PushgatewayUrl | None) -> PushgatewayUrl | None:
    if value is None:
        return None
    # The messages never show the URL: it may carry a password.
    text = value.get_secret_value()
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in text):
        raise ValueError("contains a space or a control character")
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError:
        raise ValueError("has a malformed host or port (a number from 1 to 65535)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. http://host:9091")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query (?...) or a fragment (#...)")
    return value


def _check_metrics_file(value: Path | None) -> Path | None:
    if value is None:
        return None
    _check_no_nul(value)
    if value.suffix != ".prom":
        raise ValueError("must end in .prom: node_exporter's textfile collector reads only those")
    return value


def _check_instance(value: str) -> str:
    value = value.strip()
    if len(value) > 128 or not value.isprintable():
        raise ValueError("must be printable text of at most 128 characters")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a run can be told, checked when built: a bad value raises ConfigError."""

    base_url: str = _setting(DEFAULT_BASE_URL, "API root (http or https)", check=_check_base_url)
    api_key: Secret = _setting(
        Secret(DEFAULT_API_KEY), "sent as the x-api-key header, never logged", check=_check_api_key
    )
    concurrency: int = _setting(10, "requests in flight at most", ge=1, le=1000)
    rate_limit: float = _setting(
        10.0,
        "requests per second at most, retries included (0 = unlimited)",
        ge=0,
        le=MAX_RATE_LIMIT,
        check=_check_rate_limit,
    )
    max_retries: int = _setting(5, "retries per page before it fails", ge=0, le=100)
    backoff_base: float = _seconds(1.0, "first backoff wait, seconds (doubles)")
    backoff_max: float = _seconds(30.0, "longest backoff or Retry-After wait, seconds")
    timeout: float = _seconds(10.0, "seconds one attempt may take, connect to last byte")
    per_page: int = _setting(6, "records requested per page", ge=1, le=10_000)
    max_pages: int = _setting(
        100_000, "never page past this (guards a bogus total)", ge=1, le=MAX_PAGES
    )
    max_response_bytes: int = _setting(
        10_000_000, "larger response bodies are refused", ge=1024, le=MAX_RESPONSE_BYTES
    )
    seed: int = _setting(
        DEFAULT_SEED, "seed of the deterministic business fields", ge=0, le=MAX_SEED
    )
    output_dir: Path = _setting(Path("output"), "folder for the output files", check=_check_no_nul)
    transport: Transport = _setting(
        "aiohttp", "HTTP transport under the httpx API: aiohttp (fast) or httpx"
    )
    log_file: Path | None = _setting(
        None, "log file (default: <output_dir>/pipeline.log)", check=_check_no_nul
    )
    log_level: LogLevel = _setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    verify_tls: bool = _setting(True, "verify TLS certificates")

    # The source: which listing, how it pages, where the records and counts are in a body.
    resource: str = _setting(
        "/api/users", "path of the listing under base_url", check=_check_resource
    )
    paginator: Paginator = _setting("page_number", "page_number, offset, cursor, link or next_url")
    page_param: str = _setting("page", "query parameter of the page number", check=_check_param)
    size_param: str = _setting("per_page", "query parameter of the page size", check=_check_param)
    first_page: int = _setting(1, "number of the first page (0 or 1)", ge=0, le=1)
    offset_param: str = _setting("offset", "query parameter of the offset", check=_check_param)
    cursor_param: str = _setting("cursor", "query parameter of the cursor", check=_check_param)
    data_path: str = _setting(
        "data", "dotted path of the records; empty: the body", check=_check_dotted
    )
    total_pages_path: str = _setting(
        "total_pages", "dotted path of the page count", check=_check_dotted
    )
    total_path: str = _setting("total", "dotted path of the record count", check=_check_dotted)
    next_path: str = _setting(
        "", "dotted path of the next cursor (cursor) or next URL (next_url)", check=_check_dotted
    )
    field: dict[str, str] = _setting(
        {},
        "where a customer field is in a record: NAME=dotted.path (id, email, first_name, "
        "last_name, avatar); unnamed fields keep their own names",
        check=_check_fields,
    )

    # Where the customers go: output files and databases (each one sink, see sinks/).
    format: tuple[str, ...] = _setting(
        ("json",), "output files: json, jsonl, parquet (repeatable)", check=_check_formats
    )
    db: tuple[DatabaseUrl, ...] = _setting(
        (),
        f"databases the customers are loaded into (repeatable): {DB_EXAMPLES}",
        check=_check_dbs,
    )
    table: str = _setting("customers", "table of the customers in --db", check=_check_table)
    db_mode: DbMode = _setting(
        "upsert", "upsert (customers this run did not see are kept) or replace (the whole table)"
    )

    # Monitoring: Prometheus metrics (see observe/metrics.py) and the log's format.
    metrics_port: int | None = _setting(
        None, "serve Prometheus metrics on /metrics while the run lasts (0: any free port)",
        check=_check_port,
    )  # fmt: skip
    metrics_host: str = _setting("127.0.0.1", "address metrics_port listens on", check=_check_host)
    pushgateway: PushgatewayUrl | None = _setting(
        None, "Pushgateway URL the final figures are pushed to when a run ends (may carry "
        "user:password@, a secret)", check=_check_pushgateway,
    )  # fmt: skip
    metrics_file: Path | None = _setting(
        None, "write the final figures to this node_exporter textfile (*.prom) when a run ends",
        check=_check_metrics_file,
    )  # fmt: skip
    metrics_instance: str = _setting(
        "", "instance label of the Pushgateway group (default: the host name)",
        check=_check_instance,
    )  # fmt: skip
    log_format: LogFormat = _setting("text", "log lines as text or json (one object per line)")

    model_fields: ClassVar[Mapping[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        values, problems = validate({name: getattr(self, name) for name in self.model_fields})
        if problems:
            raise ConfigError("\n".join(describe(problems)))
        for name, value in values.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    @property
    def secrets(self) -> list[str]:
        """Every string no log, message or file may show: the key and the database passwords."""
        pushgateway = self.pushgateway.passwords if self.pushgateway is not None else []
        return [
            self.api_key.get_secret_value(),
            *(p for url in self.db for p in url.passwords),
            *pushgateway,
        ]

    @property
    def log_path(self) -> Path:
        """Where the log file goes."""
        return self.log_file if self.log_file is not None else self.output_dir / "pipeline.log"

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Settings:
        """A copy with ``update`` applied, unchecked (as pydantic's); ``Settings(...)`` checks."""
        copy = _copy.copy(self)  # no __init__: what was unchecked stays so, as in pydantic
        for name, value in (update or {}).items():
            if name not in self.model_fields:
                raise AttributeError(f"Settings has no setting {name!r}")
            object.__setattr__(copy, name, value)
        return copy

    def model_dump(
        self, *, mode: Literal["python", "json"] = "python", exclude: set[str] | None = None
    ) -> dict[str, Any]:
        """The settings as a dict; ``mode="json"`` gives JSON types and a masked key."""
        values = {n: getattr(self, n) for n in self.model_fields if n not in (exclude or ())}
        if mode == "json":
            return {name: _jsonable(value) for name, value in values.items()}
        return {name: dict(v) if isinstance(v, dict) else v for name, v in values.items()}


Settings.model_fields = {f.name: f for f in dataclasses.fields(Settings)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Secret):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return dict(value) if isinstance(value, dict) else value


def describe(problems: list[Problem]) -> list[str]:
    """A line per problem, naming the setting."""
    return [f"invalid {'.'.join(loc) or 'settings'}: {message}" for loc, message in problems]


def validate(given: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Every setting in ``given`` converted to its type and checked: (values, problems).

    Strings convert as they come from flags, variables and files ("8" is 8, "yes" is True);
    no message repeats a value, so a mistyped key cannot leak through one.
    """
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, value in given.items():
        spec = Settings.model_fields[name]
        try:
            value = CONVERT[str(spec.type)](value)
            value = _bounded(value, spec.metadata)
            if (check := spec.metadata["check"]) is not None:
                value = check(value)
        except _KeyProblem as exc:
            problems.append(((name, exc.key), str(exc)))
        except ValueError as exc:
            problems.append(((name,), str(exc)))
        else:
            values[name] = value
    if not problems:
        every = {name: _default(spec) for name, spec in Settings.model_fields.items()} | values
        problems = [((), message) for message in _cross_checks(every)]
    return values, problems


def _default(spec: dataclasses.Field[Any]) -> Any:
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    """What only several settings together can break."""
    messages = []
    if values["backoff_max"] < values["backoff_base"]:
        messages.append("backoff_max must be at least backoff_base")
    if values["paginator"] in ("cursor", "next_url") and not values["next_path"]:
        messages.append(f"paginator {values['paginator']} needs next_path (--next-path)")
    unit_param = _UNIT_PARAM.get(values["paginator"])
    if unit_param is not None and values[unit_param] == values["size_param"]:
        # No value in the message: a mistyped key must not leak through one.
        messages.append(
            f"{unit_param} and size_param name the same query parameter, which paginator "
            f"{values['paginator']} would send twice; give them different names "
            f"(--{unit_param.replace('_', '-')}, --size-param)"
        )
    return messages


# The parameter each paginator sends beside size_param (next_url sends size_param alone).
_UNIT_PARAM = {
    "page_number": "page_param",
    "link": "page_param",
    "offset": "offset_param",
    "cursor": "cursor_param",
}


class _KeyProblem(ValueError):
    """A bad entry of a mapping setting, at ``key``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _bounded(value: Any, metadata: Mapping[str, Any]) -> Any:
    if (ge := metadata["ge"]) is not None and value < ge:
        raise ValueError(f"must be at least {ge}")
    if (gt := metadata["gt"]) is not None and value <= gt:
        raise ValueError(f"must be more than {gt}")
    if (le := metadata["le"]) is not None and value > le:
        raise ValueError(f"must be at most {le}")
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("must be a whole number")


def _to_float(value: Any) -> float:
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        number = float(value)
    except ValueError:
        raise ValueError("must be a number") from None
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


TRUE, FALSE = {"1", "true", "yes", "on", "t", "y"}, {"0", "false", "no", "off", "f", "n"}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str) and str(value).strip().lower() in TRUE | FALSE:
        return str(value).strip().lower() in TRUE
    raise ValueError("must be true or false")


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _to_path(value: Any) -> Path:
    if not isinstance(value, str | Path):
        raise ValueError("must be a path")
    return Path(value)


def _to_secret(value: Any) -> Secret:
    if isinstance(value, str):
        return Secret(value)
    if callable(getattr(value, "get_secret_value", None)):  # pydantic's SecretStr too
        return Secret(_to_str(value.get_secret_value()))
    raise ValueError("must be a string")


def _to_str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError('must be a table of NAME = "dotted.path"')
    for key, path in value.items():
        if not isinstance(path, str):
            raise _KeyProblem(str(key), "must be a string")
    return {str(key): path for key, path in value.items()}


def _to_strings(value: Any) -> list[Any]:
    """A list from a list, or from a string: a JSON array, or items separated by commas."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError("must be a JSON array or a comma-separated list") from None
        else:
            return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(value, Secret) or not isinstance(value, list | tuple):
        value = [value]
    return list(value)


def _to_str_tuple(value: Any) -> tuple[str, ...]:
    items = _to_strings(value)
    if not all(isinstance(item, str) for item in items):
        raise ValueError("must be a list of strings")
    return tuple(items)


def _to_db_urls(value: Any) -> tuple[DatabaseUrl, ...]:
    items = _to_strings(value)
    urls = []
    for item in items:
        if isinstance(item, Secret):
            item = item.get_secret_value()
        if not isinstance(item, str):
            raise ValueError("must be a list of URL strings")
        urls.append(DatabaseUrl(item))
    return tuple(urls)


def _to_pushgateway(value: Any) -> PushgatewayUrl:
    if isinstance(value, Secret):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError("must be a URL string")
    return PushgatewayUrl(value)


def _one_of(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if isinstance(value, str) and (value.upper() if upper else value) in choices:
            return value.upper() if upper else value
        raise ValueError(f"must be one of {', '.join(choices)}")

    return convert


# How each annotation (a string: annotations are postponed) converts a value.
CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "Path": _to_path,
    "Path | None": lambda value: None if value is None else _to_path(value),
    "Secret": _to_secret,
    "dict[str, str]": _to_str_map,
    "Transport": _one_of(get_args(Transport)),
    "Paginator": _one_of(get_args(Paginator)),
    "LogLevel": _one_of(get_args(LogLevel), upper=True),
    "tuple[str, ...]": _to_str_tuple,
    "tuple[DatabaseUrl, ...]": _to_db_urls,
    "DbMode": _one_of(get_args(DbMode)),
    "int | None": lambda value: None if value is None else _to_int(value),
    "PushgatewayUrl | None": lambda value: None if value is None else _to_pushgateway(value),
    "LogFormat": _one_of(get_args(LogFormat)),
}
