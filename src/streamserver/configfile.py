"""The configuration file (``--config FILE``): TOML onto the option table.

A file holds a ``[server]`` table with the server-wide options and ``[app.NAME]``
tables, plus an ``[app."*"]`` default, with the per-application ones (the rows of
:data:`~streamserver.options.OPTIONS` whose ``scope`` is ``"app"``).  A key is the
option's flag without ``--`` (``max-connections``, ``drop-low``; the one spelling,
dashes); its value goes through the row's own parser, as on the command line: a
TOML integer, float or boolean where the option takes a number or is a flag, a
string otherwise, an array for a repeatable option (a lone value is a list of one).

Precedence, highest first: the command line, then ``[app.NAME]``, ``[app."*"]``,
``[server]``, then the defaults of :class:`~streamserver.config.ServerConfig`.
``[server]`` and ``[app."*"]`` never share a key, so the server's configuration
(:attr:`Effective.config`) is the defaults, ``[server]``, ``[app."*"]`` and the
command line; an application named in the file derives its own from it
(:attr:`Effective.apps`, without the keys the command line gave).

Every mistake is a :class:`ConfigFileError` naming the file, the line and the key:
an unknown key (with the nearest known one), a server key in an application's
table or the reverse, a wrong type, a value its parser refuses (a bad endpoint,
an unreadable keys file), a value out of its range.  ``tomllib`` gives no line
numbers for keys, so :func:`key_lines` finds them with a scan of the text
(tables, dotted and quoted keys).

This module reads and checks; :func:`streamserver.tap.Options.postOptions` and
:mod:`streamserver.reload` apply the result.
"""

from __future__ import annotations

import difflib
import re
import shlex
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.python import usage

from streamserver.config import ConfigError, ServerConfig
from streamserver.options import OPTIONS, Option, initial_values, usage_error

__all__ = [
    "ConfigFileError",
    "Effective",
    "FileSettings",
    "convert",
    "describe",
    "effective",
    "key_lines",
    "load",
    "shown_value",
]

#: The option rows by flag.
_BY_FLAG: dict[str, Option] = {option.flag: option for option in OPTIONS}

#: The default table of every application.
DEFAULT_APP = "*"

#: An application's name as a table key: what an RTMP URL's first segment holds.
_APP_NAME = re.compile(r"[A-Za-z0-9_.~-]+")


class ConfigFileError(ConfigError):
    """The configuration file is wrong: ``FILE:LINE: KEY: what``.

    :ivar path: the file.
    :ivar line: the line of the offending key (1-based), 0 when unknown.
    :ivar key: the key as a dotted TOML path (``app.studio.drop-low``).
    """

    def __init__(self, path: str, line: int, key: str, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        self.path = path
        self.line = line
        self.key = key


# --- where each key is


_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_TABLE = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?$")
_ARRAY_TABLE = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]")
_KEY = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY_PART)


def _parts(dotted: str) -> tuple[str, ...]:
    parts = []
    for part in _PART.findall(dotted):
        if part[0] in "\"'":
            part = tomllib.loads(f"k = {part}")["k"]
        parts.append(part)
    return tuple(parts)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line (1-based) of every table header and key of the TOML *text*, by path.

    ``[app.studio]`` then ``drop-low = 1`` gives ``("app", "studio")`` and
    ``("app", "studio", "drop-low")``; a dotted key ``app.test.hls = "off"`` at
    the top gives ``("app", "test", "hls")`` and its prefixes.  Lines inside a
    multi-line string are skipped; an inline table's keys are not listed (a
    lookup falls back to the nearest listed prefix: :func:`line_of`).
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            if line.count(in_string) % 2:
                in_string = None
            continue
        header = _TABLE.match(line) or _ARRAY_TABLE.match(line)
        if header is not None:
            table = _parts(header[1])
            for end in range(1, len(table) + 1):
                lines.setdefault(table[:end], number)
            continue
        key = _KEY.match(line)
        if key is None:
            continue
        path = table + _parts(key[1])
        for end in range(len(table) + 1, len(path) + 1):
            lines.setdefault(path[:end], number)
        rest = line[key.end() :]
        for quote in ('"""', "'''"):
            if rest.count(quote) % 2:
                in_string = quote
    return lines


