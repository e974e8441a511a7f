"""Channel templates: `alertd check` names the file and line of one that fails; one that
renders becomes the message body (sandboxed, HTML autoescaped where it matters)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from alertd.channels.base import Channel, ChannelContext
from alertd.channels.email import EmailChannel, EmailConfig
from alertd.channels.registry import CHANNEL_TYPES
from alertd.notify.delivery import deliver
from alertd.settings import load_config
from tests.conftest import DaemonFactory, Receiver
from tests.service_stubs import DISCORD_TOKEN, TELEGRAM_CHAT, TELEGRAM_TOKEN, Services
from tests.test_channel_slack import make_alert, make_notification
from tests.test_cli_check import alertd

CHAT = "{{ status | upper }}: {% for a in alerts %}{{ a.labels.instance }} {% endfor %}\n"


def table(kind: str, **keys: str) -> str:
    """A channel `c` of `kind` using templates/t.j2 (or `template=` another)."""
    keys.setdefault("template", "templates/t.j2")
    if kind == "email":
        keys = {"host": "h", "from": "a@b.c", **keys}
    body = "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in keys.items())
    to = 'to = ["d@e.f"]\n' if kind == "email" else ""
    return f'[channels.c]\ntype = "{kind}"\n{to}{body}'


def write(base: Path, channel: str, templates: dict[str, str]) -> Path:
    (base / "templates").mkdir(parents=True, exist_ok=True)
    for name, text in templates.items():
        (base / "templates" / name).write_text(text)
    (base / "channels").mkdir(exist_ok=True)
    (base / "channels" / "c.toml").write_text(channel)
    (base / "alertd.toml").write_text("")
    return base / "alertd.toml"


def load_channel(
    base: Path, channel: str, templates: dict[str, str], ctx: ChannelContext
) -> Channel[Any]:
    config = load_config(write(base, channel, templates), env={})
    cfg = config.channels["c"]
    return CHANNEL_TYPES[cfg.type]("c", cfg, ctx)


@pytest.fixture
async def ctx() -> AsyncIterator[ChannelContext]:
    session = aiohttp.ClientSession()
    yield ChannelContext(http=session, external_url="http://alertd.example.com:9099")
    await session.close()


class TestCheckNamesFileAndLine:
    """A template that would fail is an `alertd check` error naming its file and line."""

    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            (
                "ok\n{% for a in alerts %}\n{{ a.labels.x }\n{% endfor %}\n",
                "templates/t.j2 line 3:",
            ),
            (
                "ok\n\n{{ alerts[0].nope.deeper }}\n",
                "templates/t.j2 line 3: 'dict object' has no attribute 'nope'",
            ),
            (
                "{{ status }}\n{{ ().__class__.__bases__ }}\n",
                "templates/t.j2 line 2: access to attribute '__class__'",
            ),
            ("{{ status }}\n{{ 1 // 0 }}\n", "templates/t.j2 line 2: ZeroDivisionError"),
            ("not json {{ status }}\n", "templates/t.j2: does not render JSON"),
        ],
        ids=["syntax", "undefined", "sandbox", "runtime", "not-json"],
    )
    def test_error_names_file_and_line(self, tmp_path: Path, template: str, expected: str) -> None:
        hook = table("webhook", url="http://127.0.0.1:1/x")
        write(tmp_path, hook, {"t.j2": template})
        result = alertd("check", "--config", "alertd.toml", cwd=tmp_path)
        assert 1 == result.returncode
        assert "channels/c.toml channel c: template:" in result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr

    def test_missing_file_and_types_without_templates(self, tmp_path: Path) -> None:
        channels = (
            table("slack", webhook_url="https://x/y", template="templates/gone.j2")
            + '[channels.p]\ntype = "pagerduty"\nrouting_key = "k"\ntemplate = "templates/t.j2"\n'
        )
        write(tmp_path, channels, {"t.j2": "x"})
        result = alertd("check", "--config", "alertd.toml", cwd=tmp_path)
        assert 1 == result.returncode
        assert "templates/gone.j2: cannot read" in result.stderr
        assert "a channel of type 'pagerduty' takes no template" in result.stderr

    def test_email_template_needs_a_block(self, tmp_path: Path) -> None:
        email = table("email")
        write(tmp_path, email, {"t.j2": "{{ status }}"})
        result = alertd("check", "--config", "alertd.toml", cwd=tmp_path)
        assert "an email template defines blocks subject, text and/or html" in result.stderr

    def test_a_good_template_passes(self, tmp_path: Path) -> None:
        slack = table("slack", webhook_url="https://x/y")
        write(tmp_path, slack, {"t.j2": CHAT})
        result = alertd("check", "--config", "alertd.toml", cwd=tmp_path)
        assert 0 == result.returncode, result.stderr
        assert "templates: 1 rendered on a sample notification" in result.stdout


class TestRenderedBody:
    """A template that renders is what the receiver gets."""

    async def test_webhook_body_is_the_whole_template(
        self, tmp_path: Path, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        hook = table("webhook", url=f"{receiver.url}/hook")
        ch = load_channel(
            tmp_path,
            hook,
            {
                "t.j2": '{"s": {{ status | tojson }}, "n": {{ alerts | length }},'
                ' "id": {{ id | tojson }}}'
            },
            ctx,
        )
        n = make_notification([make_alert(0), make_alert(1)])
        await ch.send(n)
        assert [{"s": "firing", "n": 2, "id": n.id}] == receiver.bodies("/hook")

    async def test_slack_text_and_blocks(
        self, tmp_path: Path, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        slack = table("slack", webhook_url=f"{receiver.url}/s")
        ch = load_channel(tmp_path, slack, {"t.j2": CHAT}, ctx)
        await ch.send(make_notification([make_alert(0), make_alert(1)]))
        body = receiver.bodies("/s")[0]
        assert "FIRING: api-0 api-1" == body["text"]
        assert [
            {"type": "section", "text": {"type": "mrkdwn", "text": "FIRING: api-0 api-1"}}
        ] == body["attachments"][0]["blocks"]

    async def test_discord_teams_telegram_text(
        self, tmp_path: Path, services: Services, ctx: ChannelContext
    ) -> None:
        cases = {
            "discord": table("discord", webhook_url=services.discord),
            "teams": table("teams", webhook_url=services.teams),
            "telegram": table(
                "telegram", bot_token=TELEGRAM_TOKEN, chat_id=TELEGRAM_CHAT, api_url=services.url
            ),
        }
        template = "<b>{{ status }}</b> {% for a in alerts %}{{ a.labels.q }}{% endfor %}"
        n = make_notification([make_alert(0, extra_labels={"q": "<i>&"})])
        for kind, toml in cases.items():
            ch = load_channel(tmp_path / kind, toml, {"t.j2": template}, ctx)
            await ch.send(n)
        assert [] == services.of("discord", ok=False) + services.of(
            "teams", ok=False
        ) + services.of("telegram", ok=False)
        assert "<b>firing</b> <i>&" == services.of("discord")[0].body["embeds"][0]["description"]
        card = services.of("teams")[0].body["attachments"][0]["content"]
        assert {"type": "TextBlock", "text": "<b>firing</b> <i>&", "wrap": True} == card["body"][1]
        # Telegram's text is HTML: the label is escaped, the template's own markup is not.
        assert "<b>firing</b> &lt;i&gt;&amp;" == services.of("telegram")[0].body["text"]
        assert DISCORD_TOKEN not in orjson.dumps([c.body for c in services.calls]).decode()

    def test_email_blocks_with_html_autoescaped(self, tmp_path: Path) -> None:
        template = (
            "{% block subject %}[{{ status }}] {{ commonLabels.q }}{% endblock %}"
            "{% block text %}text {{ commonLabels.q }}{% endblock %}"
            "{% block html %}<p>{{ commonLabels.q }}</p>{% endblock %}"
        )
        email = table("email")
        ch = load_channel(tmp_path, email, {"t.j2": template}, ChannelContext())
        assert isinstance(ch, EmailChannel) and isinstance(ch.config, EmailConfig)
        msg = ch.build_message(make_notification([make_alert(0, extra_labels={"q": "<b>x</b>"})]))
        text, html = (p.get_content() for p in msg.iter_parts())
        assert "[firing] <b>x</b>" == msg["Subject"]
        assert "text <b>x</b>" == text.strip()
        assert "<p>&lt;b&gt;x&lt;/b&gt;</p>" == html.strip()

    async def test_a_template_broken_after_loading_dead_letters_with_file_and_line(
        self, tmp_path: Path, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        hook = table("webhook", url=f"{receiver.url}/hook")
        ch = load_channel(tmp_path, hook, {"t.j2": '{"s": {{ status | tojson }}}'}, ctx)
        (tmp_path / "templates" / "t.j2").write_text("{\n{{ alerts[0].x.y }}\n}")
        result = await deliver(ch, make_notification([make_alert()]))
        assert (False, True, 1) == (result.ok, result.permanent, result.attempts)
        assert "template templates/t.j2 line 2:" in result.error
        assert [] == receiver.received


class TestReload:
    """An edited template is used after a reload, without a restart."""

    async def test_reload_takes_the_edited_template(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        hook = table("webhook", url=f"{receiver.url}/hook")
        (daemons.dir / "templates").mkdir()
        (daemons.dir / "templates" / "t.j2").write_text('{"v": 1}')
        daemons.write("", hook)
        app = await daemons.start(http=True)
        base = f"http://{app.config.settings.http.listen}/api/v1"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/test-alert", json={"channel": "c"}) as resp:
                assert 200 == resp.status
            template = daemons.dir / "templates" / "t.j2"
            template.write_text('{"v": 2}')
            stamp = template.stat().st_mtime + 2
            os.utime(template, (stamp, stamp))
            async with http.post(f"{base}/reload") as resp:
                assert 200 == resp.status
            async with http.post(f"{base}/test-alert", json={"channel": "c"}) as resp:
                assert 200 == resp.status
        assert [{"v": 1}, {"v": 2}] == receiver.bodies("/hook")
