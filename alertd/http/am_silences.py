"""Silences in Alertmanager's API v2 shape, to and from alertd's (alertd.silences).

Pure: the handlers of alertd.http.v2 read and write the SilenceStore; this
module only converts, and decides how a silence posted with an `id` applies
to the one stored (as Alertmanager does: in place, or expire and replace).
"""

from __future__ import annotations

from datetime import datetime

from alertd.http.am_matchers import object_of, spec_of
from alertd.http.models import GettableSilence, PostableSilence, SilenceMatcher, SilenceStatus
from alertd.model import rfc3339
from alertd.silences import Silence, check_matcher_pairs, split_matchers

_LAST_TS = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def gettable_silence(s: Silence, now: float) -> GettableSilence:
    return GettableSilence(
        id=s.id,
        status=SilenceStatus(state=s.state(now)),
        updatedAt=rfc3339(s.created_at),
        matchers=[SilenceMatcher(**object_of(n, spec)) for n, spec in s.matcher_pairs()],
        startsAt=rfc3339(s.starts_at),
        endsAt=rfc3339(s.ends_at),
        createdBy=s.created_by,
        comment=s.comment,
    )


def listing_order(s: Silence, now: float) -> tuple[int, float]:
    # As Alertmanager lists them: active by end, then pending by start, then expired newest first.
    state = s.state(now)
    if state == "active":
        return 0, s.ends_at
    if state == "pending":
        return 1, s.starts_at
    return 2, -s.ends_at


def _seconds(dt: datetime) -> float:
    return dt.timestamp()


def silence_from_postable(body: PostableSilence, now: float, prev: Silence | None) -> Silence:
    """The silence a v2 body asks for (`prev`: the one its `id` names); ValueError why not."""
    errors: list[str] = []
    pairs = check_matcher_pairs(
        [(m.name, spec_of(m.value, m.isRegex, m.isEqual)) for m in body.matchers], errors
    )
    starts, ends = _seconds(body.startsAt), _seconds(body.endsAt)
    if not 0 <= starts <= _LAST_TS or not 0 <= ends <= _LAST_TS:
        errors.append("startsAt and endsAt must be between 1970 and 9999")
    if ends <= starts:
        errors.append("endsAt must be after startsAt")
    elif ends <= now:
        errors.append("endsAt must be in the future")
    if not body.createdBy.strip():
        errors.append("createdBy must not be empty")
    if len(body.createdBy) > 1024 or len(body.comment) > 1024:
        errors.append("createdBy and comment are at most 1024 characters")
    if errors:
        raise ValueError("; ".join(errors))
    matchers, more = split_matchers(pairs)
    # Answers show times to the millisecond: the same start, read back and sent again.
    kept_start = (
        prev.starts_at if prev is not None and abs(starts - prev.starts_at) < 0.001 else None
    )
    silence = Silence(
        id=prev.id if prev is not None else "",
        matchers=matchers,
        starts_at=kept_start if kept_start is not None else max(starts, now),
        ends_at=ends,
        created_by=body.createdBy.strip(),
        comment=body.comment,
        created_at=now,
        more_matchers=more,
    )
    return silence


def updates_in_place(prev: Silence, new: Silence, now: float) -> bool:
    """Whether Alertmanager would change `prev` itself rather than replace it: same
    matchers, not expired, and an active one keeps its start."""
    if prev.matcher_pairs() != new.matcher_pairs():
        return False
    state = prev.state(now)
    if state == "expired":
        return False
    return state == "pending" or new.starts_at == prev.starts_at