def line_of(lines: Mapping[tuple[str, ...], int], path: tuple[str, ...]) -> int:
    """The line of *path*, or of its nearest listed prefix; 0 if none is listed."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 0


def _dotted(path: Iterable[str]) -> str:
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else f'"{p}"' for p in path)


# --- values


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _scalar(option: Option, value: Any) -> Any:
    parse = option.parse
    assert parse is not None
    if parse is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_type_name(value)}")
        return value
    if parse is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_type_name(value)}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_type_name(value)}")
    return parse(value)


def convert(option: Option, value: Any) -> Any:
    """The TOML *value* of *option* as the parsed option value (``tap.Options[flag]``).

    :raises ValueError: a wrong type, or the option's parser refused it.
    """
    if option.parse is None:
        if not isinstance(value, bool):
            raise ValueError(f"expected a boolean (true or false), got {_type_name(value)}")
        return value
    try:
        if option.repeatable:
            items = value if isinstance(value, list) else [value]
            return [_scalar(option, item) for item in items]
        return _scalar(option, value)
    except OSError as error:
        raise ValueError(str(error)) from error


# --- the file


@dataclass
class FileSettings:
    """What a configuration file says, parsed but not yet merged.

    :ivar path: the file.
    :ivar server: the ``[server]`` values, parsed, by flag.
    :ivar apps: each ``[app.NAME]`` table's parsed values by flag, by name
        (``"*"`` for the default table).
    :ivar lines: :func:`key_lines` of its text.
    """

    path: str
    server: dict[str, Any] = field(default_factory=dict)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)

    def error(self, path: tuple[str, ...], message: str) -> ConfigFileError:
        """The error at the key *path* (``("app", "studio", "drop-low")``)."""
        return ConfigFileError(self.path, line_of(self.lines, path), _dotted(path), message)


def _unknown(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"


def load(path: str) -> FileSettings:
    """Read and check the configuration file at *path* (values parsed, ranges not yet).

    :raises ConfigFileError: it cannot be read, is no TOML, or a key or value is wrong.
    """
    try:
        with open(path, "rb") as config_file:
            raw = config_file.read()
    except OSError as error:
        raise ConfigFileError(path, 0, "", f"cannot read: {error.strerror or error}") from error
    try:
        text = raw.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError as error:
        raise ConfigFileError(path, 0, "", f"not UTF-8: {error}") from error
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"line (\d+)", str(error))
        raise ConfigFileError(path, int(found[1]) if found else 0, "", str(error)) from error
    settings = FileSettings(path, lines=key_lines(text))
    in_file = [option.flag for option in OPTIONS if option.in_file]
    for top, value in document.items():
        if top not in ("server", "app"):
            hint = " (the tables are [server] and [app.NAME])"
            raise settings.error((top,), _unknown(top, ["server", "app"]) + hint)
        if not isinstance(value, dict):
            raise settings.error((top,), f"must be a table, got {_type_name(value)}")
    for flag, value in document.get("server", {}).items():
        option = _BY_FLAG.get(flag)
        key: tuple[str, ...] = ("server", flag)
        if option is None or not option.in_file:
            raise settings.error(key, _unknown(flag, in_file))
        if option.scope == "app":
            raise settings.error(key, 'a per-application key: put it under [app."*"] or [app.NAME]')
        settings.server[flag] = _converted(settings, key, option, value)
    for app, table in document.get("app", {}).items():
        if app != DEFAULT_APP and not _APP_NAME.fullmatch(app):
            raise settings.error(("app", app), "an application name is letters, digits and _.~-")
        if not isinstance(table, dict):
            raise settings.error(("app", app), f"must be a table, got {_type_name(table)}")
        values: dict[str, Any] = {}
        for flag, value in table.items():
            option = _BY_FLAG.get(flag)
            key = ("app", app, flag)
            if option is None or not option.in_file:
                raise settings.error(key, _unknown(flag, in_file))
            if option.scope != "app":
                raise settings.error(key, "a server-wide key: put it under [server]")
            values[flag] = _converted(settings, key, option, value)
        settings.apps[app] = values
    return settings


def _converted(settings: FileSettings, key: tuple[str, ...], option: Option, value: Any) -> Any:
    try:
        return convert(option, value)
    except ValueError as error:
        raise settings.error(key, str(error)) from error


# --- merged with the command line


@dataclass
class Effective:
    """The configuration in force: the command line over the file over the defaults.

    :ivar values: every option's value by flag (``tap.Options``' mapping), for the
        server and every application the file does not name.
    :ivar config: the server's :class:`~streamserver.config.ServerConfig`.
    :ivar apps: the settings, by field path, each named application adds to
        :attr:`config` (``[app.NAME]`` without what the command line gave).
    :ivar app_configs: each named application's derived, validated configuration.
    :ivar source: the file read, or ``None``.
    :ivar given: the flags the command line gave (they override the file).
    """

    values: dict[str, Any]
    config: ServerConfig
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    app_configs: dict[str, ServerConfig] = field(default_factory=dict)
    source: FileSettings | None = None
    given: set[str] = field(default_factory=set)


def _settings(values: Mapping[str, Any], flags: Iterable[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for flag in flags:
        settings.update(_BY_FLAG[flag].settings(values[flag]))
    return settings


def _file_error(
    error: ConfigError, source: FileSettings, given: set[str], app: str | None
) -> ConfigError | usage.UsageError:
    """*error* of a range check as the file's error at the key that set a field.

    The application's own table is searched first, then ``[app."*"]``, then
    ``[server]``: the most specific key that set an offending field is named.
    """
    flags = [
        option.flag
        for path in error.fields
        for option in OPTIONS
        if option.flag not in given
        and any(p == path or p.startswith(path + ".") for p in option.paths)
    ]
    tables: list[tuple[str, dict[str, Any]]] = []
    if app is not None:
        tables.append((app, source.apps.get(app, {})))
    tables.append((DEFAULT_APP, source.apps.get(DEFAULT_APP, {})))
    tables.append(("", source.server))
    for name, table in tables:
        for flag in flags:
            if flag in table:
                key = ("app", name, flag) if name else ("server", flag)
                return source.error(key, str(usage_error(error)))
    return usage_error(error)


def effective(command_line: Mapping[str, Any], given: Iterable[str], path: str | None) -> Effective:
    """The command line's values (*given*: the flags it set) over the file at *path*.

    :raises ConfigFileError: the file is wrong (naming its line and key).
    :raises usage.UsageError: a command-line value is out of its range.
    """
    given = set(given)
    values = initial_values()
    source = load(path) if path is not None else None
    if source is not None:
        values.update(source.server)
        values.update(source.apps.get(DEFAULT_APP, {}))
    for flag in given:
        values[flag] = command_line[flag]
    for flag, value in command_line.items():
        if flag not in _BY_FLAG:
            values[flag] = value
    try:
        config = ServerConfig.from_settings(_settings(values, _BY_FLAG))
    except ConfigError as error:
        if source is None:
            raise usage_error(error) from error
        raise _file_error(error, source, given, None) from error
    result = Effective(values, config, source=source, given=given)
    if source is None:
        return result
    for app, table in source.apps.items():
        if app == DEFAULT_APP:
            continue
        own = _settings(table, [flag for flag in table if flag not in given])
        try:
            result.app_configs[app] = config.derived(own)
        except ConfigError as error:
            raise _file_error(error, source, given, app) from error
        result.apps[app] = own
    return result


# --- shown


def shown_value(option: Option, value: Any) -> str | None:
    """*value* of *option* as a TOML value, ``None`` for none (the key is left out)."""
    if value is None:
        return None
    if option.secret:
        return '"***"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if option.flag == "chat-rate":
        return _quote(f"{value[0]}/{value[1]:g}")
    if option.flag == "exec-record-done":
        return _quote(shlex.join(value)) if value else None
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_item(option, item) for item in value) + "]"
    return _quote(str(value))


def _toml_item(option: Option, item: Any) -> str:
    if option.flag == "authorizer":
        return _quote(f"{type(item).__module__}.{type(item).__qualname__}")
    return _quote(str(item)) if not isinstance(item, int | float) else repr(item)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def describe(result: Effective) -> str:
    """The effective configuration as a TOML document, secrets masked (``--check``).

    ``[server]`` and ``[app."*"]`` list every option; each ``[app.NAME]`` lists
    what it changes.  A value that is none (``off``) is a comment.
    """
    out: list[str] = []
    for title, scope in (("[server]", "server"), ('[app."*"]', "app")):
        out.append(title)
        for option in OPTIONS:
            if option.scope == scope and option.in_file:
                shown = shown_value(option, result.values[option.flag])
                out.append(f"{option.flag} = {shown}" if shown else f"# {option.flag}: off")
        out.append("")
    source = result.source
    for app in result.apps:
        out.append(f"[app.{_dotted([app])}]")
        assert source is not None
        for flag, value in source.apps[app].items():
            if flag in result.given:
                continue
            shown = shown_value(_BY_FLAG[flag], value)
            out.append(f"{flag} = {shown}" if shown else f"# {flag}: off")
        out.append("")
    return "\n".join(out)
