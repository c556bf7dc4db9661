"""The checks of single settings: each returns the value (maybe normalised) or raises ValueError.

No message repeats the value: a mistyped key or a URL with a password cannot leak through one.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from ._limits import MIN_RATE_LIMIT
from ._secret import DatabaseUrl, PushgatewayUrl, Secret

CUSTOMER_FIELDS = ("id", "email", "first_name", "last_name", "avatar")


def _printable(text: str) -> None:
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in text):
        raise ValueError("contains a space or a control character")


def _http_url(text: str, example: str = "") -> SplitResult:
    """``text`` split as an http(s) URL with a host, or ValueError saying what is wrong."""
    _printable(text)
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError:
        raise ValueError("has a malformed host or port (a number from 1 to 65535)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host{example}")
    return parts


def check_base_url(value: str) -> str:
    value = value.strip()
    _printable(value)
    if "?" in value or "#" in value:
        # The client appends the listing's own query; a second "?" would corrupt it.
        raise ValueError("must not carry a query (?...) or a fragment (#...)")
    parts = _http_url(value)
    if parts.username or parts.password:
        raise ValueError("must not carry credentials; use api_key")
    if parts.port == 0:
        raise ValueError("has port 0; give a port from 1 to 65535 or none")
    return value.rstrip("/")


def check_api_key(value: Secret) -> Secret:
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


def check_rate_limit(value: float) -> float:
    if 0 < value < MIN_RATE_LIMIT:
        # Slower than one request in 1000 s would look like a hang.
        raise ValueError(f"must be 0 (unlimited) or at least {MIN_RATE_LIMIT}")
    return value


def check_no_nul(value: Path | None) -> Path | None:
    if value is not None and "\x00" in str(value):
        raise ValueError("contains a NUL character")
    return value


def check_resource(value: str) -> str:
    value = value.strip()
    if not value.startswith("/") or any(c in value for c in "?#") or not value.isprintable():
        raise ValueError("must be a path starting with / with no query or fragment")
    return value


def check_param(value: str) -> str:
    # isprintable() lets the plain space through; a server would read "a b" as another name.
    if not value or any(c in value for c in "&=#? ") or not value.isprintable():
        raise ValueError(
            "must be a query parameter name (no &, =, ?, #, spaces or invisible characters)"
        )
    return value


def check_dotted(value: str) -> str:
    value = value.strip()
    if value and any(part == "" for part in value.split(".")):
        raise ValueError("must be a dotted path such as meta.next (no empty part)")
    return value


def check_fields(value: dict[str, str]) -> dict[str, str]:
    for name, path in value.items():
        if name not in CUSTOMER_FIELDS:
            raise ValueError(f"names {name!r}; the fields are {', '.join(CUSTOMER_FIELDS)}")
        if not path or any(part == "" for part in path.split(".")):
            raise ValueError(f"gives {name} an empty or malformed dotted path")
    return value


def check_formats(value: tuple[str, ...]) -> tuple[str, ...]:
    from .sinks import FORMATS  # the registry: a new format is known here with no edit

    if not value:
        raise ValueError(f"names no format; give at least one of {', '.join(FORMATS)}")
    for name in value:
        if name not in FORMATS:
            raise ValueError(f"names {name!r}; the formats are {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(value))  # a format named twice is written once


DB_EXAMPLES = "duckdb:///path.duckdb, sqlite:///path.db or postgresql://user:pass@host:5432/db"


def check_dbs(value: tuple[DatabaseUrl, ...]) -> tuple[DatabaseUrl, ...]:
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


def check_table(value: str) -> str:
    # An identifier we can put in SQL unquoted on every database we load.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
        raise ValueError(
            "must be a plain SQL name: a letter or _, then letters, digits or _ (63 at most)"
        )
    if value.lower() == "pipeline_runs":
        raise ValueError("must not be pipeline_runs: that table records the runs")
    if value.upper() in RESERVED_WORDS:
        raise ValueError("is an SQL reserved word; choose another name (e.g. add a prefix)")
    return value


# Words that PostgreSQL, DuckDB or SQLite reserve: unquoted, they break the statements.
RESERVED_WORDS = frozenset(
    """
    ALL ANALYSE ANALYZE AND ANY ARRAY AS ASC ASYMMETRIC BOTH CASE CAST CHECK COLLATE COLUMN
    CONSTRAINT CREATE CURRENT_CATALOG CURRENT_DATE CURRENT_ROLE CURRENT_TIME CURRENT_TIMESTAMP
    CURRENT_USER DEFAULT DEFERRABLE DELETE DESC DISTINCT DO DROP ELSE END EXCEPT EXISTS FALSE
    FETCH FOR FOREIGN FROM GRANT GROUP HAVING IN INDEX INITIALLY INSERT INTERSECT INTO IS JOIN
    LATERAL LEADING LIMIT LOCALTIME LOCALTIMESTAMP NOT NULL OFFSET ON ONLY OR ORDER PLACING
    PRIMARY REFERENCES RETURNING SELECT SESSION_USER SET SOME SYMMETRIC TABLE THEN TO TRAILING
    TRUE UNION UNIQUE UPDATE USER USING VALUES VARIADIC WHEN WHERE WINDOW WITH
