"""The daemon: wires consumer, rule engine, dispatcher, delivery workers and HTTP.

`App.start()` / `App.stop()` / `App.reload()`; `run_daemon` adds signals.
State lives in Redis; what is held here is configuration and caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import time
from collections.abc import Container
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from redis.exceptions import RedisError

from alertd import __version__
from alertd.alerts import AlertStore
from alertd.cardinality import SeriesGuard
from alertd.channels import Channel, ChannelContext
from alertd.consumer import Consumer
from alertd.deadletters import DeadLetters
from alertd.engine.evaluator import NOTIFY_CHANGES, Evaluator, PendingWrite, RedisAlertWriter
from alertd.engine.windows import RedisWindows
from alertd.errors import ConfigErrors
from alertd.logs import SCRUBBER
from alertd.logthrottle import ThrottledLog
from alertd.metrics import Metrics
from alertd.model import Event
from alertd.notify.dispatcher import Dispatcher, Runtime
from alertd.notify.history import History
from alertd.notify.outbox import Outbox
from alertd.notify.ratelimit import RateLimiter
from alertd.notify.workers import CONNECTIONS_PER_HOST, ChannelWorkers
from alertd.ops import build_channels
from alertd.ownership import Ownership
from alertd.preflight import RedisWatch, check_listen, listen_error, redis_target
from alertd.redisconn import close, connect, is_cluster
from alertd.redisurl import shown
from alertd.replication import Replication
from alertd.settings import Config, find_files, load_config
from alertd.silences import SilenceStore
from alertd.storage import keys
from alertd.storage.migrate import migrate_unpartitioned
from alertd.storage.partitions import Partitions
from alertd.storage.rehome import rehome
from alertd.watchdog import CHECK_EVERY_S, Watchdog, stall_after_s

log = structlog.get_logger("alertd.app")
throttled = ThrottledLog(log)  # a clock tick fails the same way every eval_interval

TICK_REST = 3.0  # see App.tick
COUNT_REST = 50.0  # see App._count_alerts
GC_THRESHOLDS = (500_000, 20, 10)  # see run_daemon


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class App:
    def __init__(self, config: Config, clock: Any = time.time) -> None:
        self.config = config
        self.clock = clock
        s = config.settings
        self.prefix = keys.state_prefix(s.redis.key_prefix)
        self.consumer_name = s.daemon.consumer or default_consumer_name()
        # Streams and dead letters through a client that finds each key's node; each
        # partition's state on its master (the same client on one Redis or behind
        # Sentinel). What is not a series' lives in the home partition (self.redis).
        self.routed = connect(
            s.redis,
            socket_timeout=max(5.0, s.daemon.block.total_seconds() + 5),
            socket_connect_timeout=3,
            health_check_interval=10,
        )
        self.partitions = Partitions(self.routed, s.redis.key_prefix, s.redis.partitions)
        self.redis = self.partitions.home
        self.metrics = Metrics()
        takeover_s = s.daemon.takeover.total_seconds()
        self.ownership = Ownership(self.partitions, self.consumer_name, takeover_s)
        self.windows = RedisWindows(self.partitions)
        self.store = AlertStore(self.partitions)
        self.silences = SilenceStore(self.redis, self.prefix)
        self.dead = DeadLetters(self.routed, s.redis.dead_letter_stream)
        self.outbox = Outbox(self.partitions)
        self.runtime = Runtime.build(config)
        self.series_guard = SeriesGuard(
            self.redis,
            self.prefix,
            self.dead,
            self.metrics,
            RedisAlertWriter(self.store, lambda: self.runtime.router),
            self._on_change,
            clock,
        )
        # the series of the batch in progress, and of pages beside it (process_first)
        self._in_flight: dict[int, Container[str]] = {}
        self.evaluator = self._evaluator(config)
        self.watchdog = Watchdog(
            self.redis,
            self.prefix,
            self.consumer_name,
            s.redis.stream,
            s.redis.group,
            self.metrics,
            stall_after_s(s.daemon.block.total_seconds(), s.daemon.claim_idle.total_seconds()),
            RedisAlertWriter(self.store, lambda: self.runtime.router),
            self._on_change,
            clock,
        )
        self.dispatcher = Dispatcher(
            self.store,
            self.outbox,
            self.silences,
            lambda: self.runtime,
            clock,
            # A dead replica's (or an interrupted) flush is taken over within `takeover`:
            # a 30 s lease loses alerts that fire and resolve meanwhile.
            lease_s=max(2.0, takeover_s),
        )
        # One consumer per stream (`redis.stream` and its shards), sharing the engine.
        self.consumers = [
            Consumer(
                redis=self.routed,
                settings=s.redis,
                consumer=self.consumer_name,
                batch_size=s.daemon.batch_size,
                block_ms=int(s.daemon.block.total_seconds() * 1000),
                claim_idle_ms=int(s.daemon.claim_idle.total_seconds() * 1000),
                dead=self.dead,
                metrics=self.metrics,
                process=self.process,
                prepare=self.prepare,
                first=self,
                clock=clock,
                stream=stream,
                ownership=self.ownership,
            )
            for stream in s.redis.streams
        ]
        self.consumer = self.consumers[0]
        self._ingesting = asyncio.Lock()  # the engine takes one batch at a time
        self.channel_ctx = ChannelContext(
            redis=self.redis, key_prefix=self.prefix, external_url=s.external_url, now=clock
        )
        self.channels: dict[str, Channel[Any]] = {}
        self.workers = ChannelWorkers(
            self.outbox,
            self.dead,
            self.metrics,
            self.consumer_name,
            # Held entries are touched several times per this: a dead worker's are
            # taken over within `takeover`.
            min(s.daemon.claim_idle, s.daemon.takeover).total_seconds(),
        )
        # Notification history: queued by the dispatcher, outcomes by the workers.
        self.history = History(
            self.redis,
            self.prefix,
            lambda: self.config.settings.notify.history_retention.total_seconds(),
        )
        self.dispatcher.history = self.workers.history = self.history
        # A critical alert firing here: ordinary deliveries and flushes let its page by.
        self.page_hold = self.dispatcher.page_hold = self.workers.page_hold
        self.limiter = RateLimiter(
            self.redis, self.prefix, self.outbox, lambda: self.channels, self.metrics, self.history
        )
        self.workers.limiter = self.limiter
        self.stopping = asyncio.Event()
        self.replication = Replication(self.partitions, s.redis.wait_replicas, self.stopping)
        self.workers.confirm = self.replication.confirm
        self.started_at = time.time()
        self.last_reload_error: str | None = None
        self.last_reload_errors: list[str] = []
        self.last_reload_at: float | None = None
        self._failed_files: dict[str, float] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._scheduler: AsyncIOScheduler | None = None
        self._http: Any = None
        self._reload_lock = asyncio.Lock()
        self._tick_rest_until = 0.0
        self._count_alerts_at = 0.0
        self.metrics.rules_loaded.set(len(config.rules))

    def _evaluator(self, config: Config) -> Evaluator:
        return Evaluator(
            config.rules,
            self.windows,
            RedisAlertWriter(self.store, lambda: self.runtime.router),
            on_change=self._on_change,
            series_guard=self.series_guard,
            in_flight=self._in_flight,
        )

    async def _on_change(self, writes: list[PendingWrite]) -> None:
        if any(w.change in NOTIFY_CHANGES for w in writes):
            self.dispatcher.wake.set()
        if any(
            w.change in NOTIFY_CHANGES and w.alert is not None and w.alert.pages for w in writes
        ):
            self.dispatcher.page_filed()
            self.page_hold.coming()

    async def prepare(self, events: list[Event], now: float) -> None:
        """Pre-aggregate a batch read ahead (see Evaluator.prepare)."""
        await self.evaluator.prepare(events, now)

    async def process(self, events: list[Event], now: float) -> None:
        """The consumer's effect: window + alert state stored before the batch is acked."""
        if events:
            async with self._ingesting:
                await self.evaluator.ingest(events, now)
        await self.replication.confirm()  # before the batch is acknowledged

    @property
    def paging_metrics(self) -> Container[str]:
        return self.evaluator.paging_metrics

    async def process_first(self, events: list[Event], now: float) -> bool:
        """Pages read after a batch in progress, stored beside it unless a series of
        theirs is in it (Evaluator.ingest_first); False: they wait their turn."""
        if not await self.evaluator.ingest_first(events, now):
            return False
        await self.replication.confirm()  # before they are acknowledged
        return True

    # --- lifecycle -------------------------------------------------------------

    async def start(self, http: bool = True) -> None:
        if not is_cluster(self.routed):  # before anything writes a key in the new place
            with contextlib.suppress(RedisError, OSError):
                r = self.config.settings.redis
                streams = {*r.streams, r.dead_letter_stream}
                await migrate_unpartitioned(self.redis, r.key_prefix, streams)
        try:  # state of another partition layout (an upgrade, a new `redis.partitions`)
            await rehome(self.partitions)
        except (RedisError, OSError) as exc:
            log.warning("state of another layout not looked for", error=type(exc).__name__)
        self.channel_ctx.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=CONNECTIONS_PER_HOST)
        )
        self.channels = build_channels(self.config.channels, self.channel_ctx)
        self.workers.set_channels(self.channels)
        with contextlib.suppress(RedisError, OSError):
            await self.beat()
        for consumer in self.consumers:
            with contextlib.suppress(RedisError, OSError):
                await consumer.join()
        # A new config's first clock evaluation judges every live alert: do it before
        # events arrive, not in the middle of the first burst.
        await self.tick()
        self._tasks = [
            *(
                asyncio.create_task(c.run(self.stopping), name=f"consumer {c.stream}")
                for c in self.consumers
            ),
            asyncio.create_task(self.dispatcher.run(self.stopping), name="dispatcher"),
            asyncio.create_task(self.limiter.run(self.stopping), name="digests"),
        ]
        sched = AsyncIOScheduler()
        d = self.config.settings.daemon
        sched.add_job(
            self.tick,
            "interval",
            seconds=d.eval_interval.total_seconds(),
            max_instances=1,
            coalesce=True,
            id="tick",
        )
        sched.add_job(
            self.beat,
            "interval",
            seconds=max(0.05, d.takeover.total_seconds() / 3),
            max_instances=1,
            coalesce=True,
            id="beat",
        )
        sched.add_job(
            self.housekeeping, "interval", seconds=5, max_instances=1, coalesce=True, id="house"
        )
        sched.add_job(
            self.watch_files, "interval", seconds=2, max_instances=1, coalesce=True, id="watch"
        )
        sched.add_job(
            self.watchdog.check, "interval", seconds=CHECK_EVERY_S, max_instances=1, id="watchdog"
        )
        sched.start()
        self._scheduler = sched
        if http:
            from alertd.api import start_http

            self._http = await start_http(self)
        log.info(
            "alertd started",
            version=__version__,
            consumer=self.consumer_name,
            rules=len(self.config.rules),
            channels=sorted(self.channels),
            stream=self.config.settings.redis.stream,
            redis=shown(self.config.settings.redis.url),
        )

    async def stop(self) -> None:
        """Stop reading, finish the batch in hand, flush deliveries within shutdown_timeout."""
        timeout_s = self.config.settings.daemon.shutdown_timeout.total_seconds()
        deadline = time.monotonic() + timeout_s
        self.stopping.set()
        self.dispatcher.wake.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        _, pending = await asyncio.wait(self._tasks, timeout=max(0.1, deadline - time.monotonic()))
        for t in pending:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.workers.stop(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(RedisError, OSError):
            await self.ownership.leave()
        if self._http is not None:
            await self._http.cleanup()
        if self.channel_ctx.http is not None:
            await self.channel_ctx.http.close()
        await self.partitions.aclose()
        await close(self.routed)
        log.info("alertd stopped")

    # --- clock -----------------------------------------------------------------

    async def beat(self) -> None:
        """Heartbeat and partition lease; claim what dead daemons left pending."""
        try:
            await self.ownership.beat()
            for consumer in self.consumers:
                await consumer.take_over()
        except (RedisError, OSError) as exc:
            log.debug("heartbeat skipped", error=type(exc).__name__)
        finally:
            # What is held now (a lease not renewed in time is not): its outboxes are
            # delivered here.
            self.metrics.partitions_owned.set(self.ownership.owned)
            self.workers.set_partitions(self.ownership.owned_partitions)

    async def tick(self) -> None:
        """Clock evaluation of the partitions this daemon owns (each by one daemon at a
        time, under its lease)."""
        owned = self.ownership.owned_partitions
        if time.monotonic() < self._tick_rest_until or not owned:
            return
        started = time.monotonic()
        try:
            now = self.clock()
            # Changes a dead daemon stored but did not file into their groups.
            takeover_s = self.config.settings.daemon.takeover.total_seconds()
            await self.store.refile(owned, now - takeover_s)
            await self.evaluator.tick(now, owned)
        except (RedisError, OSError) as exc:
            throttled.warning("tick", "clock evaluation skipped", error=type(exc).__name__)
        finally:
            # A clock evaluation reads every live alert: with tens of thousands it takes
            # longer than eval_interval and would leave no time to consume and deliver.
            # Rest a multiple of what it took, so it uses at most 1/(1+TICK_REST) of the loop.
            self._tick_rest_until = time.monotonic() + TICK_REST * (time.monotonic() - started)

    async def housekeeping(self) -> None:
        try:
            now = self.clock()
            await self.silences.cleanup(now)
            await self.series_guard.resolve_quiet(now)
            lag, pending = await self.lag_and_pending()
            if lag is not None:
                self.metrics.consumer_lag.set(lag)
            self.metrics.consumer_pending.set(pending)
            if time.monotonic() >= self._count_alerts_at:
                await self._count_alerts()
            for rule, n in self.evaluator.evaluations.items():
                self.metrics.rule_evaluations.labels(rule).inc(n)
            self.evaluator.evaluations.clear()
        except (RedisError, OSError) as exc:
            log.debug("housekeeping skipped", error=type(exc).__name__)

    async def lag_and_pending(self) -> tuple[int | None, int]:
        """The consumer group's lag and pending entries, over every stream read."""
        lag: int | None = 0
        pending = 0
        for consumer in self.consumers:
            one_lag, one_pending = await consumer.lag_and_pending()
            lag = None if lag is None or one_lag is None else lag + one_lag
            pending += one_pending
        return lag, pending

    async def _count_alerts(self) -> None:
        """The alerts gauge. It reads every alert: with tens of thousands that takes a
        while, so it waits COUNT_REST times as long as the last count took."""
        started = time.monotonic()
        counts: dict[tuple[str, str], int] = {}
        # A partition at a time: tens of thousands decoded at once held the event loop
        # for a tenth of a second, and a page with it.
        for p in range(self.store.partitions.count):
            for a in await self.store.all([p]):
                if a.state != "resolved":
                    counts[(a.state, a.severity)] = counts.get((a.state, a.severity), 0) + 1
        self.metrics.alerts.clear()
        for (state, sev), n in counts.items():
            self.metrics.alerts.labels(state, sev).set(n)
        self._count_alerts_at = time.monotonic() + COUNT_REST * (time.monotonic() - started)

    async def watch_files(self) -> None:
        """Reload when a rule or channel file changes on disk (or one appears or goes)."""
        cfg = self.config
        current: dict[str, float] = {}
        try:
            probe = load_paths(cfg)
        except OSError:
            return
        for p in probe:
            with contextlib.suppress(OSError):
                current[p] = Path(p).stat().st_mtime
        if current == cfg.files and self._failed_files is not None:
            # The bad edit was undone: what runs is what is on disk again.
            self._failed_files = None
            self.last_reload_error = None
            self.last_reload_errors = []
        if current != cfg.files and current != self._failed_files:
            result = await self.reload()
            if result is not None:
                self._failed_files = current

    # --- reload ----------------------------------------------------------------

    async def reload(self) -> str | None:
        """Reload config, rules and channels; on error keep the running ones. Returns the error."""
        async with self._reload_lock:
            try:
                new = load_config(self.config.path)
            except ConfigErrors as exc:
                self.last_reload_error = str(exc)
                self.last_reload_errors = [str(e) for e in exc.errors]
                self.metrics.config_reloads.labels("error").inc()
                log.error("reload failed; keeping the running configuration", error=str(exc))
                return str(exc)
            old = self.config
            self.config = new
            self.runtime = Runtime.build(new)
            self.evaluator = self._evaluator(new)
            for consumer in self.consumers:
                consumer.process = self.process
            changed = {n for n, c in new.channels.items() if old.channels.get(n) != c}
            channels = {
                n: ch for n, ch in self.channels.items() if n in new.channels and n not in changed
            }
            channels.update(build_channels({n: new.channels[n] for n in changed}, self.channel_ctx))
            self.channels = channels
            self.workers.set_channels(channels)
            self.last_reload_error = None
            self.last_reload_errors = []
            self.last_reload_at = time.time()
            self._failed_files = None
            SCRUBBER.secrets = config_secrets(new)
            self.metrics.config_reloads.labels("success").inc()
            self.metrics.rules_loaded.set(len(new.rules))
            for w in new.warnings:
                log.warning("config warning", warning=w)
            log.info("configuration reloaded", rules=len(new.rules), channels=sorted(new.channels))
            return None


def config_secrets(config: Config) -> list[str]:
    """Every secret value in the configuration, for the log scrubber."""
    secrets = [c.secret_values() for c in config.channels.values()]
    out = [s for group in secrets for s in group]
    token = config.settings.http.token.get_secret_value()
    return [*out, token] if token else out


def load_paths(cfg: Config) -> list[str]:
    """Files that make up the configuration now (for change detection)."""
    s = cfg.settings
    paths = [str(cfg.path)]
    paths += [str(p) for p in find_files(cfg.base_dir, s.paths.rules)]
    paths += [str(p) for p in find_files(cfg.base_dir, s.paths.channels)]
    return paths


async def run_daemon(config_path: str | None) -> int:
    """`alertd run`: until SIGTERM/SIGINT; SIGHUP reloads."""
    config = load_config(config_path)
    from alertd.logs import configure

    settings = config.settings.logging
    configure(settings.level, settings.format, config_secrets(config), daemon=True)
    for w in config.warnings:
        log.warning("config warning", warning=w)
    check_listen(config.settings, str(config.path))  # before the consumer group is created
    app = App(config)
    watch = RedisWatch(app.redis, redis_target(config.settings, str(config.path)))
    await watch.check()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    reloads: set[asyncio.Task[str | None]] = set()  # held so a reload is not collected mid-way

    def hup() -> None:
        task = asyncio.ensure_future(app.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hup)
    # What start-up built (config, rules, modules) lives as long as the process: take it
    # out of the collector's view, and collect less eagerly. With windows of 100k series
    # in flight, a full collection every few thousand allocations cost a fifth of the
    # CPU (measured by bench/); reference counting frees nearly everything anyway. The
    # ingest allocates ~20 tracked objects per series, so even young collections every
    # 50k took 3-5 us an event at 100k series: at 500k, 10-15% less CPU an event, +5 MiB.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        await app.start()
    except OSError as exc:
        await app.stop()
        raise listen_error(config.settings, str(config.path), exc) from None
    watching = asyncio.create_task(watch.run(app.stopping), name="redis-watch")
    await stop.wait()
    watching.cancel()
    log.info("shutting down")
    await app.stop()
    return 0
