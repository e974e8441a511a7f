"""Event streams for the scenarios, and a fast pipelined XADD over a raw socket.

redis-py packs about 50k commands/s; the throughput scenarios publish 1M
entries per run, so commands are written as RESP by hand (hiredis parses the
replies) at several hundred thousand per second. Publishing is done before
the consumer under test starts, so its speed never enters a measured figure.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable, Iterator

import hiredis
import orjson

CHUNK = 5_000  # commands per write before reading their replies


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def xadd_command(stream: bytes, fields: dict[bytes, bytes]) -> bytes:
    parts = [b"*%d\r\n" % (3 + 2 * len(fields)), _bulk(b"XADD"), _bulk(stream), _bulk(b"*")]
    for k, v in fields.items():
        parts.append(_bulk(k))
        parts.append(_bulk(v))
    return b"".join(parts)


def pipeline(port: int, commands: Iterable[bytes], db: int = 0) -> int:
    """Send RESP commands in chunks, reading every reply; the number sent. Raises on -ERR."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reader = hiredis.Reader()
        pending = 0

        def drain(n: int) -> None:
            while n:
                reply = reader.gets()
                if reply is False:
                    data = sock.recv(1 << 20)
                    if not data:
                        raise ConnectionError("redis closed the connection")
                    reader.feed(data)
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(f"redis: {reply}")
                n -= 1

        if db:
            sock.sendall(b"*2\r\n$6\r\nSELECT\r\n" + _bulk(str(db).encode()))
            drain(1)
        buf: list[bytes] = []
        for cmd in commands:
            buf.append(cmd)
            if len(buf) >= CHUNK:
                sock.sendall(b"".join(buf))
                pending += len(buf)
                sent += len(buf)
                buf.clear()
                drain(pending)
                pending = 0
        if buf:
            sock.sendall(b"".join(buf))
            sent += len(buf)
            drain(len(buf))
    return sent


# --- what is published ----------------------------------------------------------------

# The throughput mix over rules/default.toml: one series of one rule per index, values that
# never cross a threshold (the scenario measures ingestion and evaluation, not notification).
KINDS = ("queue", "cpu", "latency", "disk", "errors")


def throughput_event(i: int, series: int, rng: random.Random) -> dict[str, object]:
    """Event i of a stream spread round-robin over `series` series of the default rules."""
    s = i % series
    kind = KINDS[s % len(KINDS)]
    common = {"env": "prod", "region": "eu-west-1"}
    if kind == "queue":
        return {
            "name": "queue_depth",
            "value": rng.randrange(0, 900),
            "labels": {"service": f"svc-{s}", "queue": "jobs", **common},
        }
    if kind == "cpu":
        return {
            "name": "cpu_used_percent",
            "value": rng.uniform(5, 60),
            "labels": {"host": f"host-{s}", **common},
        }
    if kind == "latency":
        return {
            "name": "http_request_duration_seconds",
            "value": rng.uniform(0.005, 0.6),
            "labels": {"service": f"svc-{s}", "route": "/api", **common},
        }
    if kind == "disk":
        return {
            "name": "disk_free_percent",
            "value": rng.uniform(20, 90),
            "labels": {"host": f"host-{s}", "mountpoint": "/data", **common},
        }
    # errors: requests and errors of one service alternate; the ratio stays at 0.
    if (i // series) % 2 == 0:
        return {
            "name": "http_requests_total",
            "value": 100,
            "labels": {"service": f"svc-{s}", **common},
        }
    return {"name": "http_errors_total", "value": 0, "labels": {"service": f"svc-{s}", **common}}


def entry_fields(events: list[dict[str, object]], form: str) -> dict[bytes, bytes]:
    """One stream entry's fields: JSON `data` (one object, or an array) or the flat form."""
    if form == "flat":
        (ev,) = events
        fields = {b"name": str(ev["name"]).encode(), b"value": repr(ev["value"]).encode()}
        labels: dict[str, str] = ev.get("labels") or {}  # type: ignore[assignment]
        fields.update({k.encode(): v.encode() for k, v in labels.items()})
        return fields
    return {b"data": orjson.dumps(events[0] if len(events) == 1 else events)}


def throughput_commands(
    stream: str, n_events: int, series: int, form: str, per_entry: int, seed: int = 1
) -> Iterator[bytes]:
    rng = random.Random(seed)
    key = stream.encode()
    for start in range(0, n_events, per_entry):
        evs = [
            throughput_event(i, series, rng) for i in range(start, min(start + per_entry, n_events))
        ]
        yield xadd_command(key, entry_fields(evs, form))


def entries_for(n_events: int, per_entry: int) -> int:
    return -(-n_events // per_entry)