""".split()  # noqa: SIM905 - a list of 90 quoted words reads worse
)


CACHE_EXAMPLES = "sqlite:///path/cache.db or redis://[:password@]host:6379/0"
REDIS_SCHEMES = ("redis", "rediss")


def _service_url(url: DatabaseUrl, schemes: tuple[str, ...], example: str) -> str:
    """The URL's text once it is one of ``schemes`` with a host (or a sqlite path)."""
    # The messages never show the URL: it may carry a password.
    text = url.get_secret_value()
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in text):
        raise ValueError("the URL contains a space or a control character")
    scheme, has_scheme, rest = text.partition("://")
    if not has_scheme or scheme.lower() not in schemes:
        raise ValueError(f"must be a URL such as {example} (scheme {scheme[:20]!r} is not known)")
    if scheme.lower() == "sqlite":
        if not rest.startswith("/") or not rest.strip("/"):
            raise ValueError(f"a sqlite cache needs a file: {example}")
        return text
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises for a port out of range or a bad IPv6 host
    except ValueError:
        raise ValueError("the URL has a malformed host or port") from None
    if not parts.hostname:
        raise ValueError(f"the URL names no host: {example}")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError("the Redis database (the path after the host) must be a number")
    return text


def check_cache_url(value: DatabaseUrl | None) -> DatabaseUrl | None:
    if value is not None:
        _service_url(value, ("sqlite", *REDIS_SCHEMES), CACHE_EXAMPLES)
    return value


def check_limiter_url(value: DatabaseUrl | None) -> DatabaseUrl | None:
    if value is not None:
        _service_url(value, REDIS_SCHEMES, "redis://[:password@]host:6379/0")
    return value


def check_namespace(value: str) -> str:
    if len(value) > 200 or any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise ValueError("must be at most 200 printable characters")
    return value


def check_port(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError("must be a port from 1 to 65535 (0: any free port)")
    return value


def check_host(value: str) -> str:
    value = value.strip()
    if not value or any(c.isspace() or c in "/?#@" for c in value) or not value.isprintable():
        raise ValueError("must be a host name or an IP address, such as 127.0.0.1 or 0.0.0.0")
    return value


def check_pushgateway(value: PushgatewayUrl | None) -> PushgatewayUrl | None:
    if value is None:
        return None
    # The messages never show the URL: it may carry a password.
    parts = _http_url(value.get_secret_value(), ", e.g. http://host:9091")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query (?...) or a fragment (#...)")
    return value


def check_metrics_file(value: Path | None) -> Path | None:
    if value is None:
        return None
    check_no_nul(value)
    if value.suffix != ".prom":
        raise ValueError("must end in .prom: node_exporter's textfile collector reads only those")
    return value


def check_instance(value: str) -> str:
    value = value.strip()
    if len(value) > 128 or not value.isprintable():
        raise ValueError("must be printable text of at most 128 characters")
    return value


DASK_SCHEMES = ("tcp", "tls")
MAX_LOCAL_WORKERS = 256


def check_dask(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.startswith("local:"):
        count = value.removeprefix("local:")
        if not count.isdecimal() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise ValueError(
                f"local:N needs a worker count N from 1 to {MAX_LOCAL_WORKERS}, e.g. local:4"
            )
        return f"local:{int(count)}"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("has a malformed host or port (a number from 1 to 65535)") from None
    if parts.scheme not in DASK_SCHEMES or not parts.hostname or port is None:
        raise ValueError(
            "must be local:N (a local cluster of N worker processes) or a Dask scheduler's "
            "address such as tcp://scheduler:8786"
        )
    if parts.username or parts.password or parts.path.strip("/") or parts.query:
        raise ValueError("must be a scheduler address alone: tcp://host:port")
    return value


MAX_SHARDS = 100_000


def check_shards(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_SHARDS:
        raise ValueError(f"must be a number of tasks from 1 to {MAX_SHARDS}")
    return value
