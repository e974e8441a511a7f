"""`alertd` command line. Errors are one line on stderr (what, where, what to do), exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from alertd import __version__
from alertd.errors import AlertdError, ConfigErrors, EventError, NotFoundError
from alertd.events import event_from_object
from alertd.model import SEVERITIES
from alertd.ops import parse_filters
from alertd.redact import redact
from alertd.redisconn import close, connect
from alertd.redisurl import shown
from alertd.settings import (
    Config,
    RedisSettings,
    env_source,
    load_config,
    load_settings,
)
from alertd.storage import keys

STREAM_ID = re.compile(r"\d+-\d+")


class CliError(Exception):
    """A failure already worded for the operator."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the command and where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see '{self.prog} --help'\n")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


_TARGET: list[str] = []  # the Redis the command talks to, for "cannot reach Redis" (main)


def _redis(settings: RedisSettings) -> Redis:
    source = env_source("redis.url")
    _TARGET[:] = [f"{shown(settings.url)} (from {source or 'redis.url'})"]
    return connect(settings, socket_connect_timeout=3, socket_timeout=10)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


# --- commands -------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from alertd.app import run_daemon

    try:
        import uvloop  # type: ignore[import-not-found]

        runner: Callable[[Awaitable[int]], int] = uvloop.run  # pragma: no cover
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    return runner(run_daemon(args.config))


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    for w in config.warnings:
        print(f"warning: {w}")
    s = config.settings
    kinds: dict[str, int] = {}
    for ch in config.channels.values():
        kinds[ch.type] = kinds.get(ch.type, 0) + 1
    channel_text = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    print(f"config {config.path}: ok")
    source = env_source("redis.url") or "redis.url"
    print(f"  redis: {shown(s.redis.url)} (from {source}), stream {s.redis.stream}")
    print(f"  rules: {len(config.rules)} in {len({r.file for r in config.rules})} file(s)")
    print(f"  channels: {len(config.channels)} ({channel_text})")
    templated = [c.template for c in config.channels.values() if c.template]
    if templated:
        print(f"  templates: {len(templated)} rendered on a sample notification")
    print(
        f"  routes: {len(s.routes)}, inhibit rules: {len(s.inhibit)}, "
        f"time intervals: {len(s.time_intervals)}"
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    settings = load_settings(args.config).redis
    labels: dict[str, str] = {}
    value: float | None = None
    for item in args.rest:
        if "=" in item:
            k, _, v = item.partition("=")
            labels[k] = v
        elif value is None:
            try:
                value = float(item)
            except ValueError:
                raise CliError(
                    f"value {item!r} is not a number (labels are written name=value)"
                ) from None
        else:
            raise CliError(f"unexpected argument {item!r} (labels are written name=value)")
    obj: dict[str, Any] = {"name": args.name, "labels": labels}
    if value is not None:
        obj["value"] = value
    if args.ts is not None:
        try:
            obj["ts"] = float(args.ts)
        except ValueError:
            obj["ts"] = args.ts
    ev = event_from_object(obj, time.time())

    async def go() -> list[str]:
        from alertd.client import shard_stream
        from alertd.ops import publish

        redis = _redis(settings)
        try:
            stream = shard_stream(settings.stream, settings.stream_shards, ev.labels)
            return await publish(redis, stream, [ev])
        finally:
            await close(redis)

    ids = asyncio.run(go())
    print(f"published {ev.name}={ev.value:g} {orjson.dumps(ev.labels).decode()} as {ids[0]}")
    return 0


def cmd_test_alert(args: argparse.Namespace) -> int:
    config = _config(args)
    from alertd.logs import configure

    # stdout holds one result line per channel; the log channel's own output goes to
    # stderr, in the configured format (a JSON pipeline must not get a console line).
    configure("warning", config.settings.logging.format, stream=sys.stderr)

    async def go() -> dict[str, Any]:
        import aiohttp

        from alertd.channels import ChannelContext
        from alertd.ops import build_channels, test_alert

        redis = _redis(config.settings.redis)
        ctx = ChannelContext(
            redis=redis,
            key_prefix=keys.state_prefix(config.settings.redis.key_prefix),
            external_url=config.settings.external_url,
        )
        async with aiohttp.ClientSession() as session:
            ctx.http = session
            channels = build_channels(config.channels, ctx)
            try:
                return await test_alert(config, channels, args.channel or None, args.severity)
            finally:
                for ch in channels.values():
                    await ch.close()
                await close(redis)

    results = asyncio.run(go())
    if not results:
        raise CliError(
            "no enabled channel to test (every channel has enabled = false); "
            "name one with --channel or enable one"
        )
    ok = True
    for name, r in results.items():
        if r.ok:
            print(f"{name}: ok (attempts {r.attempts}, {r.latency_ms:.0f} ms)")
        else:
            ok = False
            print(f"{name}: FAILED after {r.attempts} attempt(s), {r.latency_ms:.0f} ms: {r.error}")
    return 0 if ok else 1


def cmd_alerts(args: argparse.Namespace) -> int:
    try:
        filters = parse_filters(args.filter or [])
    except ValueError as exc:
        raise CliError(f"--filter: {exc}") from None
    config = _config(args)

    async def go() -> list[dict[str, Any]]:
        from alertd.ops import list_alerts
        from alertd.storage.partitions import Partitions

        r = config.settings.redis
        redis = _redis(r)
        partitions = Partitions(redis, r.key_prefix, r.partitions)
        try:
            return await list_alerts(
                partitions, config, time.time(), args.state, args.severity, filters
            )
        finally:
            await partitions.aclose()
            await close(redis)

    alerts = asyncio.run(go())
    if args.json:
        print(orjson.dumps({"alerts": alerts}).decode())
        return 0
    rows = []
    for a in alerts:
        extra = ",".join(
            f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("alertname", "severity")
        )
        muted = "silenced" if a["silencedBy"] else ("inhibited" if a["inhibitedBy"] else "")
        value = "" if a["value"] is None else f"{a['value']:g}"
        rows.append(
            [
                a["labels"].get("alertname", ""),
                a["state"],
                a["severity"],
                value,
                extra,
                a["startsAt"],
                muted,
            ]
        )
    print(_table(rows, ["alertname", "state", "severity", "value", "labels", "since", "muted"]))
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    config = _config(args)
    from alertd.silences import SilenceStore, silence_from_request

    async def go() -> int:
        redis = _redis(config.settings.redis)
        store = SilenceStore(redis, keys.state_prefix(config.settings.redis.key_prefix))
        now = time.time()
        try:
            if args.silence_cmd == "add":
                matchers = {}
                for m in args.matchers:
                    if "=" not in m:
                        raise CliError(
                            f"matcher {m!r} must be label=value (value may start with ~ or !)"
                        )
                    k, _, v = m.partition("=")
                    matchers[k] = v
                body: dict[str, Any] = {
                    "matchers": matchers,
                    "createdBy": args.author,
                    "comment": args.comment,
                }
                if args.end:
                    body["endsAt"] = args.end
                    if args.start:
                        body["startsAt"] = args.start
                else:
                    body["duration"] = args.duration
                    if args.start:
                        body["startsAt"] = args.start
                try:
                    silence = silence_from_request(body, now)
                except ValueError as exc:
                    raise CliError(str(exc)) from None
                sid = await store.create(silence)
                print(sid)
            elif args.silence_cmd == "list":
                silences = await store.list(now, include_expired=args.all)
                rows = []
                for s in silences:
                    v = s.to_api(now)
                    rows.append(
                        [
                            v["id"],
                            v["status"],
                            ",".join(f"{k}={x}" for k, x in v["matchers"].items()),
                            v["startsAt"],
                            v["endsAt"],
                            v["createdBy"],
                            v["comment"],
                        ]
                    )
                print(
                    _table(
                        rows,
                        ["id", "status", "matchers", "starts", "ends", "created_by", "comment"],
                    )
                )
            else:
                await store.expire(args.id, now)
                print(f"expired {args.id}")
            return 0
        finally:
            await close(redis)

    return asyncio.run(go())


def _dead_reason(d: dict[str, Any]) -> str:
    """Why it died, with the cause: "permanent failure: HTTP 401: bad signature"."""
    reason = str(d.get("reason", ""))
    cause = _one_line(str(d.get("last_error", "")))
    text = f"{reason}: {cause}" if cause and cause not in reason else reason
    return text if len(text) <= 120 else text[:119] + "…"


def cmd_notifications(args: argparse.Namespace) -> int:
    config = _config(args)
    from alertd.notify.history import History, parse_since

    try:
        since = parse_since(args.since or "", time.time())
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not 1 <= args.limit <= 10_000:
        raise CliError("--limit must be 1..10000")

    async def go() -> list[dict[str, Any]]:
        redis = _redis(config.settings.redis)
        retention_s = config.settings.notify.history_retention.total_seconds()
        try:
            return await History(
                redis, keys.state_prefix(config.settings.redis.key_prefix), lambda: retention_s
            ).list(
                channel=args.channel,
                outcome=args.outcome,
                fingerprint=args.fingerprint,
                since=since,
                limit=args.limit,
            )
        finally:
            await close(redis)

    found = asyncio.run(go())
    if args.json:
        print(orjson.dumps({"notifications": found}).decode())
        return 0
    rows = [
        [
            n["queued_at"],
            n["channel"],
            n["outcome"],
            n["status"],
            n["reason"],
            str(n["alerts"]),
            str(n["attempts"]),
            n["id"],
            " ".join(str(n.get("last_error", "")).split())[:60],
        ]
        for n in found
    ]
    headers = ["queued", "channel", "outcome", "status", "reason", "alerts", "attempts", "id"]
    print(_table(rows, [*headers, "last_error"]))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    config = _config(args)
    from alertd.deadletters import DeadLetters
    from alertd.ops import replay_dead_letters

    async def go() -> int:
        redis = _redis(config.settings.redis)
        try:
            if args.dlq_cmd == "list":
                items = await DeadLetters(redis, config.settings.redis.dead_letter_stream).list(
                    args.limit
                )
                if args.json:
                    print(orjson.dumps({"dead_letters": items}).decode())
                    return 0
                rows = [
                    [
                        d["id"],
                        d.get("source", ""),
                        d.get("channel", d.get("stream_id", "")),
                        d.get("at", ""),
                        str(d.get("attempts", "")),
                        _dead_reason(d),
                    ]
                    for d in items
                ]
                headers = ["id", "source", "channel/stream_id", "at", "attempts", "reason"]
                print(_table(rows, headers))
                return 0
            bad = [i for i in args.ids or [] if not STREAM_ID.fullmatch(i)]
            if bad:
                raise CliError(
                    f"{bad[0]!r} is not a dead letter id (like 1764000000000-0); "
                    "alertd dlq list shows them"
                )
            result = await replay_dead_letters(redis, config, args.ids or None)
            print(
                f"replayed {len(result['replayed'])}, failed {len(result['failed'])}, "
                f"not found {len(result['not_found'])}"
            )
            for f in result["failed"]:
                print(f"  {f['id']}: {f['error']}")
            return 0 if not result["failed"] and not result["not_found"] else 1
        finally:
            await close(redis)

    return asyncio.run(go())


def cmd_rules_test(args: argparse.Namespace) -> int:
    from alertd.ruletest import run_file

    total_failed = 0
    total_passed = 0
    for f in args.files:
        passed, failed, report = asyncio.run(run_file(Path(f)))
        print("\n".join(report))
        total_passed += passed
        total_failed += failed
    print(f"{total_passed} passed, {total_failed} failed")
    return 1 if total_failed else 0


# --- parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    help_text = "configuration file (default ./alertd.toml, env ALERTD_CONFIG)"
    # Subcommands take --config too; SUPPRESS keeps their default from undoing a top-level one.
    common = _Parser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=help_text)
    p = _Parser(prog="alertd", description="Alerting and notification dispatch daemon.")
    # None: load_config picks ALERTD_CONFIG or ./alertd.toml, and says which it looked for.
    p.add_argument("--config", default=None, help=help_text)
    p.add_argument("--version", action="version", version=f"alertd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("run", parents=[common], help="run the daemon").set_defaults(func=cmd_run)
    sub.add_parser("check", parents=[common], help="validate config, rules, channels").set_defaults(
        func=cmd_check
    )

    sp = sub.add_parser("publish", parents=[common], help="add one event to the stream")
    sp.add_argument("name")
    sp.add_argument("rest", nargs="*", metavar="VALUE|label=value")
    sp.add_argument("--ts", help="unix seconds or RFC 3339 (default: now)")
    sp.set_defaults(func=cmd_publish)

    sp = sub.add_parser("test-alert", parents=[common], help="send a synthetic alert to channels")
    sp.add_argument(
        "--channel", action="append", help="channel name (repeatable; default every enabled)"
    )
    sp.add_argument("--severity", default="critical", choices=["info", "warning", "critical"])
    sp.set_defaults(func=cmd_test_alert)

    sp = sub.add_parser("alerts", parents=[common], help="list current alerts")
    sp.add_argument("--state", choices=["pending", "firing"])
    sp.add_argument("--severity", choices=SEVERITIES)
    sp.add_argument(
        "--filter",
        action="append",
        help="label=value, label=~regex, label=!value or label=!~regex (repeatable; all must hold)",
    )
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_alerts)

    sp = sub.add_parser("silence", parents=[common], help="add, list or expire silences")
    ssub = sp.add_subparsers(dest="silence_cmd", required=True)
    sa = ssub.add_parser("add", parents=[common], help="silence alerts matching label=value ...")
    sa.add_argument("matchers", nargs="+", metavar="label=value")
    sa.add_argument("--duration", default="2h")
    sa.add_argument("--start", help="RFC 3339 start (default now)")
    sa.add_argument("--end", help="RFC 3339 end (instead of --duration)")
    sa.add_argument(
        "--author", "--created-by", dest="author", default=os.environ.get("USER", "alertd-cli")
    )
    sa.add_argument("--comment", default="")
    sl = ssub.add_parser("list", parents=[common])
    sl.add_argument("--all", action="store_true", help="include expired silences")
    se = ssub.add_parser("expire", parents=[common])
    se.add_argument("id")
    sp.set_defaults(func=cmd_silence)

    sp = sub.add_parser("dlq", parents=[common], help="list or replay dead letters")
    dsub = sp.add_subparsers(dest="dlq_cmd", required=True)
    dl = dsub.add_parser("list", parents=[common])
    dl.add_argument("--limit", type=int, default=100)
    dl.add_argument("--json", action="store_true")
    dr = dsub.add_parser("replay", parents=[common])
    dr.add_argument("ids", nargs="*", help="dead letter ids (default: all)")
    sp.set_defaults(func=cmd_dlq)

    sp = sub.add_parser(
        "notifications", parents=[common], help="notification history, newest first"
    )
    sp.add_argument("--channel", help="only this channel's")
    sp.add_argument("--outcome", choices=["pending", "delivered", "dead-lettered", "held"])
    sp.add_argument("--fingerprint", help="only those that carried this alert")
    sp.add_argument("--since", help="RFC 3339, unix seconds, or a duration ago (1h)")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_notifications)

    sp = sub.add_parser("rules", parents=[common], help="rule tools")
    rsub = sp.add_subparsers(dest="rules_cmd", required=True)
    rt = rsub.add_parser("test", parents=[common], help="run rule unit test files")
    rt.add_argument("files", nargs="+")
    sp.set_defaults(func=cmd_rules_test)
    return p


def _redis_failure(exc: RedisError) -> str:
    """What went wrong with Redis, in one line: unreachable, login refused, or a refusal."""
    target = _TARGET[0] if _TARGET else "redis.url"
    why = _one_line(redact(str(exc))) or type(exc).__name__
    if isinstance(exc, AuthenticationError) or why.startswith(("NOAUTH", "WRONGPASS")):
        return f"Redis at {target} refused the login: {why}; check the user and password in the URL"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return f"cannot reach Redis at {target}: {why}; is redis-server running there?"
    return f"Redis at {target} answered with an error: {why}"


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigErrors as exc:
        for err in exc.errors:
            print(f"alertd: {err}", file=sys.stderr)
        return 1
    except (CliError, AlertdError, EventError, NotFoundError) as exc:
        print(f"alertd: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(f"alertd: {_redis_failure(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"alertd: {_one_line(redact(str(exc)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
