"""Whether alertd can do its job right now: store events, and get through the stream.

A PING answers while Redis refuses every write (`maxmemory` reached with
`noeviction`, a read-only replica, an ACL that forbids scripts), and a joined
consumer group says nothing about whether entries are being acknowledged. So
the watchdog checks what matters, every CHECK_EVERY_S and on each probe:

- **writable**: a small `SET` with a short expiry (key: `WatchdogKeys.probe`).
  Its error names the cause: out of memory, read-only, credentials refused.
- **progress**: while the group has a backlog (lag or pending entries), the
  count of entries it has acknowledged (`entries-read - pending`) must move
  within `stall_after_s`; otherwise the consumer is stalled.

Its verdict drives `/health/ready` (503 with the reason), `/health` (unhealthy),
the `alertd_redis_up` gauge, one log line per change of cause (never one per
failed attempt), and the self-alert `AlertdStalled` (written when Redis takes
writes again or when only the consumer is stuck; the Prometheus rule of the same
name in config/alertd-alerts.yml fires even when alertd cannot write at all).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
)

from alertd.engine.evaluator import AlertWriter, PendingWrite
from alertd.metrics import Metrics
from alertd.redact import redact
from alertd.selfalerts import self_alert, set_self_alert
from alertd.storage import keys

log = structlog.get_logger("alertd.watchdog")

STALLED_ALERT = "AlertdStalled"
CHECK_EVERY_S = 2.0
PROBE_TIMEOUT_S = 1.0
FRESH_S = 0.5  # a verdict this recent answers a probe without asking Redis again
PROBE_TTL_MS = 60_000


def stall_after_s(block_s: float, claim_idle_s: float) -> float:
    """How long a backlog may go unacknowledged before the consumer counts as stalled:
    longer than a crashed replica's entries wait to be claimed, and than a few reads."""
    return max(5.0, 5 * block_s, 2 * claim_idle_s)


class WatchdogKeys:
    """The watchdog's keys (named in alertd/storage/keys.py)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def probe(self, consumer: str) -> str:
        return keys.write_probe(self.prefix, consumer)


def why_not_writable(exc: BaseException) -> str:
    """One line naming the cause of a failed write, without secrets."""
    text = redact(str(exc))[:200]
    if isinstance(exc, AuthenticationError | AuthorizationError) or text.startswith(
        ("NOAUTH", "WRONGPASS", "invalid username-password")
    ):
        return f"redis refused alertd's credentials (check the password in redis.url): {text}"
    if isinstance(exc, NoPermissionError) or text.startswith("NOPERM"):
        return f"redis ACL forbids alertd's commands: {text}"
    if isinstance(exc, ReadOnlyError) or text.startswith("READONLY"):
        return "redis is a read-only replica: point redis.url at the master"
    if isinstance(exc, OutOfMemoryError) or text.startswith("OOM"):
        return "redis is out of memory (maxmemory reached, noeviction): it refuses writes"
    if isinstance(exc, TimeoutError):
        return f"redis did not answer within {PROBE_TIMEOUT_S:g}s"
    if isinstance(exc, ConnectionError | OSError):
        return f"redis is not reachable: {type(exc).__name__}: {text}"
    return f"redis refused a write: {type(exc).__name__}: {text}"


@dataclass
class Verdict:
    """What the last check found; `reason` is empty when all is well."""

    redis_ok: bool = True
    redis_error: str = ""
    stalled_s: float | None = None  # seconds without progress while behind, past the limit
    acked: int | None = None
    backlog: int | None = None
    checked_at: float = 0.0

    @property
    def reason(self) -> str:
        if not self.redis_ok:
            return f"events cannot be stored: {self.redis_error}"
        if self.stalled_s is not None:
            return (
                f"the consumer made no progress for {self.stalled_s:.0f}s "
                f"with {self.backlog} entries waiting"
            )
        return ""


class Watchdog:
    """Checks Redis writability and consumer progress; shared by the probes and a job."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        consumer: str,
        stream: str,
        group: str,
        metrics: Metrics,
        stall_after_s: float,
        writer: AlertWriter,
        on_change: Callable[[list[PendingWrite]], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = WatchdogKeys(prefix)
        self.consumer = consumer
        self.stream = stream
        self.group = group
        self.metrics = metrics
        self.stall_after_s = stall_after_s
        self.writer = writer
        self.on_change = on_change
        self.clock = clock
        self.verdict = Verdict()
        self._progress_at = time.monotonic()
        self._last_acked: int | None = None
        self._logged_reason = ""
        self._lock = asyncio.Lock()

    async def check(self) -> Verdict:
        """A fresh verdict (or one under FRESH_S old: probes may come in bursts)."""
        async with self._lock:
            if time.monotonic() - self.verdict.checked_at < FRESH_S:
                return self.verdict
            verdict = Verdict(checked_at=time.monotonic())
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    await self.redis.set(self.keys.probe(self.consumer), b"1", px=PROBE_TTL_MS)
            except (RedisError, OSError, TimeoutError) as exc:
                verdict.redis_ok = False
                verdict.redis_error = why_not_writable(exc)
            await self._progress(verdict)
            self.metrics.redis_up.set(1 if verdict.redis_ok else 0)
            self.verdict = verdict
        await self._report(verdict)
        return verdict

    async def _progress(self, verdict: Verdict) -> None:
        now = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                groups = await self.redis.xinfo_groups(self.stream)
        except (RedisError, OSError, TimeoutError):
            groups = []  # no stream yet, or Redis down: the write check says which
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) != self.group:
                continue
            pending = int(g.get("pending") or 0)
            lag = g.get("lag")
            read = g.get("entries-read")
            verdict.backlog = pending + (int(lag) if lag is not None else 0)
            verdict.acked = int(read) - pending if read is not None else None
        if verdict.acked != self._last_acked or not verdict.backlog:
            self._last_acked = verdict.acked
            self._progress_at = now
        elif now - self._progress_at >= self.stall_after_s:
            verdict.stalled_s = now - self._progress_at

    async def _report(self, verdict: Verdict) -> None:
        """Log each change of cause once; raise or resolve AlertdStalled."""
        reason = verdict.reason
        if reason != self._logged_reason:
            if reason:
                log.error("alertd cannot do its job", reason=reason)
            else:
                log.info("alertd works again", was=self._logged_reason)
            self._logged_reason = reason
        if not verdict.redis_ok:
            return  # the write would fail too; the Prometheus rule covers this case
        now = self.clock()
        alert = self_alert(
            STALLED_ALERT,
            {"consumer_group": self.group},
            "critical",
            "alertd is not getting through its event stream",
            reason or "alertd consumes again",
            float(verdict.backlog or 0),
            now,
        )
        await set_self_alert(self.writer, alert, bool(reason), now, self.on_change)
