"""Strings that no repr, str, dump or message may show: the API key, a database URL's password."""

from __future__ import annotations

import base64
import json
import re
from typing import Final
from urllib.parse import quote_from_bytes, quote_plus, unquote, unquote_plus

# A password given as a query parameter (libpq and asyncpg read ?password=...).
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


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
        """The URL with its password (in the userinfo or a ``password=`` query) as ``***``."""
        value = self._value
        if (parts := self._userinfo()) is not None:
            user, _, rest = parts
            value = f"{value.partition('://')[0]}://{user}:***@{rest}"
        return _QUERY_PASSWORD.sub(r"\1***", value)

    @property
    def scheme(self) -> str:
        """The URL's scheme, lower case, without a driver suffix (``postgresql+asyncpg``)."""
        return self._value.partition("://")[0].split("+")[0].lower()

    @property
    def passwords(self) -> list[str]:
        """The password as written in the URL and percent-decoded (none when there is none)."""
        found = [match.group(2) for match in _QUERY_PASSWORD.finditer(self._value)]
        if (parts := self._userinfo()) is not None:
            found.append(parts[1])
        return list(dict.fromkeys(f for p in found if p for f in (p, unquote(p), unquote_plus(p))))

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.masked!r})"

    def __str__(self) -> str:
        return self.masked


class PushgatewayUrl(DatabaseUrl):
    """A Pushgateway URL: its password masked as a database URL's is."""

    __slots__ = ()

    @property
    def passwords(self) -> list[str]:
        """The password's spellings, and the basic-auth token a push sends (user:password)."""
        found = super().passwords
        if (parts := self._userinfo()) is not None and parts[1]:
            pair = f"{unquote(parts[0])}:{unquote(parts[1])}".encode()
            found.append(base64.b64encode(pair).decode())
        return found

    def __repr__(self) -> str:
        return f"PushgatewayUrl({self.masked!r})"


# The shortest secret the cache looks for in an answer it would keep (logs mask any length).
MIN_SECRET_CHARS: Final = 8


def spellings(secret: str) -> set[str]:
    """How ``secret`` can appear in a message: as is, escaped by repr or JSON, percent-encoded."""
    raw = secret.encode("utf-8", "surrogatepass")
    escaped = {
        secret,
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
        repr(raw)[2:-1],  # how h11 and aiohttp quote a header they refuse
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    encoded = {quote_from_bytes(raw, safe=""), quote_from_bytes(raw), quote_plus(raw, safe="")}
    encoded |= {re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), e) for e in encoded}
    # An escaped message quoted once more (a repr of a list of errors) doubles backslashes.
    return escaped | encoded | {repr(form)[1:-1] for form in escaped}
