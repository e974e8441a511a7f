"""Alertmanager's API v2: alerts posted as Prometheus posts them, silences as amtool makes them."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from alertd.http.server import auth_decision
from alertd.model import rfc3339
from alertd.posted import fingerprint_of
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_e2e import ROUTE, hook

TOKEN = "v2-secret-token"


def base_url(app: Any) -> str:
    return f"http://127.0.0.1:{app.config.settings.http.port}"


async def request(
    app: Any, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base_url(app) + path, json=body, headers=headers) as resp,
    ):
        text = await resp.text()
        return resp.status, orjson.loads(text) if text else None


def prom_alert(name: str, ends_in_s: float = 60.0, **labels: str) -> dict[str, Any]:
    """An alert as Prometheus posts it: startsAt, endsAt a few intervals ahead, generatorURL."""
    now = time.time()
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} is on fire"},
        "startsAt": rfc3339(now - 30),
        "endsAt": rfc3339(now + ends_in_s),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }


async def start(
    daemons: DaemonFactory, receiver: Receiver, http: str = "", notify: str = ""
) -> Any:
    """A daemon with its HTTP API, sending every alert to the webhook `hook`."""
    cfg = daemons.write("", hook(receiver), ROUTE)
    text = cfg.read_text().replace("[http]\n", f"[http]\n{http}\n")
    cfg.write_text(text.replace("[notify]\n", f"[notify]\n{notify}\n"))
    return await daemons.start(http=True)


class TestPostedAlerts:
    """An alert posted to /api/v2/alerts is notified once, kept fresh by resends, resolved."""

    async def test_fires_once_across_resends_then_resolves(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        alert = prom_alert("DiskFull", instance="db1")
        for _ in range(3):
            assert (200, None) == await request(app, "POST", "/api/v2/alerts", [alert])
        await wait_for(lambda: receiver.bodies("/hook"))
        firing = receiver.bodies("/hook")[0]
        assert "firing" == firing["status"]
        got = firing["alerts"][0]
        assert {"alertname": "DiskFull", "instance": "db1"} == got["labels"]
        assert {"summary": "DiskFull is on fire"} == got["annotations"]
        assert alert["generatorURL"] == got["generatorURL"]
        assert fingerprint_of(alert["labels"]) == got["fingerprint"]
        # resends within the group's interval: no second notification
        for _ in range(2):
            await request(app, "POST", "/api/v2/alerts", [alert])
        await asyncio.sleep(1.5)  # longer than group_interval: a resend would have been sent
        assert 1 == len(receiver.bodies("/hook"))

        resolved = dict(alert, endsAt=rfc3339(time.time() - 1))
        await request(app, "POST", "/api/v2/alerts", [resolved])
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 2)
        last = receiver.bodies("/hook")[1]
        assert "resolved" == last["status"]
        assert resolved["endsAt"][:19] == last["alerts"][0]["endsAt"][:19]
        assert alert["startsAt"][:19] == last["alerts"][0]["startsAt"][:19]

    async def test_resolves_when_ends_at_passes(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        await request(app, "POST", "/api/v2/alerts", [prom_alert("Flaky", ends_in_s=1.0)])
        await wait_for(lambda: receiver.bodies("/hook"))
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 2, timeout_s=20)
        assert ["firing", "resolved"] == [b["status"] for b in receiver.bodies("/hook")]

    async def test_default_ends_at_is_resolve_timeout(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver, notify='resolve_timeout = "1s"')
        body = [{"labels": {"alertname": "NoEnd"}}]
        await request(app, "POST", "/api/v2/alerts", body)
        status, alerts = await request(app, "GET", "/api/v2/alerts")
        assert 200 == status
        assert ["NoEnd"] == [a["labels"]["alertname"] for a in alerts]
        assert "active" == alerts[0]["status"]["state"]
        assert [{"name": "hook"}] == alerts[0]["receivers"]
        _, v1 = await request(app, "GET", "/api/v1/alerts")
        assert [("NoEnd", "firing", "")] == [
            (a["labels"]["alertname"], a["state"], a["rule"]) for a in v1["alerts"]
        ]
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 2, timeout_s=20)
        assert ["firing", "resolved"] == [b["status"] for b in receiver.bodies("/hook")]
        assert [] == (await request(app, "GET", "/api/v2/alerts"))[1]

    async def test_a_bad_batch_stores_nothing(
        self, daemons: DaemonFactory, receiver: Receiver, redis: aioredis.Redis
    ) -> None:
        app = await start(daemons, receiver)
        good = prom_alert("Good")
        cases = [
            ([good, {"labels": {}}], "labels"),
            ([good, {"labels": {"bad-name": "x"}}], "bad-name"),
            ([good, {"labels": {"a": "b"}, "startsAt": "yesterday"}], "startsAt"),
            ([good, dict(prom_alert("Bad"), endsAt=rfc3339(time.time() - 3600))], ""),
            ({"labels": {"a": "b"}}, "list"),
        ]
        for body, reason in cases[:3] + cases[4:]:
            status, answer = await request(app, "POST", "/api/v2/alerts", body)
            assert 400 == status, body
            assert "invalid alerts" == answer["error"]
            assert any(reason in d for d in answer["details"]), answer
        assert [] == (await request(app, "GET", "/api/v2/alerts"))[1]


class TestAuth:
    """/api/v2 follows /api/v1's token rules, and trusted networks may write without one."""

    @pytest.mark.parametrize(
        ("method", "remote", "auth", "token", "trusted", "expected"),
        [
            ("POST", "10.1.2.3", None, "", (), 403),
            ("POST", "10.1.2.3", None, "", ("10.0.0.0/8",), None),
            ("POST", "::ffff:10.1.2.3", None, "", ("10.0.0.0/8",), None),
            ("POST", "192.168.1.1", None, "", ("10.0.0.0/8",), 403),
            ("GET", "10.1.2.3", None, "", (), None),
            ("POST", "127.0.0.1", None, "", (), None),
            ("GET", "127.0.0.1", None, "tok", (), 401),
            ("POST", "10.1.2.3", "Bearer tok", "tok", (), None),
            ("POST", "10.1.2.3", None, "tok", ("10.0.0.0/8",), 401),
        ],
    )
    def test_decision(
        self,
        method: str,
        remote: str,
        auth: str | None,
        token: str,
        trusted: tuple[str, ...],
        expected: int | None,
    ) -> None:
        import ipaddress

        nets = tuple(ipaddress.ip_network(n) for n in trusted)
        denial = auth_decision(method, "/api/v2/alerts", remote, auth, token, nets)
        assert expected == (denial.status if denial else None)

    async def test_token_is_required(self, daemons: DaemonFactory, receiver: Receiver) -> None:
        app = await start(daemons, receiver, http=f'token = "{TOKEN}"')
        assert 401 == (await request(app, "GET", "/api/v2/silences"))[0]
        assert 200 == (await request(app, "GET", "/api/v2/silences", token=TOKEN))[0]


