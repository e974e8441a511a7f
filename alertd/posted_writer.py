"""Files alerts posted through `/api/v2/alerts` into the alert store.

The same path as the rule engine's changes: the evaluator's writer applies
each change with compare-and-set and files notify-worthy ones into their
groups in the same atomic step, then the engine's `on_change` wakes the
dispatcher. A change that lost its compare-and-set (a replica moved the alert
meanwhile) is judged again on a fresh read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
import structlog

from alertd.engine.evaluator import MAX_ATTEMPTS, AlertWriter, PendingWrite
from alertd.engine.lifecycle import Change
from alertd.errors import AlertdError
from alertd.model import Alert
from alertd.posted import POSTED_RULE, Posted, fingerprint_of, receive

log = structlog.get_logger("alertd.posted")


class PostConflictError(AlertdError):
    """Some posted alerts lost every compare-and-set round: the sender should retry."""

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(f"{count} alerts were changed by other writers meanwhile; retry")


class PostedAlertWriter:
    def __init__(
        self,
        writer: AlertWriter,
        on_change: Callable[[list[PendingWrite]], Awaitable[None]] | None,
        resolve_timeout_s: float,
    ) -> None:
        self.writer = writer
        self.on_change = on_change
        self.resolve_timeout_s = resolve_timeout_s

    async def post(self, alerts: list[Posted], now: float) -> list[PendingWrite]:
        """Store a post's alerts (the last of a fingerprint wins); the changes made."""
        todo: dict[str, Posted] = {}
        for p in alerts:
            todo[fingerprint_of({k: v for k, v in p.labels.items() if v != ""})] = p
        done: list[PendingWrite] = []
        for _ in range(MAX_ATTEMPTS):
            fps = list(todo)
            raws = await self.writer.get_raw(fps)
            writes = []
            for fp, raw in zip(fps, raws, strict=True):
                prev = Alert.from_dict(orjson.loads(raw)) if raw else None
                new, change = receive(prev, todo[fp], now, self.resolve_timeout_s)
                if new is None:
                    continue
                clock_at = new.ends_at if new.state == "firing" else None
                writes.append(
                    PendingWrite(
                        fp, raw or b"", new, change, POSTED_RULE, new.labels, None, clock_at
                    )
                )
            results = await self.writer.write(writes, now) if writes else []
            done += [w for w, ok in zip(writes, results, strict=True) if ok]
            todo = {
                w.fingerprint: todo[w.fingerprint]
                for w, ok in zip(writes, results, strict=True)
                if not ok
            }
            if not todo:
                break
        else:
            # Other writers moved these alerts every time: the sender is told to retry.
            log.warning("posted alerts not stored: concurrent writers", count=len(todo))
            raise PostConflictError(len(todo))
        for w in done:
            if w.change is not Change.UPDATED:
                log.info("alert " + w.change.value, fingerprint=w.fingerprint, source="api/v2")
        if self.on_change is not None and done:
            await self.on_change(done)
        return done
