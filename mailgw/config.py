"""The gateway's configuration: one TOML file, validated at start with errors that name the key.

With no file every value has an embedded default, so `mailgw serve` runs as it is: data in
./mailgw-data, SQLite, SMTP on 127.0.0.1:2525, the API on 127.0.0.1:8025.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_NAME = "mailgw.toml"


class ConfigError(Exception):
    """One or more problems in the configuration; ``problems`` are ready-to-print lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class StorageConfig:
    data_dir: Path = Path("mailgw-data")
    database_url: str = ""  # empty: SQLite in data_dir
    retention_days: int = 0  # 0: keep raw messages forever
    prune_interval_minutes: float = 60.0  # how often `serve` removes raw messages past retention
    min_free_mb: int = 100  # refuse mail (451) when the data disk has less free space

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'mailgw.db').resolve()}"


@dataclass
class SmtpConfig:
    listen: Listen | None = field(default_factory=lambda: Listen("127.0.0.1", 2525))
    submission_listen: Listen | None = None
    smtps_listen: Listen | None = None
    hostname: str = ""
    domains: list[str] = field(default_factory=lambda: ["localhost"])
    trusted_networks: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    max_connections: int = 500
    max_connections_per_client: int = 50
    max_messages_per_minute_per_client: int = 0  # 0: unlimited
    timeout: int = 300
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass
class RelayConfig:
    host: str = ""  # empty: keep mail as held
    port: int = 25
    starttls: str = "opportunistic"  # opportunistic | required | none
    implicit_tls: bool = False
    verify_tls: bool = True
    ca_file: Path | None = None
    username: str = ""
    password: str = ""
    timeout: int = 60
    workers: int = 4
    max_lifetime_hours: float = 120.0
    retry_initial_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    postmaster: str = ""


@dataclass
class PipelineConfig:
    processes: int = 1  # 0: run the pipeline in the gateway's own process
    nice: int = 10  # CPU priority of pipeline processes below the gateway's
    workers: int = 2
    lease_seconds: int = 60
    poll_seconds: float = 0.25


@dataclass
class ApiConfig:
    listen: Listen | None = field(default_factory=lambda: Listen("127.0.0.1", 8025))
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass
class RulesConfig:
    file: Path | None = None
    poll_seconds: float = 2.0


@dataclass(frozen=True)
class RegisterConfig:
    """One document register: the categories that feed it, whether it is for mật documents."""

    name: str
    categories: tuple[str, ...] = ()
    classified: bool = False


@dataclass
class NotifyConfig:
    from_address: str = ""  # From: of notifications; empty: mailgw@<smtp.hostname>
    agency: str = "Cơ quan"  # the agency's name as it appears in notifications
    templates_dir: Path | None = None  # searched before the packaged templates/notify


@dataclass
class RegistryConfig:
    timezone: str = "Asia/Ho_Chi_Minh"  # the register year follows the agency's calendar
    register: list[RegisterConfig] = field(
        default_factory=lambda: [
            RegisterConfig("default"),
            RegisterConfig("confidential", classified=True),
        ]
    )
    units: dict[str, str] = field(default_factory=dict)  # recipient address or @domain -> unit


@dataclass
class RuntimeConfig:
    event_loop: str = "auto"  # auto (uvloop when installed) | uvloop | asyncio


@dataclass
class LogConfig:
    level: str = "INFO"


@dataclass
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    source: str = "<embedded defaults>"

    @property
    def hostname(self) -> str:
        return self.smtp.hostname or "mailgw.localdomain"


# --- value parsers: each takes the raw TOML value and returns the typed value or raises ValueError


def _listen(value: Any) -> Listen | None:
    if value in ("", None):
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string 'host:port' (or \"\" to disable)")
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", value.strip())
    if not m:
        raise ValueError(f"expected 'host:port', got {value!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return Listen(host, port)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _path(value: Any) -> Path | None:
    return Path(_str(value)) if value != "" else None


def _int(minimum: int = 0) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    return parse


def _float(minimum: float = 0.0) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return float(value)

    return parse


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}; got {value!r}")
        return value

    return parse


