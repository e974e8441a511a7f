"""Silences: creating, listing, expiring and matching them (SPEC 3 and 6)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from alertd.errors import NotFoundError
from alertd.model import parse_rfc3339
from alertd.silences import Silence, SilenceStore, silence_from_request, silenced_by

NOW_S = 1_795_456_800.0  # 2026-11-23T18:00:00Z
HOUR_S = 3600.0
DAY_S = 86400.0
PREFIX = "test:"


def make(
    matchers: dict[str, str] | None = None,
    starts_at: float = NOW_S,
    ends_at: float = NOW_S + HOUR_S,
    sid: str = "S1",
) -> Silence:
    return Silence(
        id=sid,
        matchers=matchers or {"service": "api"},
        starts_at=starts_at,
        ends_at=ends_at,
        created_by="alice",
        comment="deploy",
        created_at=NOW_S,
    )


def request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "matchers": {"service": "api"},
        "duration": "2h",
        "createdBy": "alice",
        "comment": "deploying",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def refused(body: Any) -> str:
    with pytest.raises(ValueError, match=r".") as info:
        silence_from_request(body, NOW_S)
    return str(info.value)


class TestRequest:
    """A silence can be given a duration or explicit start and end times."""

    def test_duration_starts_now(self) -> None:
        """`duration` silences from now for that long."""
        silence = silence_from_request(request(), NOW_S)
        actual = (silence.starts_at, silence.ends_at, silence.created_at, silence.created_by)
        assert (NOW_S, NOW_S + 2 * HOUR_S, NOW_S, "alice") == actual
        assert ({"service": "api"}, "deploying") == (silence.matchers, silence.comment)
        assert 26 == len(silence.id)

    def test_starts_at_and_ends_at(self) -> None:
        """`startsAt`/`endsAt` are RFC 3339 times, with Z or an offset."""
        body = request(
            duration=None, startsAt="2026-11-24T09:00:00Z", endsAt="2026-11-24T12:00:00+01:00"
        )
        silence = silence_from_request(body, NOW_S)
        expected = (parse_rfc3339("2026-11-24T09:00:00Z"), parse_rfc3339("2026-11-24T11:00:00Z"))
        assert expected == (silence.starts_at, silence.ends_at)

    def test_ends_at_alone_starts_now(self) -> None:
        """Without `startsAt` the silence starts at once."""
        silence = silence_from_request(request(duration=None, endsAt="2026-11-23T19:00:00Z"), NOW_S)
        assert (NOW_S, NOW_S + HOUR_S) == (silence.starts_at, silence.ends_at)

    def test_starts_at_with_duration(self) -> None:
        """A scheduled start plus a duration ends that long after the start."""
        silence = silence_from_request(request(startsAt="2026-11-24T02:00:00Z"), NOW_S)
        start = parse_rfc3339("2026-11-24T02:00:00Z")
        assert (start, start + 2 * HOUR_S) == (silence.starts_at, silence.ends_at)

    def test_comment_is_optional(self) -> None:
        """Leaving out `comment` stores an empty one."""
        assert "" == silence_from_request(request(comment=None), NOW_S).comment

    def test_ids_are_unique(self) -> None:
        """Two silences created in the same millisecond get different ids."""
        ids = {silence_from_request(request(), NOW_S).id for _ in range(50)}
        assert 50 == len(ids)


class TestRequestValidation:
    """A bad request is refused with one clear line per problem."""

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"matchers": {}}, "matchers must be a non-empty object"),
            ({"matchers": None}, "matchers must be a non-empty object"),
            ({"matchers": ["service=api"]}, "matchers must be a non-empty object"),
            ({"matchers": {"service": "~(api"}}, "invalid regular expression"),
            ({"matchers": {"service": 3}}, "matcher service: the value must be a string"),
            ({"matchers": {"bad-name": "x"}}, "'bad-name' is not a valid label name"),
            ({"matchers": {"env": "~.*"}}, "at least one matcher must not match the empty"),
            ({"matchers": {"env": "!prod"}}, "at least one matcher must not match the empty"),
            ({"matchers": {f"l{i}": "x" for i in range(65)}}, "at most 64 matchers"),
            ({"matchers": {"service": "x" * 1025}}, "longer than 1024"),
            ({"createdBy": None}, "createdBy is required"),
            ({"createdBy": "   "}, "createdBy must not be empty"),
            ({"createdBy": 7}, "createdBy must be a string"),
            ({"comment": "x" * 1025}, "comment is longer than 1024"),
            ({"duration": "2 hours"}, "invalid duration '2 hours'"),
            ({"duration": "0s"}, "duration must be more than 0s"),
            ({"duration": 7200}, "duration must be a string"),
            ({"duration": None}, "give duration (e.g. '2h') or endsAt"),
            ({"endsAt": "2026-11-23T20:00:00Z"}, "either duration or endsAt, not both"),
            (
                {
                    "duration": None,
                    "startsAt": "2026-11-24T10:00:00Z",
                    "endsAt": "2026-11-24T09:00:00Z",
                },
                "endsAt must be after startsAt",
            ),
            ({"duration": None, "endsAt": "2026-11-23T17:00:00Z"}, "endsAt must be in the future"),
            ({"startsAt": "2026-11-23T10:00:00Z"}, "startsAt + duration must be in the future"),
            ({"duration": None, "endsAt": "tomorrow"}, "endsAt 'tomorrow' is not an RFC 3339"),
            ({"startsAt": "2026-11-24T10:00:00"}, "startsAt '2026-11-24T10:00:00' is not"),
            ({"duration": "99999999w"}, "too far in the future"),
            ({"matcher": {"a": "b"}}, "unknown field(s) matcher"),
        ],
    )
    def test_refused(self, overrides: dict[str, Any], message: str) -> None:
        """Each problem is named in the error."""
        body = request(**{k: v for k, v in overrides.items() if v is not None})
        for key, value in overrides.items():
            if value is None:
                body.pop(key, None)
        assert message in refused(body)

    def test_every_problem_is_reported(self) -> None:
        """Several problems come back together, joined by '; '."""
        message = refused({"matchers": {}, "duration": "soon"})
        expected = [
            "matchers must be a non-empty object of label -> value",
            "createdBy is required",
            "duration: invalid duration 'soon' (use e.g. '500ms', '30s', '5m', '4h', '1d')",
        ]
        assert expected == message.split("; ")

    def test_every_bad_regex_is_reported(self) -> None:
        """Each invalid regular expression is named, not only the first."""
        message = refused(request(matchers={"service": "~(api", "env": "!~[prod"}))
        expected = [
            "matcher invalid regular expression '(api' for service",
            "matcher invalid regular expression '[prod' for env",
        ]
        assert expected == [part.split(":")[0] for part in message.split("; ")]

    def test_body_must_be_an_object(self) -> None:
        """A JSON array or string is refused outright."""
        assert "the body must be a JSON object" == refused(["matchers"])


class TestLifecycle:
    """A silence is pending before its start, active until its end, then expired."""

    def test_states_by_time(self) -> None:
        """The state follows `now`; the end itself is already expired."""
        silence = make(starts_at=NOW_S + HOUR_S, ends_at=NOW_S + 2 * HOUR_S)
        times = [NOW_S, NOW_S + HOUR_S, NOW_S + 2 * HOUR_S - 1, NOW_S + 2 * HOUR_S]
        assert ["pending", "active", "active", "expired"] == [silence.state(t) for t in times]

    def test_api_shape(self) -> None:
        """The API shows camelCase keys, RFC 3339 times and the state as `status`."""
        silence = make(matchers={"service": "api", "env": "~prod.*"})
        expected = {
            "id": "S1",
            "matchers": {"service": "api", "env": "~prod.*"},
            "startsAt": "2026-11-23T18:00:00.000Z",
            "endsAt": "2026-11-23T19:00:00.000Z",
            "createdBy": "alice",
            "comment": "deploy",
            "createdAt": "2026-11-23T18:00:00.000Z",
            "status": "active",
        }
        assert expected == silence.to_api(NOW_S)
        assert "expired" == silence.to_api(NOW_S + HOUR_S)["status"]


class TestMatching:
    """A silence mutes the alerts whose labels match every one of its matchers."""

    @pytest.mark.parametrize(
        ("matchers", "labels", "expected"),
        [
            ({"service": "api"}, {"service": "api", "env": "prod"}, True),
            ({"service": "api"}, {"service": "web"}, False),
            ({"service": "api", "env": "prod"}, {"service": "api"}, False),
            ({"service": "~api|web"}, {"service": "web"}, True),
            ({"service": "~api|web"}, {"service": "api2"}, False),
            ({"env": "~prod.*"}, {"env": "production"}, True),
            ({"service": "api", "env": "!prod"}, {"service": "api", "env": "dev"}, True),
            ({"service": "api", "env": "!prod"}, {"service": "api", "env": "prod"}, False),
            ({"service": "api", "env": "!prod"}, {"service": "api"}, True),
            ({"service": "api", "host": "!~canary.*"}, {"service": "api", "host": "web-1"}, True),
            (
                {"service": "api", "host": "!~canary.*"},
                {"service": "api", "host": "canary-2"},
                False,
            ),
        ],
    )
    def test_matchers(
        self, matchers: dict[str, str], labels: dict[str, str], expected: bool
    ) -> None:
        """Equality, full-match regex and their negations, as in routes."""
        assert expected == make(matchers=matchers).matches(labels)

    def test_silenced_by_lists_active_matching_silences(self) -> None:
        """Only silences active at `now` that match count; pending and expired do not."""
        active = make(sid="active")
        other = make(sid="other", matchers={"service": "web"})
        pending = make(sid="pending", starts_at=NOW_S + 60)
        expired = make(sid="expired", starts_at=NOW_S - HOUR_S, ends_at=NOW_S)
        wide = make(sid="wide", matchers={"env": "~prod.*"})
        labels = {"service": "api", "env": "prod"}
        silences = [active, other, pending, expired, wide]
        assert ["active", "wide"] == silenced_by(labels, silences, NOW_S)
        assert ["active", "pending", "wide"] == silenced_by(labels, silences, NOW_S + 60)


@pytest.fixture
def store(redis: aioredis.Redis) -> SilenceStore:
    return SilenceStore(redis, PREFIX)


class TestStore:
    """Silences live in Redis, shared by every replica."""

    async def test_create_and_list(self, store: SilenceStore, redis: aioredis.Redis) -> None:
        """What was created is listed back, ordered by start time."""
        late = make(sid="late", starts_at=NOW_S + HOUR_S, ends_at=NOW_S + 2 * HOUR_S)
        early = make(sid="early")
        assert "late" == await store.create(late)
        await store.create(early)
        assert [early, late] == await store.list(NOW_S)
        assert 2 == await redis.hlen(f"{PREFIX}silences")

    async def test_another_replica_sees_it(
        self, store: SilenceStore, redis: aioredis.Redis
    ) -> None:
        """A silence made through one daemon is listed by another."""
        silence = silence_from_request(request(), NOW_S)
        await store.create(silence)
        assert [silence] == await SilenceStore(redis, PREFIX).list(NOW_S)

    async def test_list_without_expired(self, store: SilenceStore) -> None:
        """Expired silences can be left out of the list."""
        old = make(sid="old", starts_at=NOW_S - 2 * HOUR_S, ends_at=NOW_S - HOUR_S)
        current = make(sid="current")
        await store.create(old)
        await store.create(current)
        assert [current] == await store.list(NOW_S, include_expired=False)
        assert [old, current] == await store.list(NOW_S)

    async def test_expire_active(self, store: SilenceStore) -> None:
        """Expiring ends the silence now, and the end is stored."""
        await store.create(make())
        expired = await store.expire("S1", NOW_S + 60)
        assert (NOW_S, NOW_S + 60, "expired") == (
            expired.starts_at,
            expired.ends_at,
            expired.state(NOW_S + 60),
        )
        assert [expired] == await store.list(NOW_S + 60)

    async def test_expire_pending(self, store: SilenceStore) -> None:
        """A pending silence that is expired never starts."""
        await store.create(make(starts_at=NOW_S + HOUR_S, ends_at=NOW_S + 2 * HOUR_S))
        expired = await store.expire("S1", NOW_S)
        assert (NOW_S, NOW_S, "expired") == (
            expired.starts_at,
            expired.ends_at,
            expired.state(NOW_S),
        )

    async def test_expire_twice_keeps_first_end(self, store: SilenceStore) -> None:
        """Expiring an already expired silence changes nothing."""
        await store.create(make())
        first = await store.expire("S1", NOW_S + 60)
        assert first == await store.expire("S1", NOW_S + 120)

    async def test_expire_unknown(self, store: SilenceStore) -> None:
        """An unknown id is NotFoundError (404 in the API)."""
        with pytest.raises(NotFoundError, match="NOPE"):
            await store.expire("NOPE", NOW_S)

    async def test_cleanup_after_retention(self, store: SilenceStore) -> None:
        """Silences expired more than a day ago are deleted; the rest are kept."""
        long_gone = make(sid="gone", starts_at=NOW_S - 3 * DAY_S, ends_at=NOW_S - DAY_S - 1)
        recent = make(sid="recent", starts_at=NOW_S - 2 * HOUR_S, ends_at=NOW_S - HOUR_S)
        current = make(sid="current")
        for silence in (long_gone, recent, current):
            await store.create(silence)
        assert 1 == await store.cleanup(NOW_S)
        assert ["recent", "current"] == [s.id for s in await store.list(NOW_S)]
        assert 0 == await store.cleanup(NOW_S)
        assert 1 == await store.cleanup(NOW_S, retention_s=HOUR_S)

    async def test_unreadable_entry_is_skipped(
        self, store: SilenceStore, redis: aioredis.Redis
    ) -> None:
        """A corrupt entry in Redis does not hide the other silences."""
        await store.create(make())
        await redis.hset(f"{PREFIX}silences", "junk", "{not json")
        assert ["S1"] == [s.id for s in await store.list(NOW_S)]
        assert ["S1"] == [s.id for s in await store.active(NOW_S)]
        with pytest.raises(NotFoundError):
            await store.expire("junk", NOW_S)


class TestActiveCache:
    """The flusher's view of active silences is at most one second old."""

    async def test_only_active(self, store: SilenceStore) -> None:
        """Pending and expired silences are not active."""
        await store.create(make(sid="active"))
        await store.create(make(sid="pending", starts_at=NOW_S + 60, ends_at=NOW_S + HOUR_S))
        await store.create(make(sid="expired", starts_at=NOW_S - HOUR_S, ends_at=NOW_S))
        assert ["active"] == [s.id for s in await store.active(NOW_S)]

    async def test_other_replica_seen_within_a_second(
        self, store: SilenceStore, redis: aioredis.Redis
    ) -> None:
        """A silence made elsewhere applies here at most one second later."""
        assert [] == await store.active(NOW_S)
        await SilenceStore(redis, PREFIX).create(make())
        assert [] == await store.active(NOW_S + 0.5)
        assert ["S1"] == [s.id for s in await store.active(NOW_S + 1.0)]

    async def test_own_create_applies_at_once(self, store: SilenceStore) -> None:
        """A silence made through this daemon applies immediately."""
        assert [] == await store.active(NOW_S)
        await store.create(make())
        assert ["S1"] == [s.id for s in await store.active(NOW_S)]

    async def test_own_expire_applies_at_once(self, store: SilenceStore) -> None:
        """Expiring through this daemon lifts the silence immediately."""
        await store.create(make())
        assert ["S1"] == [s.id for s in await store.active(NOW_S)]
        await store.expire("S1", NOW_S + 0.1)
        assert [] == await store.active(NOW_S + 0.2)

    async def test_cached_silences_start_and_end_on_time(self, store: SilenceStore) -> None:
        """Within the cached second, silences still start and end at their times."""
        await store.create(make(sid="starting", starts_at=NOW_S + 0.5, ends_at=NOW_S + HOUR_S))
        await store.create(make(sid="ending", starts_at=NOW_S - HOUR_S, ends_at=NOW_S + 0.5))
        assert ["ending"] == [s.id for s in await store.active(NOW_S)]
        assert ["starting"] == [s.id for s in await store.active(NOW_S + 0.6)]

    async def test_clock_going_back_refetches(
        self, store: SilenceStore, redis: aioredis.Redis
    ) -> None:
        """A clock that steps backwards does not keep a stale view."""
        await store.active(NOW_S)
        await SilenceStore(redis, PREFIX).create(make(starts_at=NOW_S - HOUR_S))
        assert ["S1"] == [s.id for s in await store.active(NOW_S - 0.5)]
