"""The command line's settings: flags, environment, ``.env`` and a ``--config`` TOML file.

``load_settings`` layers the sources, highest first: flags > ``CUSTOMER_PIPELINE_*``
environment variables > a ``.env`` file in the working folder > the ``--config`` TOML file
(keys = setting names, a ``[field]`` table for the field map) > the defaults. Field maps merge
per name across the layers. Library code never calls it: ``Settings(...)`` takes only what
it is given.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from ._limits import ENV_PREFIX
from .errors import ConfigError
from .settings import CUSTOMER_FIELDS, DatabaseUrl, Problem, Settings, validate

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
    "db": (),
    "metrics_port": None,
    "pushgateway": None,
    "metrics_file": None,
}

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

    Raises ConfigError naming each bad setting and where it came from: its flag and variable,
    or its file, key and line. No message shows an input value or the API key.
    """
    config = Path(config) if config is not None else None
    layers: list[tuple[Origin, dict[str, Any]]] = []
    keys: list[str] = []  # every key given anywhere, masked in any message
    try:
        if config is not None:
            layers.append(("config", _read_config(config, keys, warn)))
        if env_file is not None and env_file.exists():
            layers.append(("dotenv", _prefixed(_read_dotenv(env_file), f"in {env_file}")))
        environ = os.environ if environ is None else environ
        layers.append(("env", _prefixed(environ, "in the environment")))
        if unknown := sorted(set(flags) - set(Settings.model_fields)):
            raise ConfigError(f"unknown settings: {', '.join(unknown)}")
        layers.append(("flag", {k: v for k, v in flags.items() if v is not None}))
        keys += [str(layer["api_key"]) for _, layer in layers if layer.get("api_key")]
        given, origins = _merge(layers)
        values, problems = validate(given)
        if not problems:
            return Settings(**values)
        message = "\n".join(_describe(problems, origins, config, env_file))
    except ConfigError as exc:
        message = str(exc)
    from .logs import redact

    raise ConfigError(redact(message, keys)) from None


def _merge(layers: list[tuple[Origin, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Origin]]:
    """Lowest layer first, each name from the highest layer that gives it; field maps merge.

    Also returns where each name's value came from.
    """
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for origin, layer in layers:
        for name, value in layer.items():
            if name == "field" and isinstance(value, dict) and isinstance(values.get(name), dict):
                values[name] = {**values[name], **value}
            else:
                values[name] = value
            origins[name] = origin
    return values, origins


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
    secrets = [name for name in SECRET_SETTINGS if _holds_secret(name, values.get(name))]
    if secrets:
        _warn_if_readable(path, secrets, warn)
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
    if isinstance(table := values.get("field"), dict):
        if isinstance(key := table.get("api_key"), str):
            keys.append(key)  # an api_key line below [field]: masked all the same
        problems += _misplaced_in_field(text, path, table)
    if problems:
        raise ConfigError("\n".join(problems))
    return {k: EMPTY_MEANS[k] if v == "" and k in EMPTY_MEANS else v for k, v in values.items()}


def _misplaced_in_field(text: str, path: Path, table: Mapping[str, Any]) -> list[str]:
    """A problem per key of the ``[field]`` table that is no customer field, at its own line.

    TOML puts every key after a ``[field]`` header into that table, so a setting written
    below it arrives as a field name: say so, rather than "invalid field".
    """
    import difflib

    problems = []
    for name in table:
        if name in CUSTOMER_FIELDS:
            continue
        line = _line_of(text, "field", name)
        close = difflib.get_close_matches(name, [*CUSTOMER_FIELDS, *Settings.model_fields], n=1)
        setting = name if name in Settings.model_fields else next(iter(close), "")
        if setting in Settings.model_fields:
            mean = "" if setting == name else f" (did you mean {setting}?)"
            problems.append(
                f"key {name}{mean} {f'on line {line} of' if line else 'in'} {path} is inside "
                "the [field] table (TOML puts every key below a [table] header into it): "
                "top-level keys must come before any [table]; move it above [field]"
            )
        else:
            mean = f"did you mean {close[0]}? " if close else ""
            problems.append(
                f"invalid field.{name} in {path} ({f'line {line}, ' if line else ''}key {name}): "
                f"{mean}the fields are {', '.join(CUSTOMER_FIELDS)}"
            )
    return problems


# Settings that may hold a secret: the key itself, or a URL with a password.
SECRET_SETTINGS = ("api_key", "db", "cache", "limiter_url", "pushgateway")


def _holds_secret(name: str, value: Any) -> bool:
    """Whether a config file's value for ``name`` holds a secret (a key, a URL's password)."""
    if name == "api_key":
        return isinstance(value, str)
    urls = value if isinstance(value, list) else [value]
    return any(isinstance(url, str) and DatabaseUrl(url).passwords for url in urls)


def _warn_if_readable(path: Path, names: list[str], warn: Callable[[str], None] | None) -> None:
    """Warn, as ssh does for a key file, when others may read a file that holds a secret."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if os.name != "posix" or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return
    what = " and ".join(n if n == "api_key" else f"a password in {n}" for n in names)
    variables = " and ".join(f"{ENV_PREFIX}{n.upper()}" for n in names)
    message = (
        f"{path} holds {what} and others can read it (mode {stat.S_IMODE(mode):04o}): "
        f"chmod 600 {path}, or set {variables} instead"
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
            current = header.group(1).strip("\"'")  # [ "field" ] is [field]
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


def _describe(
    problems: list[Problem],
    origins: Mapping[str, Origin],
    config: Path | None,
    env_file: Path | None,
) -> list[str]:
    """A line per problem, naming its flag and variable, or its line in the config file."""
    lines = []
    for loc, message in problems:
        if not loc:
            lines.append(f"invalid settings: {message}")
            continue
        name = ".".join(loc)
        if origins.get(loc[0]) == "config" and config is not None:
            line = _line_of(_text_or_empty(config), loc[0] if len(loc) > 1 else None, loc[-1])
            at = f"line {line}, " if line else ""
            lines.append(f"invalid {name} in {config} ({at}key {loc[-1]}): {message}")
            continue
        flag = FLAGS.get(loc[0], "--" + loc[0].replace("_", "-"))
        where = f" in {env_file}" if origins.get(loc[0]) == "dotenv" else ""
        lines.append(f"invalid {name} ({flag} / {ENV_PREFIX}{loc[0].upper()}{where}): {message}")
    return lines


def _text_or_empty(path: Path) -> str:
    """A file's text, or nothing if it cannot be read again."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
