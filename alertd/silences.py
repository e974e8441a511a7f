"""Silences: operator-made mutes for alerts whose labels match, for a time.

Stored in one Redis hash (`<key_prefix>silences`: id -> JSON) shared by every
replica. A silence is `pending` before `starts_at`, `active` until `ends_at`,
then `expired`; expired silences are kept a day for the record, then removed.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog

from alertd.durations import parse_duration
from alertd.errors import NotFoundError
from alertd.matchers import Matcher, matches_all, parse_matcher, parse_matchers
from alertd.model import new_id, parse_rfc3339, rfc3339
from alertd.settings import LABEL_RE
from alertd.storage import keys

log = structlog.get_logger("alertd.silences")

MAX_MATCHERS = 64
MAX_STRING_CHARS = 1024
ACTIVE_CACHE_S = 1.0
_LAST_TS = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the last time RFC 3339 can write
_REQUEST_KEYS = frozenset({"matchers", "duration", "startsAt", "endsAt", "createdBy", "comment"})


@dataclass(frozen=True)
class Silence:
    """Mutes every alert whose labels match all `matchers` between starts_at and ends_at."""

    id: str
    matchers: dict[str, str]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float
    # Further matchers, on labels `matchers` already names: Alertmanager's API v2
    # allows several per label (`env=~"prod.*"`, `env!="prod-eu"`); (label, spec) pairs.
    more_matchers: tuple[tuple[str, str], ...] = ()

    def state(self, now: float) -> str:
        if self.starts_at > now:
            return "pending"
        if self.ends_at <= now:
            return "expired"
        return "active"

    @cached_property
    def compiled(self) -> tuple[Matcher, ...]:
        more = tuple(parse_matcher(name, spec) for name, spec in self.more_matchers)
        return parse_matchers(self.matchers) + more

    def matcher_pairs(self) -> list[tuple[str, str]]:
        """Every matcher as (label, spec), those of one label together."""
        return [*self.matchers.items(), *self.more_matchers]

    def matchers_view(self) -> dict[str, str | list[str]]:
        """label -> spec; a label matched more than once gets the list of its specs."""
        view: dict[str, str | list[str]] = dict(self.matchers)
        for name, spec in self.more_matchers:
            first = view[name]
            view[name] = [*([first] if isinstance(first, str) else first), spec]
        return view

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.compiled, labels)

    def to_api(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": self.matchers_view(),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
            "createdAt": rfc3339(self.created_at),
            "status": self.state(now),
        }

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "id": self.id,
            "matchers": self.matchers,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": self.created_at,
        }
        if self.more_matchers:
            d["more_matchers"] = [list(pair) for pair in self.more_matchers]
        return orjson.dumps(d).decode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Silence:
        d = orjson.loads(raw)
        return cls(
            id=str(d["id"]),
            matchers={str(k): str(v) for k, v in d["matchers"].items()},
            starts_at=float(d["starts_at"]),
            ends_at=float(d["ends_at"]),
            created_by=str(d.get("created_by", "")),
            comment=str(d.get("comment", "")),
            created_at=float(d.get("created_at", d["starts_at"])),
            more_matchers=tuple((str(n), str(v)) for n, v in d.get("more_matchers") or ()),
        )


# --- the API's request body ------------------------------------------------------


def _check_matchers(raw: object, errors: list[str]) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not raw:
        errors.append("matchers must be a non-empty object of label -> value")
        return {}
    return dict(check_matcher_pairs(list(raw.items()), errors))


def check_matcher_pairs(
    pairs: list[tuple[object, object]], errors: list[str]
) -> list[tuple[str, str]]:
    """The (label, spec) pairs that are valid matchers; each problem appended to `errors`."""
    if len(pairs) > MAX_MATCHERS:
        errors.append(f"at most {MAX_MATCHERS} matchers, got {len(pairs)}")
        return []
    matchers: list[tuple[str, str]] = []
    compiled: list[Matcher] = []
    for name, spec in pairs:
        if not isinstance(name, str) or not LABEL_RE.match(name) or len(name) > MAX_STRING_CHARS:
            errors.append(f"matcher name {name!r} is not a valid label name")
        elif not isinstance(spec, str):
            errors.append(f"matcher {name}: the value must be a string")
        elif len(spec) > MAX_STRING_CHARS:
            errors.append(f"matcher {name}: the value is longer than {MAX_STRING_CHARS} characters")
        else:
            try:
                compiled.append(parse_matcher(name, spec))
            except ValueError as exc:
                errors.append(f"matcher {exc}")
            matchers.append((name, spec))
    if pairs and len(compiled) == len(pairs) and matches_all(tuple(compiled), {}):
        # As Alertmanager: such a silence would also mute every alert without these labels.
        errors.append("at least one matcher must not match the empty string")
    return matchers


def split_matchers(
    pairs: list[tuple[str, str]],
) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """(label, spec) pairs as a Silence holds them: the first per label, then the others."""
    first: dict[str, str] = {}
    more: list[tuple[str, str]] = []
    for name, spec in pairs:
        if name in first:
            more.append((name, spec))
        else:
            first[name] = spec
    return first, tuple(more)


def _optional_str(body: Mapping[str, Any], key: str, errors: list[str]) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(f"{key} must be a string")
        return None
    if len(value) > MAX_STRING_CHARS:
        errors.append(f"{key} is longer than {MAX_STRING_CHARS} characters")
        return None
    return value


def _timestamp(body: Mapping[str, Any], key: str, errors: list[str]) -> float | None:
    text = _optional_str(body, key, errors)
    if text is None:
        return None
    try:
        ts = parse_rfc3339(text)
    except (ValueError, OverflowError):
        errors.append(f"{key} {text!r} is not an RFC 3339 time (e.g. 2026-11-23T18:00:00Z)")
        return None
    if not 0 <= ts <= _LAST_TS:
        errors.append(f"{key} {text!r} is out of range")
        return None
    return ts


def _ends_at(body: Mapping[str, Any], starts_at: float, errors: list[str]) -> float | None:
    """From `duration` (after starts_at) or `endsAt`: exactly one of them."""
    if body.get("duration") is not None and body.get("endsAt") is not None:
        errors.append("give either duration or endsAt, not both")
        return None
    if body.get("duration") is None:
        if body.get("endsAt") is None:
            errors.append("give duration (e.g. '2h') or endsAt")
        return _timestamp(body, "endsAt", errors)
    duration = _optional_str(body, "duration", errors)
    if duration is None:
        return None
    try:
        length_s = parse_duration(duration).total_seconds()
    except (ValueError, OverflowError) as exc:
        errors.append(f"duration: {exc}")
        return None
    if length_s <= 0:
        errors.append("duration must be more than 0s")
        return None
    return starts_at + length_s


def _created_by(body: Mapping[str, Any], errors: list[str]) -> str:
    if body.get("createdBy") is None:
        errors.append("createdBy is required")
        return ""
    created_by = (_optional_str(body, "createdBy", errors) or "").strip()
    if not created_by and isinstance(body["createdBy"], str):
        errors.append("createdBy must not be empty")
    return created_by


def silence_from_request(body: Mapping[str, Any], now: float) -> Silence:
    """A new silence from a `POST /api/v1/silences` body; ValueError naming every problem."""
    if not isinstance(body, Mapping):
        raise ValueError("the body must be a JSON object")
    errors: list[str] = []
    unknown = sorted(str(k) for k in body if k not in _REQUEST_KEYS)
    if unknown:
        errors.append(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_REQUEST_KEYS))}"
        )
    matchers = _check_matchers(body.get("matchers"), errors)
    created_by = _created_by(body, errors)
    comment = _optional_str(body, "comment", errors) or ""
    starts_at = _timestamp(body, "startsAt", errors)
    starts_at = now if starts_at is None else starts_at
    ends_at = _ends_at(body, starts_at, errors)
    if ends_at is not None:
        end = "endsAt" if body.get("duration") is None else "startsAt + duration"
        if ends_at <= now:
            errors.append(f"{end} must be in the future")
        elif ends_at <= starts_at:
            errors.append("endsAt must be after startsAt")
        elif ends_at > _LAST_TS:
            errors.append("the silence ends too far in the future")
    if errors or ends_at is None:
        raise ValueError("; ".join(errors))
    return Silence(
        id=new_id(now),
        matchers=matchers,
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=created_by,
        comment=comment,
        created_at=now,
    )


# --- storage -------------------------------------------------------------------


class SilenceStore:
    """Silences in Redis, shared by every replica; `active` is cached for at most 1 s."""

    def __init__(self, redis: aioredis.Redis, key_prefix: str) -> None:
        self._redis = redis
        self._key = keys.silences(key_prefix)
        # (fetched at, silences not yet expired then); a generation guards against a
        # fetch that started before a create/expire overwriting the invalidation.
        self._cache: tuple[float, builtins.list[Silence]] | None = None
        self._generation = 0

    def _invalidate(self) -> None:
        self._cache = None
        self._generation += 1

    async def create(self, silence: Silence) -> str:
        await self._redis.hset(self._key, silence.id, silence.to_json())
        self._invalidate()
        return silence.id

    async def _all(self) -> builtins.list[Silence]:
        # Bytes or str, whichever way the client was made (decode_responses).
        raw: dict[bytes | str, bytes | str] = await self._redis.hgetall(self._key)
        out: builtins.list[Silence] = []
        for sid, data in raw.items():
            try:
                out.append(Silence.from_json(data))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                silence_id = sid.decode(errors="replace") if isinstance(sid, bytes) else sid
                log.warning("silence_unreadable", silence_id=silence_id, error=str(exc))
        return out

    async def list(self, now: float, include_expired: bool = True) -> builtins.list[Silence]:
        silences = await self._all()
        if not include_expired:
            silences = [s for s in silences if s.state(now) != "expired"]
        return sorted(silences, key=lambda s: (s.starts_at, s.id))

    async def get(self, silence_id: str) -> Silence:
        raw = await self._redis.hget(self._key, silence_id)
        if raw is None:
            raise NotFoundError(f"no silence with id {silence_id!r}")
        try:
            return Silence.from_json(raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise NotFoundError(f"silence {silence_id!r} is unreadable") from None

    async def expire(self, silence_id: str, now: float) -> Silence:
        """End a silence now (a pending one never starts); an expired one is left as it is."""
        silence = await self.get(silence_id)
        if silence.state(now) == "expired":
            return silence
        expired = replace(silence, starts_at=min(silence.starts_at, now), ends_at=now)
        await self._redis.hset(self._key, silence_id, expired.to_json())
        self._invalidate()
        return expired

    async def active(self, now: float) -> builtins.list[Silence]:
        cached = self._cache
        if cached is None or not 0 <= now - cached[0] < ACTIVE_CACHE_S:
            generation = self._generation
            current = [s for s in await self._all() if s.state(now) != "expired"]
            cached = (now, current)
            if generation == self._generation:
                self._cache = cached
        return sorted(
            (s for s in cached[1] if s.state(now) == "active"), key=lambda s: (s.starts_at, s.id)
        )

    async def cleanup(self, now: float, retention_s: float = 86400.0) -> int:
        """Delete silences that expired more than `retention_s` ago; how many went."""
        old = [s.id for s in await self._all() if s.ends_at <= now - retention_s]
        if not old:
            return 0
        return int(await self._redis.hdel(self._key, *old))


def silenced_by(labels: Mapping[str, str], silences: Iterable[Silence], now: float) -> list[str]:
    """Ids of the active silences that match `labels`."""
    return [s.id for s in silences if s.state(now) == "active" and s.matches(labels)]
