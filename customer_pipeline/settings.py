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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from ._checks import (
    CACHE_EXAMPLES,
    CUSTOMER_FIELDS,
    DB_EXAMPLES,
    check_api_key,
    check_base_url,
    check_cache_url,
    check_dask,
    check_dbs,
    check_dotted,
    check_fields,
    check_formats,
    check_host,
    check_instance,
    check_limiter_url,
    check_metrics_file,
    check_namespace,
    check_no_nul,
    check_param,
    check_port,
    check_pushgateway,
    check_rate_limit,
    check_resource,
    check_shards,
    check_table,
)
from ._convert import (
    KeyProblem,
    bounded,
    one_of,
    to_bool,
    to_db_urls,
    to_float,
    to_int,
    to_optional_url,
    to_path,
    to_pushgateway,
    to_secret,
    to_str,
    to_str_map,
    to_str_tuple,
)
from ._limits import (
    MAX_CACHE_TTL_S,
    MAX_PAGES,
    MAX_RATE_LIMIT,
    MAX_RESPONSE_BYTES,
    MAX_SEED,
    MAX_WAIT_S,
)
from ._secret import DatabaseUrl, PushgatewayUrl, Secret
from .errors import ConfigError

__all__ = [
    "CUSTOMER_FIELDS", "DatabaseUrl", "PushgatewayUrl", "Secret", "Settings", "validate"
]

DEFAULT_BASE_URL = "https://reqres.in"
DEFAULT_API_KEY = "reqres-free-v1"
DEFAULT_SEED = 42

