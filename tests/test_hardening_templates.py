"""Templates cannot blow up notifications or leak the environment (issue 19)."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from alertd.settings import load_config
from alertd.templates import MAX_RENDERED, render_template
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_cli_check import alertd
from tests.test_e2e import ROUTE, hook

RULE = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
window = "1m"
group_by = ["a", "b", "c", "d", "e"]
critical = "> 10"
summary = {summary}
"""


def write(base: Path, summary: str, extra: str = "") -> Path:
    (base / "rules").mkdir(exist_ok=True)
    (base / "rules" / "r.toml").write_text(RULE.format(summary=summary))
    cfg = base / "alertd.toml"
    cfg.write_text('[paths]\nrules = ["rules/*.toml"]\nchannels = []\n' + extra)
    return cfg


class TestWidthAndPrecision:
    """A format spec that would render megabytes is refused at `alertd check`."""

    def test_check_refuses_a_huge_width(self, tmp_path: Path) -> None:
        cfg = write(tmp_path, '"{value:>999999999}"')
        result = alertd("check", "--config", str(cfg), cwd=tmp_path)
        assert 1 == result.returncode
        assert "rule QueueBacklog" in result.stderr + result.stdout
        assert "width and precision are at most 1024" in result.stderr + result.stdout
        assert "Traceback" not in result.stderr

    def test_check_refuses_a_huge_precision(self, tmp_path: Path) -> None:
        cfg = write(tmp_path, '"{value:.5000f}"')
        result = alertd("check", "--config", str(cfg), cwd=tmp_path)
        assert (1, True) == (
            result.returncode,
            "precision is 5000" in result.stdout + result.stderr,
        )

    def test_ordinary_specs_pass(self, tmp_path: Path) -> None:
        cfg = write(tmp_path, '"{a}: {value:.2%} over {value:>10,.1f} ({threshold:g})"')
        assert 0 == alertd("check", "--config", str(cfg), cwd=tmp_path).returncode

    def test_render_ignores_a_huge_spec_that_escaped_the_check(self) -> None:
        assert "1.5" == render_template("{value:>999999999}", {"value": 1.5})


class TestRenderedSize:
    """Every rendered annotation is at most 4 KiB, cut with an ellipsis."""

    async def test_long_labels_make_a_capped_summary(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = RULE.format(summary='"{a}{b}{c}{d}{e}{a}{b}{c}{d}{e}"')
        daemons.write(rules=rules, channels=hook(receiver), extra=ROUTE)
        await daemons.start()
        value = "x" * 1024
        labels = dict.fromkeys("abcde", value)
        await redis.xadd("alertd:events", {"name": "queue_depth", "value": "50", **labels})
        (body,) = await wait_for(lambda: receiver.bodies("/hook"), timeout_s=30)
        summary = body["alerts"][0]["annotations"]["summary"]
        assert (MAX_RENDERED, "\u2026") == (len(summary), summary[-1])


class TestEnvironmentInRuleTemplates:
    """`${VAR}` in a rule template is refused unless the variable is listed as public."""

    def test_secret_variable_is_refused(self, tmp_path: Path) -> None:
        cfg = write(tmp_path, '"password is ${SMTP_PASSWORD}"')
        result = alertd(
            "check", "--config", str(cfg), cwd=tmp_path, env={"SMTP_PASSWORD": "hunter2-secret"}
        )
        out = result.stdout + result.stderr
        assert 1 == result.returncode
        assert "rule QueueBacklog.summary" in out and "[env] public" in out
        assert "hunter2-secret" not in out

    def test_public_variable_is_allowed_and_expanded(self, tmp_path: Path) -> None:
        cfg = write(tmp_path, '"{a} in ${REGION}"', extra='[env]\npublic = ["REGION"]\n')
        result = alertd("check", "--config", str(cfg), cwd=tmp_path, env={"REGION": "eu-1"})
        assert 0 == result.returncode, result.stdout + result.stderr
        config = load_config(cfg, env={"REGION": "eu-1"})
        assert "{a} in eu-1" == config.rules[0].spec.summary

    def test_label_values_are_checked_too(self, tmp_path: Path) -> None:
        cfg = write(tmp_path, '"ok"')
        rules = tmp_path / "rules" / "r.toml"
        rules.write_text(rules.read_text() + 'labels = { token = "${API_TOKEN:-none}" }\n')
        result = alertd("check", "--config", str(cfg), cwd=tmp_path)
        assert (1, True) == (result.returncode, "labels.token" in result.stdout + result.stderr)
