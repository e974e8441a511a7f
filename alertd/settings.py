"""The files operators edit: alertd.toml, rules/*.toml, channels/*.toml.

`load_config(path)` reads them all, replaces `${VAR}` / `${VAR:-default}`,
validates with strict pydantic models and returns a `Config`, or raises
`ConfigErrors` listing every problem with its file and key.
"""

from __future__ import annotations

import difflib
import glob
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alertd.channels.base import ChannelConfig, StrictModel
from alertd.channels.payload import template_data
from alertd.channels.registry import CONFIG_MODELS, parse_channel_config
from alertd.channels.templating import TemplateFailure, check_template, sample_notification
from alertd.durations import Duration
from alertd.errors import ConfigError, ConfigErrors
from alertd.matchers import Matcher, parse_matchers
from alertd.model import SEVERITIES
from alertd.redisurl import check_redis_url
from alertd.templates import env_refs, template_fields

DEFAULT_CONFIG_PATH = "alertd.toml"
RULE_TEMPLATES = ("summary", "description", "runbook_url")
NAME_RE = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:.-]*$")
LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


# --- conditions -----------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t,
    "<=": lambda v, t: v <= t,
    "==": lambda v, t: v == t,
    "!=": lambda v, t: v != t,
    ">": lambda v, t: v > t,
    "<": lambda v, t: v < t,
}
_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True, slots=True)
class Condition:
    """`OP NUMBER`, e.g. `> 0.05`."""

    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"


def parse_condition(text: object) -> Condition:
    if isinstance(text, Condition):
        return text
    if not isinstance(text, str):
        raise ValueError("a condition is a string like '> 0.05'")
    m = _CONDITION.match(text)
    if not m:
        raise ValueError(f"invalid condition {text!r} (use 'OP NUMBER', OP one of > >= < <= == !=)")
    return Condition(m.group(1), float(m.group(2)))


ConditionField = Annotated[Condition, BeforeValidator(parse_condition)]


def _check_matchers(v: dict[str, str]) -> dict[str, str]:
    parse_matchers(v)
    return v


# --- rules ----------------------------------------------------------------------

Aggregate = Literal[
    "last", "min", "max", "avg", "sum", "count", "rate", "p50", "p90", "p95", "p99", "age"
]