def _domains(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of domain names")
    return [v.strip().lower().rstrip(".") for v in value]


def _networks(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError("expected a list of networks in CIDR form")
    for v in value:
        try:
            ipaddress.ip_network(str(v), strict=False)
        except ValueError as exc:
            raise ValueError(f"{v!r} is not a network: {exc}") from None
    return [str(v) for v in value]


def _database_url(value: Any) -> str:
    value = _str(value)
    if value and not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
        raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST/DB")
    return value


def _timezone(value: Any) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(_str(value))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def _registers(value: Any) -> list[RegisterConfig]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError("expected [[registry.register]] tables")
    registers: list[RegisterConfig] = []
    for number, table in enumerate(value, start=1):
        unknown = set(table) - {"name", "categories", "classified"}
        if unknown:
            raise ValueError(f"register {number}: unknown key(s) {', '.join(sorted(unknown))}")
        name = table.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ValueError(f"register {number}: name must be 1-64 letters, digits, . _ -")
        categories = table.get("categories", [])
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise ValueError(f"register {name}: categories must be a list of strings")
        classified = _bool(table.get("classified", False))
        if any(r.name == name for r in registers):
            raise ValueError(f"register {name} is defined twice")
        registers.append(RegisterConfig(name, tuple(categories), classified))
    return registers


def _units(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError('expected a table of "address" = "unit"')
    return {k.strip().lower(): v for k, v in value.items()}


def _level(value: Any) -> str:
    return _choice("DEBUG", "INFO", "WARNING", "ERROR")(str(value).upper())


SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    "storage": {
        "data_dir": lambda v: Path(_str(v)),
        "database_url": _database_url,
        "retention_days": _int(0),
        "prune_interval_minutes": _float(1.0),
        "min_free_mb": _int(0),
    },
    "smtp": {
        "listen": _listen,
        "submission_listen": _listen,
        "smtps_listen": _listen,
        "hostname": _str,
        "domains": _domains,
        "trusted_networks": _networks,
        "max_message_size": _int(1024),
        "max_recipients": _int(1),
        "max_connections": _int(1),
        "max_connections_per_client": _int(1),
        "max_messages_per_minute_per_client": _int(0),
        "timeout": _int(5),
        "tls_cert": _path,
        "tls_key": _path,
    },
    "relay": {
        "host": _str,
        "port": _int(1),
        "starttls": _choice("opportunistic", "required", "none"),
        "implicit_tls": _bool,
        "verify_tls": _bool,
        "ca_file": _path,
        "username": _str,
        "password": _str,
        "timeout": _int(1),
        "workers": _int(1),
        "max_lifetime_hours": _float(0.0),
        "retry_initial_seconds": _float(0.1),
        "retry_max_seconds": _float(0.1),
        "postmaster": _str,
    },
    "pipeline": {
        "processes": _int(0),
        "nice": _int(0),
        "workers": _int(1),
        "lease_seconds": _int(5),
        "poll_seconds": _float(0.01),
    },
    "api": {"listen": _listen, "tls_cert": _path, "tls_key": _path},
    "rules": {"file": _path, "poll_seconds": _float(0.1)},
    "registry": {"timezone": _timezone, "register": _registers, "units": _units},
    "notify": {"from_address": _str, "agency": _str, "templates_dir": _path},
    "log": {"level": _level},
    "runtime": {"event_loop": _choice("auto", "uvloop", "asyncio")},
}


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """Best-effort line number of ``key`` in ``[section]`` (tomllib does not report positions)."""
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
            continue
        if key and current == section and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def parse_config(text: str, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """Parse and validate TOML text. Raises ConfigError listing every problem.

    Relative paths in the text are taken relative to ``base_dir`` (the config file's folder).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: {exc}"]) from None
    config = Config(source=source)
    problems: list[str] = []

    def where(section: str, key: str | None) -> str:
        line = _line_of(text, section, key)
        name = f"{section}.{key}" if key else section
        return f"{source}:{line}: {name}" if line else f"{source}: {name}"

    for section, values in raw.items():
        if section not in SCHEMA:
            problems.append(f"{where(section, None)}: unknown section [{section}]")
            continue
        if not isinstance(values, dict):
            problems.append(f"{where(section, None)}: expected a table [{section}]")
            continue
        target = getattr(config, section)
        for key, value in values.items():
            parser = SCHEMA[section].get(key)
            if parser is None:
                problems.append(f"{where(section, key)}: unknown key")
                continue
            try:
                setattr(target, key, parser(value))
            except ValueError as exc:
                problems.append(f"{where(section, key)}: {exc}")
    if base_dir is not None:
        _resolve_paths(config, base_dir)
    problems += [f"{source}: {p}" for p in _cross_checks(config)]
    if problems:
        raise ConfigError(problems)
    return config


def _resolve_paths(config: Config, base: Path) -> None:
    def resolve(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else base / path

    config.storage.data_dir = resolve(config.storage.data_dir) or config.storage.data_dir
    for section in (config.smtp, config.api):
        section.tls_cert = resolve(section.tls_cert)
        section.tls_key = resolve(section.tls_key)
    config.relay.ca_file = resolve(config.relay.ca_file)
    config.rules.file = resolve(config.rules.file)
    config.notify.templates_dir = resolve(config.notify.templates_dir)


def _cross_checks(config: Config) -> list[str]:
    problems = []
    smtp = config.smtp
    if (smtp.submission_listen or smtp.smtps_listen) and not (smtp.tls_cert and smtp.tls_key):
        problems.append("smtp.submission_listen/smtps_listen need smtp.tls_cert and smtp.tls_key")
    if bool(smtp.tls_cert) != bool(smtp.tls_key):
        problems.append("smtp.tls_cert and smtp.tls_key go together")
    if bool(config.api.tls_cert) != bool(config.api.tls_key):
        problems.append("api.tls_cert and api.tls_key go together")
    for name, path in (
        ("smtp.tls_cert", smtp.tls_cert),
        ("smtp.tls_key", smtp.tls_key),
        ("api.tls_cert", config.api.tls_cert),
        ("api.tls_key", config.api.tls_key),
        ("relay.ca_file", config.relay.ca_file),
        ("rules.file", config.rules.file),
    ):
        if path is not None and not path.is_file():
            problems.append(f"{name}: no such file: {path}")
    if config.relay.retry_max_seconds < config.relay.retry_initial_seconds:
        problems.append("relay.retry_max_seconds must be >= relay.retry_initial_seconds")
    return problems


def load_config(path: str | Path | None = None) -> Config:
    """Load ``path``; with None, ./mailgw.toml if present, else the embedded defaults.

    Relative paths inside the file are taken relative to the file's folder.
    The environment variable MAILGW_DATABASE_URL, when set, overrides storage.database_url.
    """
    if path is None and Path(DEFAULT_CONFIG_NAME).is_file():
        path = DEFAULT_CONFIG_NAME
    if path is None:
        config = Config()
    else:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot read: {exc}"]) from None
        config = parse_config(text, str(path), path.resolve().parent)
    env_url = os.environ.get("MAILGW_DATABASE_URL")
    if env_url:
        config.storage.database_url = _database_url(env_url)
    return config
