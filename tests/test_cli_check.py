"""`alertd check`: the shipped config passes; every broken file is named with its key."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def alertd(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "alertd", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A copy of the shipped alertd.toml, rules/ and channels/."""
    shutil.copy(ROOT / "alertd.toml", tmp_path / "alertd.toml")
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "channels", tmp_path / "channels")
    return tmp_path


class TestShippedConfig:
    """What ships validates as it is."""

    def test_check_passes(self, shipped: Path) -> None:
        result = alertd("check", "--config", "alertd.toml", cwd=shipped)
        assert 0 == result.returncode, result.stderr
        assert "rules: 8" in result.stdout

    def test_empty_config_is_valid(self, tmp_path: Path) -> None:
        (tmp_path / "alertd.toml").write_text("")
        result = alertd("check", "--config", str(tmp_path / "alertd.toml"), cwd=tmp_path)
        assert 0 == result.returncode, result.stderr
        assert "1 log" in result.stdout


BROKEN_RULES = [
    (
        "threshhold",
        '[[rules]]\nname = "R"\nmetric = "m"\ncritical = "> 1"\nthreshhold = 3\n',
        ["rules/bad.toml", "threshhold"],
    ),
    (
        "condition",
        '[[rules]]\nname = "R"\nmetric = "m"\ncritical = "above 1"\n',
        ["rules/bad.toml", "rule R", "critical"],
    ),
    (
        "duration",
        '[[rules]]\nname = "R"\nmetric = "m"\ncritical = "> 1"\nwindow = "5 minutes"\n',
        ["rules/bad.toml", "window"],
    ),
    ("no level", '[[rules]]\nname = "R"\nmetric = "m"\n', ["rules/bad.toml", "rule R"]),
    (
        "template",
        '[[rules]]\nname = "R"\nmetric = "m"\ncritical = "> 1"\nsummary = "{labels.x}"\n',
        ["rules/bad.toml", "summary"],
    ),
    ("toml", '[[rules]\nname = "R"\n', ["rules/bad.toml", "TOML"]),
    (
        "unknown channel",
        '[[rules]]\nname = "R"\nmetric = "m"\ncritical = "> 1"\nchannels = ["nope"]\n',
        ["rules/bad.toml", "nope"],
    ),
]


class TestBrokenFiles:
    """Each kind of mistake: exit 1, one line per error naming the file and key, no traceback."""

    @pytest.mark.parametrize(
        ("case", "text", "expected"), BROKEN_RULES, ids=[c[0] for c in BROKEN_RULES]
    )
    def test_broken_rule_file(
        self, shipped: Path, case: str, text: str, expected: list[str]
    ) -> None:
        (shipped / "rules" / "bad.toml").write_text(text)
        result = alertd("check", "--config", "alertd.toml", cwd=shipped)
        assert 1 == result.returncode
        assert "Traceback" not in result.stderr
        line = result.stderr.strip().splitlines()[0]
        for part in expected:
            assert part in line

    def test_did_you_mean(self, shipped: Path) -> None:
        (shipped / "rules" / "bad.toml").write_text(
            '[[rules]]\nname = "R"\nmetric = "m"\ncritical = "> 1"\nwindw = "5m"\n'
        )
        result = alertd("check", "--config", "alertd.toml", cwd=shipped)
        assert "did you mean 'window'?" in result.stderr

    def test_unknown_config_key(self, shipped: Path) -> None:
        cfg = shipped / "alertd.toml"
        cfg.write_text(cfg.read_text().replace("batch_size", "batchsize"))
        result = alertd("check", "--config", "alertd.toml", cwd=shipped)
        assert 1 == result.returncode
        assert "unknown key 'batchsize' in alertd.toml" in result.stderr
        assert "did you mean 'batch_size'?" in result.stderr

    def test_unknown_channel_type(self, shipped: Path) -> None:
        (shipped / "channels" / "bad.toml").write_text('[channels.pager]\ntype = "pagerdooty"\n')
        result = alertd("check", "--config", "alertd.toml", cwd=shipped)
        assert 1 == result.returncode
        assert "channels/bad.toml" in result.stderr
        assert "did you mean 'pagerduty'?" in result.stderr

    def test_missing_env_var(self, shipped: Path) -> None:
        (shipped / "channels" / "bad.toml").write_text(
            '[channels.s]\ntype = "slack"\nwebhook_url = "${SLACK_URL_FOR_TEST}"\n'
        )
        result = alertd("check", "--config", "alertd.toml", cwd=shipped)
        assert 1 == result.returncode
        assert "SLACK_URL_FOR_TEST" in result.stderr
        assert "channels/bad.toml" in result.stderr

    def test_secret_not_echoed(self, shipped: Path) -> None:
        (shipped / "channels" / "bad.toml").write_text(
            '[channels.h]\ntype = "webhook"\nurl = "http://x"\nsecret = "not-base64-$$$-hunter2"\n'
        )
        result = alertd("check", "--config", "alertd.toml", cwd=shipped)
        assert 1 == result.returncode
        assert "hunter2" not in result.stderr

    def test_missing_config_file(self, tmp_path: Path) -> None:
        result = alertd("check", "--config", "nope.toml", cwd=tmp_path)
        assert 1 == result.returncode
        assert "nope.toml" in result.stderr
        assert "Traceback" not in result.stderr

    def test_env_interpolation(self, shipped: Path) -> None:
        (shipped / "channels" / "hook.toml").write_text(
            '[channels.h]\ntype = "webhook"\nurl = "${HOOK_URL:-http://127.0.0.1:1/x}"\n'
        )
        result = alertd(
            "check", "--config", "alertd.toml", cwd=shipped, env={"HOOK_URL": "http://example/"}
        )
        assert 0 == result.returncode, result.stderr
