"""The response cache: listing answers kept by URL, never by API key, in SQLite or Redis.

The fetcher asks it before a request and hands it a 200 only once ``accept`` has read the
body as a listing, so a truncated body is never kept (a cache layer on the transport would
keep it, and serve it to every retry). An entry lives ``cache_ttl`` seconds; it is served
without a request while fresh: for the whole TTL, unless the server's ``Cache-Control``
says less (``max-age``, ``no-cache``) or forbids keeping it (``no-store``). A stale entry
with an ``ETag`` or ``Last-Modified`` is revalidated (If-None-Match / If-Modified-Since);
a 304 serves it again and renews it.

What is kept: the URL's hash as the key (with ``cache_namespace``), the response headers the
paginators may read, and the inflated body. Never a request header, so never the API key;
an answer that echoes the key or a Redis password is not kept at all.

A store that fails (Redis down, a disk error) turns the cache off for the rest of the run
with one warning: every later page is asked from the API, and no page is lost.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import httpx
import orjson

from .._secret import MIN_SECRET_CHARS, spellings
from ..errors import ConfigError
from ..settings import DatabaseUrl, Settings
from ._redis import redis_client, redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("customer_pipeline.cache")

KEY_PREFIX: Final = "customer-pipeline:cache:v1:"
# Written in PRAGMA application_id of a cache file ("CPc1"), so another program's database
# is told apart before anything in it is changed.
APPLICATION_ID: Final = 0x43506331
SCHEMA: Final = [("key", "TEXT"), ("value", "BLOB"), ("expires", "REAL")]
# Not kept: how this one answer travelled, what it set, and the server's quota at that time
# (a cached answer must not pace a later run).
DROPPED_HEADERS: Final = frozenset({
    "connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length",
    "set-cookie", "date", "age", "retry-after", "ratelimit-remaining", "ratelimit-reset",
    "ratelimit-limit", "ratelimit", "ratelimit-policy", "x-ratelimit-remaining",
    "x-ratelimit-reset", "x-ratelimit-limit",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A kept 200: its headers and body; ``fresh`` ones are served without asking the API."""

    headers: httpx.Headers
    body: bytes
    fresh: bool
    expires: float

    def validators(self) -> dict[str, str]:
        """The conditional-request headers this answer allows (none: ask plainly)."""
        found = {}
        if (etag := self.headers.get("etag")) is not None:
            found["if-none-match"] = etag
        if (modified := self.headers.get("last-modified")) is not None:
            found["if-modified-since"] = modified
        return found


