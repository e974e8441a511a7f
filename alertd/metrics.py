"""Prometheus metrics (docs/operations.md). Labels are bounded: no fingerprint or event name."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from alertd import __version__


class Metrics:
    """One registry per App, so tests can run several daemons in one process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "alertd_"
        self.events_consumed = Counter(
            p + "events_consumed_total", "Events consumed and processed", registry=r
        )
        self.events_invalid = Counter(
            p + "events_invalid_total", "Invalid events dead-lettered", ["reason"], registry=r
        )
        self.consumer_lag = Gauge(
            p + "consumer_lag", "Entries in the stream not yet delivered to the group", registry=r
        )
        self.consumer_pending = Gauge(
            p + "consumer_pending", "Entries delivered but not acknowledged", registry=r
        )
        self.batch_duration = Histogram(
            p + "batch_duration_seconds",
            "Time to process one consumed batch",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.rule_evaluations = Counter(
            p + "rule_evaluations_total", "Series evaluations", ["rule"], registry=r
        )
        self.alerts = Gauge(p + "alerts", "Current alerts", ["state", "severity"], registry=r)
        self.notifications = Counter(
            p + "notifications_total",
            "Notifications finished per channel",
            ["channel", "result"],
            registry=r,
        )
        self.notification_attempts = Counter(
            p + "notification_attempts_total",
            "Delivery attempts",
            ["channel", "outcome"],
            registry=r,
        )
        self.notification_latency = Histogram(
            p + "notification_latency_seconds",
            "Alert change to delivered",
            ["channel"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.dead_letters = Counter(
            p + "dead_letters_total", "Dead letters written", ["source"], registry=r
        )
        self.notifications_held = Gauge(
            p + "notifications_held",
            "Notifications held by a channel's rate limit, waiting for their digest",
            ["channel"],
            registry=r,
        )
        self.rules_loaded = Gauge(p + "rules_loaded", "Rules loaded", registry=r)
        self.partitions_owned = Gauge(
            p + "partitions_owned", "State partitions this daemon owns", registry=r
        )
        self.redis_up = Gauge(
            p + "redis_up", "1 while Redis takes alertd's writes, else 0", registry=r
        )
        self.series = Gauge(
            p + "series", "Series admitted per rule (the cardinality guard)", ["rule"], registry=r
        )
        self.series_limited = Counter(
            p + "series_limited_total",
            "Events not evaluated because their rule reached max_series",
            ["rule"],
            registry=r,
        )
        self.config_reloads = Counter(
            p + "config_reloads_total", "Configuration reloads", ["result"], registry=r
        )
        self.build_info = Info(p + "build", "alertd build", registry=r)
        self.build_info.info({"version": __version__})