class TestStatusAndReceivers:
    """amtool's status and receivers answer, with no secret in the configuration shown."""

    async def test_status(self, daemons: DaemonFactory, receiver: Receiver) -> None:
        channel = hook(receiver).replace(
            'type = "webhook"\n', 'type = "webhook"\nheaders = { "X-Api-Key" = "hdr-secret" }\n'
        )
        cfg = daemons.write("", channel, ROUTE)
        cfg.write_text(cfg.read_text().replace("[http]\n", f'[http]\ntoken = "{TOKEN}"\n'))
        app = await daemons.start(http=True)
        status, answer = await request(app, "GET", "/api/v2/status", token=TOKEN)
        assert 200 == status
        assert "ready" == answer["cluster"]["status"]
        assert "hook" in answer["config"]["original"]
        text = orjson.dumps(answer).decode()
        assert (False, False) == (TOKEN in text, "hdr-secret" in text)
        status, receivers = await request(app, "GET", "/api/v2/receivers", token=TOKEN)
        assert [{"name": "hook"}, {"name": "log"}] == receivers


# --- amtool ---------------------------------------------------------------------

AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool (prometheus-alertmanager) missing")


async def amtool(app: Any, tmp: Path, *args: str) -> str:
    """Run amtool against the daemon with the bearer token from an http config file."""
    http_cfg = tmp / "amtool-http.yml"
    http_cfg.write_text(f"authorization:\n  type: Bearer\n  credentials: {TOKEN}\n")
    proc = await asyncio.create_subprocess_exec(
        AMTOOL or "amtool",
        f"--alertmanager.url={base_url(app)}",
        f"--http.config.file={http_cfg}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert 0 == proc.returncode, err.decode()
    return out.decode()


@needs_amtool
class TestAmtool:
    """amtool adds, queries and expires silences and lists alerts, through a bearer token."""

    async def test_silence_lifecycle_mutes_posted_alert(
        self, daemons: DaemonFactory, receiver: Receiver, tmp_path: Path
    ) -> None:
        app = await start(daemons, receiver, http=f'token = "{TOKEN}"')
        sid = (
            await amtool(
                app,
                tmp_path,
                "silence",
                "add",
                "alertname=Muted",
                "env=~prod.*",
                "env!=prod-eu",
                "--comment=maintenance",
                "--author=alice",
                "--duration=1h",
            )
        ).strip()
        query = await amtool(app, tmp_path, "silence", "query", "-q")
        assert [sid] == query.split()
        status, silence = await request(app, "GET", f"/api/v2/silence/{sid}", token=TOKEN)
        assert 200 == status
        assert {
            ("alertname", "Muted", False, True),
            ("env", "prod.*", True, True),
            ("env", "prod-eu", False, False),
        } == {(m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in silence["matchers"]}
        assert "active" == silence["status"]["state"]

        await request(app, "POST", "/api/v2/alerts", [prom_alert("Muted", env="prod-us")], TOKEN)
        await request(app, "POST", "/api/v2/alerts", [prom_alert("Loud", env="prod-us")], TOKEN)
        await wait_for(lambda: receiver.bodies("/hook"))
        active = orjson.loads(await amtool(app, tmp_path, "alert", "query", "-o", "json"))
        assert ["Loud"] == [a["labels"]["alertname"] for a in active]
        silenced = await amtool(app, tmp_path, "alert", "query", "-o", "json", "--silenced")
        assert ["Muted"] == [a["labels"]["alertname"] for a in orjson.loads(silenced)]
        assert [sid] == orjson.loads(silenced)[0]["status"]["silencedBy"]
        await asyncio.sleep(1.5)
        names = [a["labels"]["alertname"] for b in receiver.bodies("/hook") for a in b["alerts"]]
        assert ["Loud"] == names

        await amtool(app, tmp_path, "silence", "expire", sid)
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 2)
        assert "Muted" == receiver.bodies("/hook")[1]["alerts"][0]["labels"]["alertname"]
        expired = await amtool(app, tmp_path, "silence", "query", "--expired", "-q")
        assert [sid] == expired.split()
        _, listed = await request(app, "GET", "/api/v1/silences", token=TOKEN)
        assert {"alertname": "Muted", "env": ["~prod.*", "!prod-eu"]} == listed["silences"][0][
            "matchers"
        ]


def v2_silence(**overrides: Any) -> dict[str, Any]:
    now = time.time()
    body = {
        "matchers": [{"name": "alertname", "value": "DiskFull", "isRegex": False}],
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(now + 3600),
        "createdBy": "alice",
        "comment": "disk swap",
    }
    body.update(overrides)
    return body


class TestSilenceUpdates:
    """A silence posted with an id is changed in place or replaced, as Alertmanager does."""

    async def test_same_matchers_change_in_place(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        status, made = await request(app, "POST", "/api/v2/silences", v2_silence())
        assert 200 == status
        sid = made["silenceID"]
        _, current = await request(app, "GET", f"/api/v2/silence/{sid}")
        longer = v2_silence(id=sid, startsAt=current["startsAt"], comment="longer")
        longer["endsAt"] = rfc3339(time.time() + 7200)
        assert (200, {"silenceID": sid}) == await request(app, "POST", "/api/v2/silences", longer)
        _, listed = await request(app, "GET", "/api/v2/silences")
        assert [(sid, "longer", "active")] == [
            (s["id"], s["comment"], s["status"]["state"]) for s in listed
        ]

    async def test_other_matchers_replace_it(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        _, made = await request(app, "POST", "/api/v2/silences", v2_silence())
        sid = made["silenceID"]
        other = v2_silence(
            id=sid, matchers=[{"name": "alertname", "value": "Disk.*", "isRegex": True}]
        )
        status, answer = await request(app, "POST", "/api/v2/silences", other)
        assert 200 == status
        assert sid != answer["silenceID"]
        _, listed = await request(app, "GET", "/api/v2/silences")
        states = {s["id"]: s["status"]["state"] for s in listed}
        assert {sid: "expired", answer["silenceID"]: "active"} == states

    async def test_unknown_id_and_bad_bodies(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        assert 404 == (await request(app, "POST", "/api/v2/silences", v2_silence(id="nope")))[0]
        assert 404 == (await request(app, "GET", "/api/v2/silence/nope"))[0]
        assert 404 == (await request(app, "DELETE", "/api/v2/silence/nope"))[0]
        empty = v2_silence(matchers=[{"name": "a", "value": "", "isRegex": False}])
        status, answer = await request(app, "POST", "/api/v2/silences", empty)
        assert (400, "invalid silence") == (status, answer["error"])
        assert ["at least one matcher must not match the empty string"] == answer["details"]
        past = v2_silence(endsAt=rfc3339(time.time() - 10))
        status, answer = await request(app, "POST", "/api/v2/silences", past)
        assert 400 == status
        assert [] == (await request(app, "GET", "/api/v2/silences"))[1]


class TestGroupsAndRestart:
    """Posted alerts show in their groups, and survive a restart of the daemon."""

    async def test_groups_by_route_and_channel(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        await request(
            app,
            "POST",
            "/api/v2/alerts",
            [prom_alert("DiskFull", instance="a"), prom_alert("DiskFull", instance="b")],
        )
        status, groups = await request(app, "GET", "/api/v2/alerts/groups")
        assert 200 == status
        assert [({"alertname": "DiskFull"}, "hook", ["a", "b"])] == [
            (
                g["labels"],
                g["receiver"]["name"],
                sorted(a["labels"]["instance"] for a in g["alerts"]),
            )
            for g in groups
        ]
        assert [] == (await request(app, "GET", "/api/v2/alerts/groups?receiver=other"))[1]
        assert 2 == len((await request(app, "GET", "/api/v2/alerts?receiver=ho.*"))[1])
        assert [] == (await request(app, "GET", "/api/v2/alerts?receiver=ho"))[1]
        assert 400 == (await request(app, "GET", "/api/v2/alerts?receiver=("))[0]
        assert 400 == (await request(app, "GET", "/api/v2/alerts?filter=broken"))[0]
        assert 400 == (await request(app, "GET", "/api/v2/alerts?active=maybe"))[0]

    async def test_restart_keeps_posted_alerts(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        await request(app, "POST", "/api/v2/alerts", [prom_alert("Survivor", ends_in_s=3)])
        await wait_for(lambda: receiver.bodies("/hook"))
        await daemons.stop(app)
        again = await daemons.start(http=True)
        _, alerts = await request(again, "GET", "/api/v2/alerts")
        assert ["Survivor"] == [a["labels"]["alertname"] for a in alerts]
        # the restarted daemon's clock resolves it when its endsAt passes
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 2, timeout_s=20)
        assert ["firing", "resolved"] == [b["status"] for b in receiver.bodies("/hook")]


INHIBIT = """
[[inhibit]]
source = { severity = "critical" }
target = { severity = "warning" }
equal = ["alertname"]
"""


class TestInhibition:
    """A posted critical alert inhibits its posted warning, as for rules' alerts."""

    async def test_warning_is_inhibited(self, daemons: DaemonFactory, receiver: Receiver) -> None:
        cfg = daemons.write("", hook(receiver), ROUTE + INHIBIT)
        cfg.write_text(cfg.read_text().replace('group_wait = "0s"', 'group_wait = "500ms"'))
        app = await daemons.start(http=True)
        await request(
            app,
            "POST",
            "/api/v2/alerts",
            [prom_alert("Disk", severity="critical"), prom_alert("Disk", severity="warning")],
        )
        await wait_for(lambda: receiver.bodies("/hook"))
        sent = [a["labels"]["severity"] for b in receiver.bodies("/hook") for a in b["alerts"]]
        assert ["critical"] == sent
        _, alerts = await request(app, "GET", "/api/v2/alerts?active=false")
        assert [("warning", "suppressed")] == [
            (a["labels"]["severity"], a["status"]["state"]) for a in alerts
        ]
        assert alerts[0]["status"]["inhibitedBy"]
