"""The configuration files a run writes: alertd.toml (+ bench rules) and alertmanager.yml."""

from __future__ import annotations

from pathlib import Path

# Latency probes, fan-out and storm alerts: `last > 0` per series, a window long enough that
# nothing resolves during a run. The runs make more series than the default max_series.
BENCH_RULES = """
[[rules]]
name = "BenchLatency"
metric = "bench_latency"
window = "10m"
group_by = ["id"]
critical = "> 0"
summary = "latency probe {id}"
max_series = 1000000

[[rules]]
name = "FanoutEach"
metric = "bench_fanout_each"
window = "10m"
group_by = ["id"]
critical = "> 0"
summary = "fan-out alert {id}"
max_series = 1000000

[[rules]]
name = "FanoutGrouped"
metric = "bench_fanout_grouped"
window = "10m"
group_by = ["grp", "id"]
critical = "> 0"
summary = "fan-out alert {id} of {grp}"
max_series = 1000000

# A page during a storm (scenario 6): the storm's warnings, the probes' pages.
[[rules]]
name = "StormWarn"
metric = "bench_storm"
window = "10m"
group_by = ["id"]
warning = "> 0"
summary = "storm alert {id}"
max_series = 1000000

[[rules]]
name = "StormPage"
metric = "bench_page"
window = "10m"
group_by = ["id"]
critical = "> 0"
summary = "page {id}"
max_series = 1000000
"""


def alertd_throughput(
    dir: Path, redis_url: str, http_port: int, rules: Path, log: str, redis_extra: str = ""
) -> Path:
    """The shipped defaults, rules/default.toml, the backlog taken from the stream's start.

    The rules' max_series is raised: the run measures the engine at 100,000 series, not
    the cardinality guard refusing most of them."""
    unlimited = dir / f"rules-unlimited-{http_port}.toml"
    unlimited.write_text(
        rules.read_text().replace("[[rules]]\n", "[[rules]]\nmax_series = 1000000\n")
    )
    rules = unlimited
    cfg = dir / f"alertd-throughput-{http_port}.toml"
    cfg.write_text(
        f"""
[redis]
url = "{redis_url}"
group_start = "0"
{redis_extra}

[http]
listen = "127.0.0.1:{http_port}"

[paths]
rules = ["{rules}"]
channels = []

[logging]
level = "{log}"
"""
    )
    return cfg


def alertd_notify(dir: Path, redis_url: str, http_port: int, hook_url: str, log: str) -> Path:
    """Bench rules, one webhook channel; groups per `id` (FanoutGrouped: per `grp`).

    group_wait 0s everywhere. One alert per group: group_interval 5m (Alertmanager's
    default), so no group is flushed twice during a run. FanoutGrouped: 1s, so alerts that
    join a group after its first flush follow within a second.
    """
    rules = dir / "bench-rules"
    rules.mkdir(exist_ok=True)
    (rules / "bench.toml").write_text(BENCH_RULES)
    cfg = dir / f"alertd-notify-{http_port}.toml"
    cfg.write_text(
        f"""
[redis]
url = "{redis_url}"

[http]
listen = "127.0.0.1:{http_port}"

[paths]
rules = ["{rules}/*.toml"]
channels = []

[notify]
group_wait = "0s"
group_interval = "5m"
repeat_interval = "1h"
send_resolved = false

[channels.bench-hook]
type = "webhook"
url = "{hook_url}"

[[routes]]
match = {{ alertname = "FanoutGrouped" }}
channels = ["bench-hook"]
group_by = ["grp"]
group_interval = "1s"

[[routes]]
channels = ["bench-hook"]
group_by = ["id"]

[logging]
level = "{log}"
"""
    )
    return cfg


def alertmanager(dir: Path, hook_url: str) -> Path:
    """The same grouping and timers as alertd_notify, for Alertmanager."""
    cfg = dir / "alertmanager.yml"
    cfg.write_text(
        f"""
global:
  resolve_timeout: 1h
route:
  receiver: bench
  group_by: ['id']
  group_wait: 0s
  group_interval: 5m
  repeat_interval: 1h
  routes:
    - matchers: ['alertname="FanoutGrouped"']
      receiver: bench
      group_by: ['grp']
      group_interval: 1s
receivers:
  - name: bench
    webhook_configs:
      - url: '{hook_url}'
        send_resolved: false
"""
    )
    return cfg
