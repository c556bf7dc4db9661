"""Strings that no repr, str, dump or message may show: the API key, a database URL's password."""

from __future__ import annotations

from urllib.parse import unquote


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


class PushgatewayUrl(DatabaseUrl):
    """A Pushgateway URL: its password masked as a database URL's is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"PushgatewayUrl({self.masked!r})"
