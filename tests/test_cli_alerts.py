"""`alertd alerts` and `alertd silence add|list|expire`, run as commands on a daemon's Redis."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from alertd.model import fingerprint
from tests.conftest import DaemonFactory, stored_alerts, wait_for

ALERTD = Path(sys.executable).with_name("alertd")

RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
window = "1m"
group_by = ["service", "queue"]
warning = "> 1000"
critical = "> 5000"
"""

INHIBIT = """
[[inhibit]]
source = { severity = "critical" }
target = { severity = "warning" }
equal = ["service"]
"""


async def cli(*args: str, config: Path) -> tuple[int, str, str]:
    """Run `alertd ARGS --config CONFIG`; (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    cmd = [str(ALERTD)] if ALERTD.exists() else [sys.executable, "-m", "alertd"]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    return int(proc.returncode or 0), out.decode(), err.decode()


def table(text: str) -> list[dict[str, str]]:
    """A printed table as one dict per row, keyed by the lower-cased headers."""
    lines = text.strip().splitlines()
    if lines == ["(none)"]:
        return []
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    headers = [h.lower() for h in lines[0].split()]
    bounds = [*starts[1:], None]
    return [
        {h: line[s:e].strip() for h, s, e in zip(headers, starts, bounds, strict=True)}
        for line in lines[1:]
    ]


async def queue(redis: aioredis.Redis, service: str, name: str, depth: int) -> None:
    fields = {"name": "queue_depth", "value": str(depth), "service": service, "queue": name}
    await redis.xadd("alertd:events", fields)


def fp(service: str, name: str) -> str:
    return fingerprint({"alertname": "QueueBacklog", "service": service, "queue": name})


async def alert_count_is(redis: aioredis.Redis, n: int) -> bool:
    return n == len(await stored_alerts(redis))


class TestAlerts:
    """`alertd alerts` shows current alerts and whether a silence or an inhibition mutes them."""

    async def test_table_and_json(self, daemons: DaemonFactory, redis: aioredis.Redis) -> None:
        cfg = daemons.write(RULES, extra=INHIBIT)
        await daemons.start()
        code, out, err = await cli("silence", "add", "service=b", "--duration", "1h", config=cfg)
        assert 0 == code, err
        silence_id = out.strip()
        await queue(redis, "a", "q1", 7000)
        await queue(redis, "a", "q2", 2000)
        await queue(redis, "b", "q1", 2000)
        await queue(redis, "c", "q1", 2000)
        await wait_for(lambda: alert_count_is(redis, 4), timeout_s=5)

        code, out, err = await cli("alerts", config=cfg)
        assert 0 == code, err
        rows = {
            r["labels"]: (r["state"], r["severity"], r["value"], r["muted"]) for r in table(out)
        }
        expected = {
            "queue=q1,service=a": ("firing", "critical", "7000", ""),
            "queue=q2,service=a": ("firing", "warning", "2000", "inhibited"),
            "queue=q1,service=b": ("firing", "warning", "2000", "silenced"),
            "queue=q1,service=c": ("firing", "warning", "2000", ""),
        }
        assert expected == rows

        code, out, err = await cli("alerts", "--json", "--severity", "warning", config=cfg)
        assert 0 == code, err
        got = {
            a["fingerprint"]: (a["silencedBy"], a["inhibitedBy"])
            for a in orjson.loads(out)["alerts"]
        }
        expected_json = {
            fp("a", "q2"): ([], [fp("a", "q1")]),
            fp("b", "q1"): ([silence_id], []),
            fp("c", "q1"): ([], []),
        }
        assert expected_json == got


class TestSilenceCommands:
    """`alertd silence add|list|expire` create, show and end silences as tables."""

    async def test_add_list_expire(self, daemons: DaemonFactory) -> None:
        cfg = daemons.write(RULES)
        add = ["silence", "add", "service=api", "env=~prod.*", "--duration", "2h"]
        code, out, err = await cli(*add, "--author", "alice", "--comment", "deploy", config=cfg)
        assert 0 == code, err
        sid = out.strip()
        assert 26 == len(sid)

        code, out, _ = await cli("silence", "list", config=cfg)
        rows = [
            (r["id"], r["status"], r["matchers"], r["created_by"], r["comment"]) for r in table(out)
        ]
        assert [(sid, "active", "service=api,env=~prod.*", "alice", "deploy")] == rows

        code, out, err = await cli("silence", "expire", sid, config=cfg)
        assert (0, f"expired {sid}") == (code, out.strip()), err
        code, out, _ = await cli("silence", "list", config=cfg)
        assert [] == table(out)
        code, out, _ = await cli("silence", "list", "--all", config=cfg)
        assert [(sid, "expired")] == [(r["id"], r["status"]) for r in table(out)]

    async def test_bad_matchers_are_one_line_errors(self, daemons: DaemonFactory) -> None:
        cfg = daemons.write(RULES)
        code, out, err = await cli("silence", "add", "service", config=cfg)
        assert (1, "") == (code, out)
        assert ["alertd: matcher 'service' must be label=value"] == [
            line.split(" (")[0] for line in err.strip().splitlines()
        ]
        code, _, err = await cli("silence", "add", "service=~.*", config=cfg)
        assert 1 == code
        assert "must not match the empty string" in err

    async def test_expire_unknown_silence_fails(self, daemons: DaemonFactory) -> None:
        cfg = daemons.write(RULES)
        code, _, err = await cli("silence", "expire", "NOPE", config=cfg)
        assert (1, "alertd: no silence with id 'NOPE'") == (code, err.strip())


class TestAlertFilters:
    """`alertd alerts --filter` takes the config's matchers (`=`, `~`, `!`, `!~`) and refuses
    what it cannot read, in one line."""

    async def test_matcher_syntax(self, daemons: DaemonFactory, redis: aioredis.Redis) -> None:
        cfg = daemons.write(RULES)
        await daemons.start()
        await queue(redis, "billing", "q1", 2000)
        await queue(redis, "billing-eu", "q1", 2000)
        await queue(redis, "search", "q1", 2000)
        await wait_for(lambda: alert_count_is(redis, 3), timeout_s=10)

        async def services(*filters: str) -> list[str]:
            args = [a for f in filters for a in ("--filter", f)]
            code, out, err = await cli("alerts", "--json", *args, config=cfg)
            assert 0 == code, err
            return sorted(a["labels"]["service"] for a in orjson.loads(out)["alerts"])

        assert ["billing"] == await services("service=billing")
        assert ["billing", "billing-eu"] == await services("service=~bill.*")
        assert ["billing-eu", "search"] == await services("service=!billing")
        assert ["search"] == await services("service=!~bill.*")
        assert ["billing-eu"] == await services("service=~bill.*", "service=!billing")

    async def test_unreadable_filters_fail(self, daemons: DaemonFactory) -> None:
        cfg = daemons.write(RULES)
        for bad, words in [
            ("service", "'service' is not label=value"),
            ("nonsense", "'nonsense' is not label=value"),
            ("service=~(", "invalid regular expression '('"),
        ]:
            code, out, err = await cli("alerts", "--filter", bad, config=cfg)
            assert (1, "") == (code, out), bad
            [line] = err.strip().splitlines()
            assert line.startswith("alertd: --filter: ") and words in line, line

    async def test_unknown_severity_fails(self, daemons: DaemonFactory) -> None:
        cfg = daemons.write(RULES)
        code, out, err = await cli("alerts", "--severity", "crit", config=cfg)
        assert (2, "") == (code, out)
        assert "invalid choice: 'crit' (choose from 'info', 'warning', 'critical')" in err