Transport = Literal["aiohttp", "httpx"]
Paginator = Literal["page_number", "offset", "cursor", "link", "next_url"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
DbMode = Literal["upsert", "replace"]
LogFormat = Literal["text", "json"]

Problem = tuple[tuple[str, ...], str]  # where (setting, maybe a key in it) and what is wrong


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


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class Settings:
    """Everything a run can be told, checked when built: a bad value raises ConfigError."""

    base_url: str = _setting(DEFAULT_BASE_URL, "API root (http or https)", check=check_base_url)
    api_key: Secret = _setting(
        Secret(DEFAULT_API_KEY), "sent as the x-api-key header, never logged", check=check_api_key
    )
    concurrency: int = _setting(10, "requests in flight at most", ge=1, le=1000)
    rate_limit: float = _setting(
        10.0,
        "requests per second at most, retries included (0 = unlimited)",
        ge=0,
        le=MAX_RATE_LIMIT,
        check=check_rate_limit,
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
    output_dir: Path = _setting(Path("output"), "folder for the output files", check=check_no_nul)
    transport: Transport = _setting(
        "aiohttp", "HTTP transport under the httpx API: aiohttp (fast) or httpx"
    )
    log_file: Path | None = _setting(
        None, "log file (default: <output_dir>/pipeline.log)", check=check_no_nul
    )
    log_level: LogLevel = _setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    verify_tls: bool = _setting(True, "verify TLS certificates")

    # The source: which listing, how it pages, where the records and counts are in a body.
    resource: str = _setting(
        "/api/users", "path of the listing under base_url", check=check_resource
    )
    paginator: Paginator = _setting("page_number", "page_number, offset, cursor, link or next_url")
    page_param: str = _setting("page", "query parameter of the page number", check=check_param)
    size_param: str = _setting("per_page", "query parameter of the page size", check=check_param)
    first_page: int = _setting(1, "number of the first page (0 or 1)", ge=0, le=1)
    offset_param: str = _setting("offset", "query parameter of the offset", check=check_param)
    cursor_param: str = _setting("cursor", "query parameter of the cursor", check=check_param)
    data_path: str = _setting(
        "data", "dotted path of the records; empty: the body", check=check_dotted
    )
    total_pages_path: str = _setting(
        "total_pages", "dotted path of the page count", check=check_dotted
    )
    total_path: str = _setting("total", "dotted path of the record count", check=check_dotted)
    next_path: str = _setting(
        "", "dotted path of the next cursor (cursor) or next URL (next_url)", check=check_dotted
    )
    field: dict[str, str] = _setting(
        {},
        "where a customer field is in a record: NAME=dotted.path (id, email, first_name, "
        "last_name, avatar); unnamed fields keep their own names",
        check=check_fields,
    )

    # Where the customers go: output files and databases (each one sink, see sinks/).
    format: tuple[str, ...] = _setting(
        ("json",), "output files: json, jsonl, parquet (repeatable)", check=check_formats
    )
    db: tuple[DatabaseUrl, ...] = _setting(
        (),
        f"databases the customers are loaded into (repeatable): {DB_EXAMPLES}",
        check=check_dbs,
    )
    table: str = _setting("customers", "table of the customers in --db", check=check_table)
    db_mode: DbMode = _setting(
        "upsert", "upsert (customers this run did not see are kept) or replace (the whole table)"
    )

    # Caching and shared limits (see http/cache.py and http/shared_limit.py).
    cache: DatabaseUrl | None = _setting(
        None, f"cache listing responses: {CACHE_EXAMPLES}", check=check_cache_url
    )
    cache_ttl: float = _setting(
        3600.0, "seconds a cached response is served without asking", gt=0, le=MAX_CACHE_TTL_S
    )
    refresh: bool = _setting(False, "refetch the cached responses and replace them")
    cache_namespace: str = _setting(
        "", "keeps the cache of keys that see different data apart", check=check_namespace
    )
    limiter_url: DatabaseUrl | None = _setting(
        None,
        "Redis shared by every process that limits the same API origin: redis://host:port/db",
        check=check_limiter_url,
    )

    # Monitoring: Prometheus metrics (see observe/metrics.py) and the log's format.
    metrics_port: int | None = _setting(
        None, "serve Prometheus metrics on /metrics while the run lasts (0: any free port)",
        check=check_port,
    )  # fmt: skip
    metrics_host: str = _setting("127.0.0.1", "address metrics_port listens on", check=check_host)
    pushgateway: PushgatewayUrl | None = _setting(
        None, "Pushgateway URL the final figures are pushed to when a run ends (may carry "
        "user:password@, a secret)", check=check_pushgateway,
    )  # fmt: skip
    metrics_file: Path | None = _setting(
        None, "write the final figures to this node_exporter textfile (*.prom) when a run ends",
        check=check_metrics_file,
    )  # fmt: skip
    metrics_instance: str = _setting(
        "", "instance label of the Pushgateway group (default: the host name)",
        check=check_instance,
    )  # fmt: skip
    log_format: LogFormat = _setting("text", "log lines as text or json (one object per line)")

    # A cluster run (see customer_pipeline/cluster): shards of the walk as Dask tasks.
    dask: str | None = _setting(
        None, "run on Dask: local:N starts N local worker processes, tcp://host:8786 uses a "
        "running scheduler", check=check_dask,
    )  # fmt: skip
    shards: int | None = _setting(
        None, "Dask tasks a random-access walk is split into (default: twice the workers)",
        check=check_shards,
    )  # fmt: skip
    dask_retries: int = _setting(
        2, "times Dask reruns a shard task that raised (a dead worker is Dask's "
        "allowed-failures)", ge=0, le=100,
    )  # fmt: skip

    model_fields: ClassVar[Mapping[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        values, problems = validate({name: getattr(self, name) for name in self.model_fields})
        if problems:
            raise ConfigError("\n".join(describe(problems)))
        for name, value in values.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    def __repr__(self) -> str:
        # Not the dataclass repr: until __post_init__ converts them (in a traceback's locals,
        # say) a key or a URL is a plain string, and a repr must never show it.
        shown = ", ".join(f"{name}={_masked_repr(spec, getattr(self, name, None))}"
                          for name, spec in self.model_fields.items())  # fmt: skip
        return f"Settings({shown})"

    @property
    def secrets(self) -> list[str]:
        """Every string no log, message or file may show: the key and the URLs' passwords."""
        urls = [*self.db, *(u for u in (self.cache, self.limiter_url, self.pushgateway) if u)]
        return [self.api_key.get_secret_value(), *(p for url in urls for p in url.passwords)]

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


def _masked_repr(spec: dataclasses.Field[Any], value: Any) -> str:
    """``repr(value)``, but a secret setting's value masked whatever its type is yet."""
    kind = str(spec.type)
    if isinstance(value, Secret) or ("Secret" not in kind and "Url" not in kind):
        return repr(value)
    if isinstance(value, tuple | list):
        return repr(tuple(DatabaseUrl(str(v)) if isinstance(v, str) else v for v in value))
    if isinstance(value, str) and "Url" in kind:
        return repr(DatabaseUrl(value))
    return "Secret('**********')"


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
            value = bounded(value, spec.metadata)
            if (check := spec.metadata["check"]) is not None:
                value = check(value)
        except KeyProblem as exc:
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
    if (values["dask"] is not None and values["rate_limit"] > 0 and values["limiter_url"] is None
            and values["dask"] != "local:1" and values["shards"] != 1):  # fmt: skip
        # Each worker would allow the whole rate: N workers would send N times as much.
        messages.append(
            "dask with a rate_limit needs limiter_url (--limiter-url redis://host:6379/0), "
            "which every worker shares: without it each worker would send the whole rate; "
            "or set --rate-limit 0"
        )
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


# How each annotation (a string: annotations are postponed) converts a value.
CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": to_int,
    "float": to_float,
    "bool": to_bool,
    "str": to_str,
    "str | None": lambda value: None if value is None else to_str(value),
    "Path": to_path,
    "Path | None": lambda value: None if value is None else to_path(value),
    "Secret": to_secret,
    "dict[str, str]": to_str_map,
    "Transport": one_of(get_args(Transport)),
    "Paginator": one_of(get_args(Paginator)),
    "LogLevel": one_of(get_args(LogLevel), upper=True),
    "tuple[str, ...]": to_str_tuple,
    "tuple[DatabaseUrl, ...]": to_db_urls,
    "DbMode": one_of(get_args(DbMode)),
    "int | None": lambda value: None if value is None else to_int(value),
    "PushgatewayUrl | None": lambda value: None if value is None else to_pushgateway(value),
    "LogFormat": one_of(get_args(LogFormat)),
    "DatabaseUrl | None": to_optional_url,
}