class Store(Protocol):
    """Where entries live: bytes by key, each with a lifetime."""

    errors: tuple[type[Exception], ...]

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class ResponseCache:
    """The cache policy over a store: keys, freshness, what is kept, and the fall back."""

    def __init__(
        self,
        store: Store,
        *,
        where: str,
        ttl_s: float,
        refresh: bool = False,
        namespace: str = "",
        secrets: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.where = where  # the URL as messages show it (password masked)
        self.ttl_s = ttl_s
        self.refresh = refresh
        self._salt = f"{len(namespace)}:{namespace}\n".encode()
        self._secrets = sorted(_echo_forms(secrets), key=len, reverse=True)
        self._warned_echo = False
        self._clock = clock
        self.down = False

    def __repr__(self) -> str:
        return f"ResponseCache({self.where!r}, ttl_s={self.ttl_s:g}, refresh={self.refresh})"

    def key(self, url: str) -> str:
        """The store key of a GET of ``url``: a hash, so nothing of the URL is readable."""
        return KEY_PREFIX + hashlib.sha256(self._salt + url.encode()).hexdigest()

    async def lookup(self, url: str) -> CachedAnswer | None:
        """The kept answer for ``url`` (fresh or stale), or None (also with --refresh)."""
        if self.down or self.refresh:
            return None
        try:
            value = await self.store.get(self.key(url))
        except self.store.errors as exc:
            self._fail("read", exc)
            return None
        if value is None:
            return None
        answer = _unpack(value, self._clock(), self.ttl_s)
        if answer is None:  # expired, or not ours: ask again, and the 200 replaces it
            return None
        return answer

    async def keep(self, url: str, headers: httpx.Headers, body: bytes) -> None:
        """Keep an accepted 200 for ``url``, unless its Cache-Control forbids it."""
        if self.down:
            return
        now = self._clock()
        fresh_s = _fresh_seconds(headers.get("cache-control"), self.ttl_s)
        kept = [(k, v) for k, v in headers.items() if k not in DROPPED_HEADERS]
        if fresh_s is None or (fresh_s <= 0 and not _has_validators(headers)):
            return  # no-store, or it could never be served nor revalidated
        meta = orjson.dumps({"h": kept, "f": now + fresh_s, "e": now + self.ttl_s, "s": now})
        value = meta + b"\n" + body
        if any(secret in value for secret in self._secrets):
            if not self._warned_echo:  # the same server echoes it on every page: say it once
                self._warned_echo = True
                log.warning("%s: not cached: the answer contains the API key or a password "
                            "(in some spelling); no answer that does is cached in this run",
                            url)  # fmt: skip
            return
        await self._put(url, value)

    async def renew(self, url: str, answer: CachedAnswer, headers: httpx.Headers) -> None:
        """Keep ``answer`` again after a 304, with the headers the 304 updated."""
        if _fresh_seconds(headers.get("cache-control"), self.ttl_s) is None:
            await self.forget(url)  # no-store now: the old entry must not outlive the 304
            return
        merged = httpx.Headers(answer.headers)
        for name, value in headers.items():
            if name not in DROPPED_HEADERS:
                merged[name] = value
        await self.keep(url, merged, answer.body)

    async def forget(self, url: str) -> None:
        """Drop what is kept for ``url`` (it no longer reads as a listing)."""
        if self.down:
            return
        try:
            await self.store.delete(self.key(url))
        except self.store.errors as exc:
            self._fail("delete", exc)

    async def close(self) -> None:
        """Close the store; a failure to close is no reason to fail a run."""
        try:
            await self.store.close()
        except self.store.errors as exc:
            log.debug("closing the cache %s failed: %s", self.where, exc)

    async def _put(self, url: str, value: bytes) -> None:
        try:
            await self.store.put(self.key(url), value, self.ttl_s)
        except self.store.errors as exc:
            self._fail("write", exc)

    def _fail(self, what: str, exc: Exception) -> None:
        if self.down:  # requests in flight together all fail; one warning says it
            return
        self.down = True
        reason = str(exc).strip()[:200] or type(exc).__name__
        log.warning("cache %s failed to %s (%s): going on without the cache; every page "
                    "is asked from the API", self.where, what, reason)  # fmt: skip


def _echo_forms(secrets: Sequence[str]) -> set[bytes]:
    """Every spelling of each secret long enough to look for; JSON may escape "/" as "\\/".

    A shorter one ("1") turns up in every page by chance: refusing them all would leave the
    cache useless and the warning untrue.
    """
    forms = {f for s in secrets if len(s) >= MIN_SECRET_CHARS for f in spellings(s)}
    return {f.encode() for f in forms | {f.replace("/", "\\/") for f in forms}}


def _unpack(value: bytes, now: float, ttl_s: float) -> CachedAnswer | None:
    """The answer in ``value``; its age is bounded by this run's ``ttl_s``, not the one it
    was kept with (a rerun with a shorter --cache-ttl must not be served older answers)."""
    meta, newline, body = value.partition(b"\n")
    try:
        fields = orjson.loads(meta) if newline else {}
        stored = float(fields["s"])
        expires = min(float(fields["e"]), stored + ttl_s)
        fresh_until = min(float(fields["f"]), expires)
        headers = httpx.Headers([(str(k), str(v)) for k, v in fields["h"]])
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        return None
    if now >= expires:
        return None
    return CachedAnswer(headers, body, now < fresh_until, expires)


def _fresh_seconds(cache_control: str | None, ttl_s: float) -> float | None:
    """How long an answer is served without asking: the TTL, or less if the server says so.

    None: the server forbids keeping it (``no-store``).
    """
    if not cache_control:
        return ttl_s
    fresh = ttl_s
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-store":
            return None
        if name == "no-cache":
            fresh = 0.0
        elif name == "max-age":
            try:
                fresh = min(fresh, max(0.0, float(value.strip().strip('"'))))
            except ValueError:
                fresh = 0.0  # a max-age we cannot read: RFC 9111 says treat it as stale
    return fresh


def _has_validators(headers: httpx.Headers) -> bool:
    return "etag" in headers or "last-modified" in headers


def open_cache(settings: Settings) -> ResponseCache | None:
    """The cache ``--cache`` names (None without one); a SQLite file that cannot be used
    raises ConfigError before any request."""
    url = settings.cache
    if url is None:
        return None
    store: Store
    if url.scheme == "sqlite":
        store = SqliteStore.open(sqlite_path(url))
    else:
        store = RedisStore(redis_client(url))
    return ResponseCache(store, where=url.masked, ttl_s=settings.cache_ttl,
                         refresh=settings.refresh, namespace=settings.cache_namespace,
                         secrets=settings.secrets)  # fmt: skip


def sqlite_path(url: DatabaseUrl) -> Path:
    """The file of ``sqlite:///relative/path`` or ``sqlite:////absolute/path``."""
    return Path(url.get_secret_value().partition("://")[2][1:])


def _check_ours(path: Path) -> None:
    """Refuse (ConfigError) a SQLite file that is not a cache of ours, read-only."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE "
                                               "type = 'table'")}  # fmt: skip
        columns = [(r[1], r[2]) for r in db.execute("PRAGMA table_info(responses)")]
    finally:
        db.close()
    # A cache made before the marker has only our table, exactly; it is marked on open.
    if app_id == APPLICATION_ID or (app_id == 0 and tables == {"responses"} and columns == SCHEMA):
        return
    raise ConfigError(
        f"{path} is not a customer-pipeline cache (another program's SQLite file?): it was "
        "left as it is; point --cache at a new file, e.g. sqlite:///cache/responses.db"
    )


class SqliteStore:
    """Entries in one SQLite table, in a file only its owner can read (mode 0600).

    Calls are synchronous: a read or a WAL write without fsync takes microseconds, less
    than handing it to a thread would.
    """

    errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError)

    def __init__(self, connection: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self._db = connection
        self._clock = clock

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> SqliteStore:
        """Open (or create, mode 0600) the cache file; ConfigError when it cannot be used."""
        try:
            # Like output/: a folder of its own, which only its owner can read.
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it; its -wal and -shm files take its mode.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                empty = os.fstat(fd).st_size == 0
            finally:
                os.close(fd)
            if not empty:
                _check_ours(path)  # before its mode or a row of it is changed
            os.chmod(path, 0o600)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA busy_timeout = 2000")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")  # a cache may lose its last writes
                db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, "
                           "value BLOB NOT NULL, expires REAL NOT NULL)")  # fmt: skip
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute("DELETE FROM responses WHERE expires <= ?", (clock(),))
            except BaseException:
                db.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"cannot use the cache file {path} ({reason}): point --cache at a new file "
                "in a writable folder, or drop --cache"
            ) from None
        return cls(db, clock)

    async def get(self, key: str) -> bytes | None:
        """The value kept under ``key``, or None."""
        row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row is not None else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO responses (key, value, expires) VALUES (?, ?, ?)",
                         (key, value, self._clock() + ttl_s))  # fmt: skip

    async def delete(self, key: str) -> None:
        self._db.execute("DELETE FROM responses WHERE key = ?", (key,))

    async def close(self) -> None:
        self._db.close()


class RedisStore:
    """Entries as Redis strings that expire by themselves (SET ... PX)."""

    def __init__(self, client: Redis) -> None:
        self._redis = client
        self.errors = redis_errors()

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(key)
        return value.encode() if isinstance(value, str) else value

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.set(key, value, px=max(1, int(ttl_s * 1000)))

    async def delete(self, key: str) -> None:
        await self._redis.delete(key)

    async def close(self) -> None:
        await self._redis.aclose()
