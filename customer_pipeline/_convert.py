"""How a setting's value converts to its type: as flags, variables and files give it, strings too.

``"8"`` is 8, ``"yes"`` is True, ``"json,parquet"`` is a tuple; no message repeats a value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._secret import DatabaseUrl, PushgatewayUrl, Secret


class KeyProblem(ValueError):
    """A bad entry of a mapping setting, at ``key``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def bounded(value: Any, metadata: Mapping[str, Any]) -> Any:
    if (ge := metadata["ge"]) is not None and value < ge:
        raise ValueError(f"must be at least {ge}")
    if (gt := metadata["gt"]) is not None and value <= gt:
        raise ValueError(f"must be more than {gt}")
    if (le := metadata["le"]) is not None and value > le:
        raise ValueError(f"must be at most {le}")
    return value


def to_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("must be a whole number")


def to_float(value: Any) -> float:
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


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str) and str(value).strip().lower() in TRUE | FALSE:
        return str(value).strip().lower() in TRUE
    raise ValueError("must be true or false")


def to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def to_path(value: Any) -> Path:
    if not isinstance(value, str | Path):
        raise ValueError("must be a path")
    return Path(value)


def to_secret(value: Any) -> Secret:
    if isinstance(value, str):
        return Secret(value)
    if callable(getattr(value, "get_secret_value", None)):  # pydantic's SecretStr too
        return Secret(to_str(value.get_secret_value()))
    raise ValueError("must be a string")


def to_str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError('must be a table of NAME = "dotted.path"')
    for key, path in value.items():
        if not isinstance(path, str):
            raise KeyProblem(str(key), "must be a string")
    return {str(key): path for key, path in value.items()}


def to_strings(value: Any) -> list[Any]:
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


def to_str_tuple(value: Any) -> tuple[str, ...]:
    items = to_strings(value)
    if not all(isinstance(item, str) for item in items):
        raise ValueError("must be a list of strings")
    return tuple(items)


def to_db_urls(value: Any) -> tuple[DatabaseUrl, ...]:
    items = to_strings(value)
    urls = []
    for item in items:
        if isinstance(item, Secret):
            item = item.get_secret_value()
        if not isinstance(item, str):
            raise ValueError("must be a list of URL strings")
        urls.append(DatabaseUrl(item))
    return tuple(urls)


def to_optional_url(value: Any) -> DatabaseUrl | None:
    if value is None or value == "":  # an empty variable (CUSTOMER_PIPELINE_CACHE=) is unset
        return None
    if isinstance(value, Secret):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError("must be a URL string")
    return DatabaseUrl(value)


def one_of(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if isinstance(value, str) and (value.upper() if upper else value) in choices:
            return value.upper() if upper else value
        raise ValueError(f"must be one of {', '.join(choices)}")

    return convert


def to_pushgateway(value: Any) -> PushgatewayUrl:
    if isinstance(value, Secret):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError("must be a URL string")
    return PushgatewayUrl(value)