class RuleSpec(StrictModel):
    """One `[[rules]]` entry (docs/rules.md)."""

    name: str
    metric: str
    divide_by: str | None = None
    min_denominator: float | None = None
    aggregate: Aggregate = "last"
    window: Duration = timedelta(minutes=5)
    group_by: list[str] = Field(default_factory=list)
    match: dict[str, str] = Field(default_factory=dict)
    for_: Duration = Field(default=timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    info: ConditionField | None = None
    warning: ConditionField | None = None
    critical: ConditionField | None = None
    info_recovery: ConditionField | None = None
    warning_recovery: ConditionField | None = None
    critical_recovery: ConditionField | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    description: str = ""
    runbook_url: str = ""
    channels: list[str] | None = None
    max_series: int = Field(default=10_000, ge=1)  # the cardinality guard (alertd.cardinality)

    @field_validator("name", "metric", "divide_by")
    @classmethod
    def _metric_name(cls, v: str | None) -> str | None:
        if v is not None and (not NAME_RE.match(v) or len(v) > 200):
            raise ValueError(f"{v!r} is not a valid name ([A-Za-z_:][A-Za-z0-9_:.-]*)")
        return v

    @field_validator("group_by")
    @classmethod
    def _label_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not LABEL_RE.match(name):
                raise ValueError(f"{name!r} is not a valid label name")
        if "severity" in v or "alertname" in v:
            raise ValueError("group_by cannot use 'severity' or 'alertname'")
        return v

    @field_validator("labels")
    @classmethod
    def _extra_labels(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not LABEL_RE.match(name) or name.startswith("__"):
                raise ValueError(f"{name!r} is not a valid label name")
            if name in ("alertname", "severity"):
                raise ValueError(f"label {name!r} is set by alertd and cannot be overridden")
        return v

    @field_validator("match")
    @classmethod
    def _matchers(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_matchers(v)

    @field_validator("window")
    @classmethod
    def _positive_window(cls, v: timedelta) -> timedelta:
        if v < timedelta(seconds=1):
            raise ValueError("window must be at least 1s")
        return v

    @field_validator("summary", "description", "runbook_url")
    @classmethod
    def _template(cls, v: str) -> str:
        template_fields(v)
        return v

    @model_validator(mode="after")
    def _levels(self) -> RuleSpec:
        if not any(getattr(self, lvl) for lvl in SEVERITIES):
            raise ValueError("a rule needs at least one of info, warning, critical")
        for lvl in SEVERITIES:
            if getattr(self, f"{lvl}_recovery") and not getattr(self, lvl):
                raise ValueError(f"{lvl}_recovery is set but {lvl} is not")
        if self.divide_by and "aggregate" in self.model_fields_set and self.aggregate != "sum":
            raise ValueError("with divide_by the aggregate is always sum; remove 'aggregate'")
        if self.min_denominator is not None and not self.divide_by:
            raise ValueError("min_denominator needs divide_by")
        return self

    @property
    def aggregate_kind(self) -> str:
        return "sum" if self.divide_by else self.aggregate


@dataclass(frozen=True)
class Rule:
    """A validated rule with its compiled matchers and where it came from."""

    spec: RuleSpec
    file: str
    match: tuple[Matcher, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    def levels(self) -> list[tuple[str, Condition, Condition | None]]:
        """(severity, condition, recovery) from the lowest to the highest level."""
        out = []
        for lvl in SEVERITIES:
            cond = getattr(self.spec, lvl)
            if cond is not None:
                out.append((lvl, cond, getattr(self.spec, f"{lvl}_recovery")))
        return out

    def identity(self) -> str:
        """Changes with the rule's meaning: state of an unchanged rule survives reloads."""
        return self.spec.model_dump_json(by_alias=True)


class RuleFile(StrictModel):
    rules: list[dict[str, Any]] = Field(default_factory=list)


# --- alertd.toml ----------------------------------------------------------------


class RedisSettings(StrictModel):
    # Before url: the URL's check depends on it (behind Sentinel it names no host).
    mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    url: str = "redis://127.0.0.1:6379/0"
    stream: str = "alertd:events"
    group: str = "alertd"
    group_start: str = "$"
    key_prefix: str = "alertd:"
    dead_letter_stream: str = "alertd:dead"
    sentinels: list[str] = Field(default_factory=list)  # "host:port" of each Sentinel
    master: str = "mymaster"  # the name Sentinels know the master by
    partitions: int = Field(default=16, ge=1, le=1024)
    stream_shards: int = Field(default=1, ge=1, le=256)
    wait_replicas: int = Field(default=0, ge=0, le=16)

    @field_validator("sentinels")
    @classmethod
    def _sentinel_addresses(cls, v: list[str]) -> list[str]:
        for address in v:
            _, sep, port = address.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ValueError(f"a sentinel must be HOST:PORT, got {address!r}")
        return v

    @model_validator(mode="after")
    def _sentinel_mode(self) -> RedisSettings:
        if self.mode == "sentinel" and not self.sentinels:
            raise ValueError('mode = "sentinel" needs sentinels = ["HOST:PORT", ...]')
        return self

    @property
    def streams(self) -> list[str]:
        """Every stream events are read from: `stream`, and its shards `<stream>:<i>`."""
        if self.stream_shards == 1:
            return [self.stream]
        return [self.stream, *(f"{self.stream}:{i}" for i in range(self.stream_shards))]

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        return check_redis_url(v, require_host=info.data.get("mode") != "sentinel")


class DaemonSettings(StrictModel):
    consumer: str | None = None
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    block: Duration = timedelta(seconds=1)
    eval_interval: Duration = timedelta(seconds=1)
    claim_idle: Duration = timedelta(seconds=30)
    takeover: Duration = timedelta(seconds=5)
    shutdown_timeout: Duration = timedelta(seconds=10)


class HttpSettings(StrictModel):
    listen: str = "127.0.0.1:9099"
    token: SecretStr = SecretStr("")
    external_url: str = ""  # shown to receivers as externalURL; default http://<listen>
    # CIDRs that may write without a token, besides loopback (senders such as a
    # Prometheus on another host, when no http.token is set)
    trusted_networks: list[str] = Field(default_factory=list)

    @field_validator("trusted_networks")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a network (e.g. 10.0.0.0/8)") from None
        return v

    @property
    def trusted(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.trusted_networks)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        _, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen must be HOST:PORT, got {v!r}")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class PathsSettings(StrictModel):
    rules: list[str] = Field(default_factory=lambda: ["rules/*.toml"])
    channels: list[str] = Field(default_factory=lambda: ["channels/*.toml"])


class NotifySettings(StrictModel):
    group_by: list[str] = Field(default_factory=lambda: ["alertname"])
    group_wait: Duration = timedelta(seconds=10)
    group_interval: Duration = timedelta(minutes=1)
    repeat_interval: Duration = timedelta(hours=4)
    send_resolved: bool = True
    resolve_silenced: bool = True
    # an alert posted to /api/v2/alerts without endsAt fires this long unless posted again
    resolve_timeout: Duration = timedelta(minutes=5)
    history_retention: Duration = timedelta(days=7)  # GET /api/v1/notifications


class RouteSettings(StrictModel):
    match: dict[str, str] = Field(default_factory=dict)
    channels: list[str] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")
    mute_during: list[str] = Field(default_factory=list)
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    send_resolved: bool | None = None

    @field_validator("match")
    @classmethod
    def _matchers(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_matchers(v)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class TimeIntervalSettings(StrictModel):
    name: str
    weekdays: list[str] = Field(default_factory=list)  # names or ranges "monday:friday"
    times: list[str] = Field(default_factory=list)  # "HH:MM-HH:MM", end exclusive, 24:00 allowed
    timezone: str = "UTC"

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v: list[str]) -> list[str]:
        for item in v:
            parts = item.lower().split(":")
            if len(parts) > 2:
                raise ValueError(f"invalid weekday range {item!r} (use 'monday:friday')")
            for part in parts:
                if part not in WEEKDAYS:
                    raise ValueError(f"unknown weekday {part!r}")
        return v

    @field_validator("times")
    @classmethod
    def _times(cls, v: list[str]) -> list[str]:
        for item in v:
            m = _TIME_RANGE.match(item)
            if not m:
                raise ValueError(f"invalid time range {item!r} (use 'HH:MM-HH:MM')")
            start = int(m[1]) * 60 + int(m[2])
            end = int(m[3]) * 60 + int(m[4])
            if not (0 <= start < end <= 1440 and int(m[2]) < 60 and int(m[4]) < 60):
                raise ValueError(f"invalid time range {item!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}") from None
        return v


class InhibitSettings(StrictModel):
    source: dict[str, str]
    target: dict[str, str]
    equal: list[str] = Field(default_factory=list)

    @field_validator("source", "target")
    @classmethod
    def _matchers(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_matchers(v)


class LoggingSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class EnvSettings(StrictModel):
    """`[env]`: environment variables rule templates may show to every receiver."""

    public: list[str] = Field(default_factory=list)

    @field_validator("public")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not LABEL_RE.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return v


class Settings(StrictModel):
    redis: RedisSettings = RedisSettings()
    daemon: DaemonSettings = DaemonSettings()
    http: HttpSettings = HttpSettings()
    paths: PathsSettings = PathsSettings()
    notify: NotifySettings = NotifySettings()
    routes: list[RouteSettings] = Field(default_factory=list)
    time_intervals: list[TimeIntervalSettings] = Field(default_factory=list)
    inhibit: list[InhibitSettings] = Field(default_factory=list)
    logging: LoggingSettings = LoggingSettings()
    env: EnvSettings = EnvSettings()
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def external_url(self) -> str:
        return self.http.external_url or f"http://{self.http.listen}"


# --- the loaded whole -----------------------------------------------------------


@dataclass
class Config:
    """Everything one load produced; immutable once built, swapped whole on reload."""

    path: Path
    settings: Settings
    rules: list[Rule]
    channels: dict[str, ChannelConfig]
    channel_files: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    files: dict[str, float] = field(default_factory=dict)  # path -> mtime, for reload on change

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


def interpolate(value: Any, env: Mapping[str, str], where: str) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string, recursively."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and (env[name] != "" or default is None):
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set", file=where)

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, where) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, where) for v in value]
    return value


def _read_toml(
    path: Path,
    shown: str,
    env: Mapping[str, str],
    check_raw: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", file=shown) from None
    except IsADirectoryError:
        raise ConfigError("is a directory; name the .toml file in it", file=shown) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=shown) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=shown) from None
    if check_raw is not None:  # what the file says before ${VAR}s are replaced
        check_raw(data)
    result: dict[str, Any] = interpolate(data, env, shown)
    return result


def _model_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _submodel(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that owns the last key of `loc` (for "did you mean")."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        f = fields.get(str(part))
        if f is None:
            return None
        ann = f.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            args = getattr(candidate, "__args__", ())
            for c in (candidate, *args):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    current = c
                    break
            else:
                continue
            break
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


# pydantic's wording ("Input should be a valid integer, ...") in an operator's words.
# Only numbers, booleans and choices are echoed: any other value may be a secret.
_PLAIN: dict[str, Callable[[dict[str, Any]], str]] = {
    "missing": lambda e: "is required; add it",
    "int_parsing": lambda e: f"{e['input']!r} is not a whole number",
    "int_type": lambda e: "must be a whole number",
    "int_from_float": lambda e: f"{e['input']!r} is not a whole number",
    "float_parsing": lambda e: f"{e['input']!r} is not a number",
    "float_type": lambda e: "must be a number",
    "bool_parsing": lambda e: f"{e['input']!r} is not true or false",
    "bool_type": lambda e: "must be true or false",
    "string_type": lambda e: 'must be a string (in quotes: "...")',
    "list_type": lambda e: 'must be a list, e.g. ["a", "b"]',
    "dict_type": lambda e: "must be a table (key = value pairs)",
    "model_type": lambda e: "must be a table (key = value pairs)",
    "greater_than_equal": lambda e: f"must be at least {e['ctx']['ge']}",
    "less_than_equal": lambda e: f"must be at most {e['ctx']['le']}",
    "greater_than": lambda e: f"must be more than {e['ctx']['gt']}",
    "less_than": lambda e: f"must be less than {e['ctx']['lt']}",
    "too_short": lambda e: f"needs at least {e['ctx']['min_length']} item(s)",
    "literal_error": lambda e: (
        f"{e['input']!r} is not one of {e['ctx']['expected'].replace(' or ', ', ')}"
    ),
}


def _plain_words(err: Any) -> str:
    plain = _PLAIN.get(err["type"])
    if plain is not None:
        try:
            return plain(err)
        except (KeyError, TypeError):  # a context pydantic did not give: its own words
            pass
    return str(err["msg"]).removeprefix("Value error, ")


def _key(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as operators count: ("routes", 0, "channels") -> "routes #1.channels"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f" #{part + 1}"
        else:
            text += f".{part}" if text else str(part)
    return text


def validation_errors(
    exc: ValidationError,
    model: type[BaseModel],
    file: str,
    context: str = "",
    tag: str | None = None,
) -> list[ConfigError]:
    """One ConfigError per pydantic error, naming the file, the key and near misses.

    `tag`: the discriminator value when `model` was validated as a member of a tagged
    union, whose errors start with it.
    """
    out = []
    where = f" {context}" if context else ""
    for err in exc.errors():
        loc = tuple(err["loc"])
        if tag is not None and loc[:1] == (tag,):
            loc = loc[1:]
        key = _key(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            owner = _submodel(model, loc)
            hint = ""
            if owner is not None:
                close = difflib.get_close_matches(str(loc[-1]), _model_keys(owner), n=1)
                if close:
                    hint = f"; did you mean '{close[0]}'?"
            parent = f" {_key(loc[:-1])}" if len(loc) > 1 else ""
            out.append(ConfigError(f"unknown key '{loc[-1]}' in {file}{where}{parent}{hint}"))
            continue
        msg = _plain_words(err)
        out.append(ConfigError(msg, file=f"{file}{where}", key=key))
    return out


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def find_files(base: Path, patterns: list[str]) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        for p in sorted(glob.glob(full)):
            path = Path(p)
            is_rule_file = path.suffix == ".toml" and not path.name.endswith(".test.toml")
            if is_rule_file and path.is_file() and path not in found:
                found.append(path)
    return found


ENV_OVERRIDES = (
    ("ALERTD_REDIS_URL", "redis", "url"),
    ("ALERTD_LOG_LEVEL", "logging", "level"),
    ("ALERTD_HTTP_LISTEN", "http", "listen"),
)


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Apply ALERTD_* overrides; returns key ("redis.url") -> the variable that set it."""
    applied: dict[str, str] = {}
    for var, section, key in ENV_OVERRIDES:
        value = env.get(var)
        if value:
            sect = raw.setdefault(section, {})
            if isinstance(sect, dict):
                sect[key] = value.lower() if var == "ALERTD_LOG_LEVEL" else value
                applied[f"{section}.{key}"] = var
    return applied


def env_source(key: str, env: Mapping[str, str] | None = None) -> str | None:
    """The ALERTD_* variable that overrides `key` ("redis.url") in `env`, if one does."""
    env = os.environ if env is None else env
    return next(
        (var for var, sect, k in ENV_OVERRIDES if f"{sect}.{k}" == key and env.get(var)), None
    )


def _blame_env(errors: list[ConfigError], applied: Mapping[str, str]) -> list[ConfigError]:
    """Errors in a value an ALERTD_* variable set name the variable, not the file."""
    return [
        ConfigError(e.message, file=f"environment variable {applied[e.key]}")
        if e.key is not None and e.key in applied
        else e
        for e in errors
    ]


def _check_rule_env(data: dict[str, Any], public: frozenset[str], shown: str) -> None:
    """Refuse `${VAR}` in rule templates and labels unless VAR is in `[env] public`."""
    errors = []
    rules = data.get("rules")
    for i, entry in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(entry, dict):
            continue
        label = f"rule {entry.get('name', f'#{i + 1}')}"
        texts = [(key, entry.get(key)) for key in RULE_TEMPLATES]
        labels = entry.get("labels")
        if isinstance(labels, dict):
            texts += [(f"labels.{k}", v) for k, v in labels.items()]
        for key, text in texts:
            for var in env_refs(text) if isinstance(text, str) else []:
                if var not in public:
                    errors.append(
                        ConfigError(
                            f"${{{var}}} would show the environment variable {var} to every "
                            "receiver; list it in [env] public in alertd.toml if it is not a "
                            "secret",
                            file=shown,
                            key=f"{label}.{key}",
                        )
                    )
    if errors:
        raise ConfigErrors(errors)


def load_rules(
    paths: list[Path],
    base: Path,
    env: Mapping[str, str],
    public_env: frozenset[str] = frozenset(),
) -> tuple[list[Rule], list[ConfigError], dict[str, float]]:
    rules: list[Rule] = []
    errors: list[ConfigError] = []
    files: dict[str, float] = {}
    seen: dict[str, str] = {}
    for path in paths:
        shown = _rel(path, base)
        files[str(path)] = path.stat().st_mtime
        try:
            raw = _read_toml(
                path, shown, env, partial(_check_rule_env, public=public_env, shown=shown)
            )
            rule_file = RuleFile.model_validate(raw)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
            continue
        except ConfigError as exc:
            errors.append(exc)
            continue
        except ValidationError as exc:
            errors.extend(validation_errors(exc, RuleFile, shown))
            continue
        for i, entry in enumerate(rule_file.rules):
            label = f"rule {entry.get('name', f'#{i + 1}')}"
            try:
                spec = RuleSpec.model_validate(entry)
            except ValidationError as exc:
                errors.extend(validation_errors(exc, RuleSpec, shown, label))
                continue
            if spec.name in seen:
                errors.append(
                    ConfigError(
                        f"duplicate rule name (also in {seen[spec.name]})",
                        file=shown,
                        key=f"{label}.name",
                    )
                )
                continue
            seen[spec.name] = shown
            rules.append(Rule(spec=spec, file=shown, match=parse_matchers(spec.match)))
    return rules, errors, files


def _load_channels(
    settings: Settings, paths: list[Path], base: Path, config_name: str, env: Mapping[str, str]
) -> tuple[dict[str, ChannelConfig], dict[str, str], list[ConfigError], dict[str, float]]:
    raw_channels: list[tuple[str, str, Any]] = [
        (name, config_name, body) for name, body in settings.channels.items()
    ]
    errors: list[ConfigError] = []
    files: dict[str, float] = {}
    for path in paths:
        shown = _rel(path, base)
        files[str(path)] = path.stat().st_mtime
        try:
            raw = _read_toml(path, shown, env)
        except ConfigError as exc:
            errors.append(exc)
            continue
        unknown = [k for k in raw if k != "channels"]
        for k in unknown:
            errors.append(
                ConfigError(
                    f"unknown key '{k}' in {shown}; channel files hold [channels.NAME] tables"
                )
            )
        channels = raw.get("channels", {})
        if not isinstance(channels, dict):
            errors.append(ConfigError("must be a table of channels", file=shown, key="channels"))
            continue
        raw_channels.extend((name, shown, body) for name, body in channels.items())

    result: dict[str, ChannelConfig] = {}
    origin: dict[str, str] = {}
    for name, shown, body in raw_channels:
        label = f"channel {name}"
        if name in result:
            errors.append(
                ConfigError(f"duplicate channel (also in {origin[name]})", file=shown, key=label)
            )
            continue
        if not isinstance(body, dict):
            errors.append(ConfigError("must be a table", file=shown, key=label))
            continue
        kind = body.get("type")
        model = CONFIG_MODELS.get(str(kind))
        if model is None:
            known = ", ".join(sorted(CONFIG_MODELS))
            close = difflib.get_close_matches(str(kind), list(CONFIG_MODELS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            errors.append(
                ConfigError(
                    f"unknown channel type {kind!r} (one of {known}){hint}",
                    file=f"{shown} {label}",
                    key="type",
                )
            )
            continue
        try:
            result[name] = parse_channel_config(body)
            origin[name] = shown
        except ValidationError as exc:
            errors.extend(validation_errors(exc, model, shown, label, tag=str(kind)))
    if "log" not in result:
        result["log"] = parse_channel_config({"type": "log"})
        origin["log"] = "(built in)"
    errors += _load_templates(result, origin, base)
    return result, origin, errors, files


def _load_templates(
    channels: dict[str, ChannelConfig], origin: Mapping[str, str], base: Path
) -> list[ConfigError]:
    """Point each channel's `template` at its file (relative to the config's folder) and
    render it on a sample notification: a template that would fail is a load error,
    naming the template's file and line."""
    errors = []
    data = template_data(sample_notification(), "http://alertd.example.com:9099")
    for name, cfg in list(channels.items()):
        if cfg.template is None or cfg.template_form is None:
            continue
        path = Path(cfg.template) if os.path.isabs(cfg.template) else base / cfg.template
        try:
            check_template(path, cfg.template, cfg.template_form, data)
        except TemplateFailure as exc:
            where = f"{origin.get(name, '')} channel {name}".strip()
            errors.append(ConfigError(str(exc), file=where, key="template"))
            continue
        # Not in `files` (the watched ones): an edited template is taken on SIGHUP or
        # POST /api/v1/reload, where its new mtime makes the channel be rebuilt.
        channels[name] = cfg.with_template_file(str(path), path.stat().st_mtime)
    return errors


def _unknown_channel(name: str, channels: Mapping[str, ChannelConfig]) -> str:
    close = difflib.get_close_matches(name, list(channels), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown channel '{name}'{hint} (channels: {', '.join(sorted(channels))})"


def _check_routes(
    settings: Settings, channels: Mapping[str, ChannelConfig], config_name: str
) -> list[ConfigError]:
    errors = []
    intervals = [t.name for t in settings.time_intervals]
    for i, route in enumerate(settings.routes, start=1):
        key = f"routes #{i}"
        errors += [
            ConfigError(_unknown_channel(ch, channels), file=config_name, key=f"{key}.channels")
            for ch in route.channels
            if ch not in channels
        ]
        errors += [
            ConfigError(f"unknown time interval '{n}'", file=config_name, key=f"{key}.mute_during")
            for n in route.mute_during
            if n not in intervals
        ]
    errors += [
        ConfigError(f"duplicate time interval '{dup}'", file=config_name, key="time_intervals")
        for dup in sorted({n for n in intervals if intervals.count(n) > 1})
    ]
    return errors


def _check_rules(
    rules: list[Rule], channels: Mapping[str, ChannelConfig]
) -> tuple[list[ConfigError], list[str]]:
    errors = []
    warnings = []
    for rule in rules:
        where = f"{rule.file} rule {rule.name}"
        errors += [
            ConfigError(_unknown_channel(ch, channels), file=where, key="channels")
            for ch in rule.spec.channels or []
            if ch not in channels
        ]
        known = {"value", "threshold", "severity", "alertname", "rule"}
        known |= {*rule.spec.group_by, *rule.spec.labels}
        for key in ("summary", "description", "runbook_url"):
            warnings += [
                f"{where}: {key} uses {{{fname}}}, which no alert of this rule has; "
                "it renders empty"
                for fname in template_fields(getattr(rule.spec, key))
                if fname not in known
            ]
    return errors, warnings


def _check_fallbacks(
    channels: Mapping[str, ChannelConfig], origin: Mapping[str, str]
) -> list[ConfigError]:
    errors = []
    for name, chan in channels.items():
        where = f"{origin.get(name, '')} channel {name}".strip()
        if chan.fallback == name:
            errors.append(
                ConfigError("a channel cannot fall back to itself", file=where, key="fallback")
            )
        elif chan.fallback is not None and chan.fallback not in channels:
            errors.append(
                ConfigError(_unknown_channel(chan.fallback, channels), file=where, key="fallback")
            )
    return errors


def _config_path(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[Path, str]:
    """The main file to read, and where its name came from (for "not found")."""
    if path:
        return Path(path), "--config"
    if env.get("ALERTD_CONFIG"):
        return Path(env["ALERTD_CONFIG"]), "ALERTD_CONFIG"
    return Path(DEFAULT_CONFIG_PATH), ""


def _not_found(cfg_path: Path, source: str) -> ConfigError:
    if source == "ALERTD_CONFIG":
        return ConfigError(
            f"file not found (named by environment variable ALERTD_CONFIG, "
            f"looked in {Path.cwd()}); set it to the path of alertd.toml",
            file=str(cfg_path),
        )
    if source:
        return ConfigError(
            f"file not found (looked in {cfg_path.absolute().parent}); check the --config path",
            file=str(cfg_path),
        )
    return ConfigError(
        f"file not found in {Path.cwd()}; run alertd where alertd.toml is, "
        "or pass --config PATH (or set ALERTD_CONFIG)",
        file=str(cfg_path),
    )


def _main_settings(
    path: str | os.PathLike[str] | None, env: Mapping[str, str], missing_ok: bool = False
) -> tuple[Path, Settings]:
    """alertd.toml alone, with the ALERTD_* overrides; ConfigErrors when it is wrong."""
    cfg_path, source = _config_path(path, env)
    config_name = str(cfg_path)
    try:
        raw = _read_toml(cfg_path, config_name, env)
    except ConfigError as exc:
        if exc.message != "file not found":
            raise ConfigErrors([exc]) from None
        if not (missing_ok and not source):
            raise ConfigErrors([_not_found(cfg_path, source)]) from None
        raw = {}
    applied = _apply_env_overrides(raw, env)
    try:
        return cfg_path, Settings.model_validate(raw)
    except ValidationError as exc:
        errors = validation_errors(exc, Settings, config_name)
        raise ConfigErrors(_blame_env(errors, applied)) from None


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Only alertd.toml's settings (what `publish` needs: the Redis URL and stream).

    With no file named and none in the working directory, the defaults and the
    ALERTD_* variables: a producer's machine need not hold the rules and channels.
    """
    env = os.environ if env is None else env
    return _main_settings(path, env, missing_ok=True)[1]


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load and validate everything; ConfigErrors with every problem found."""
    env = os.environ if env is None else env
    cfg_path, settings = _main_settings(path, env)
    config_name = str(cfg_path)
    base = cfg_path.parent

    files = {str(cfg_path): cfg_path.stat().st_mtime}
    rules, errors, rule_files = load_rules(
        find_files(base, settings.paths.rules), base, env, frozenset(settings.env.public)
    )
    channels, origin, ch_errors, ch_files = _load_channels(
        settings, find_files(base, settings.paths.channels), base, config_name, env
    )
    errors.extend(ch_errors)
    files.update(rule_files)
    files.update(ch_files)
    rule_errors, warnings = _check_rules(rules, channels)
    errors += _check_routes(settings, channels, config_name) + rule_errors
    errors += _check_fallbacks(channels, origin)
    if errors:
        raise ConfigErrors(errors)
    return Config(
        path=cfg_path,
        settings=settings,
        rules=rules,
        channels=channels,
        channel_files=origin,
        warnings=warnings,
        files=files,
    )
