"""Mistakes of the first hour, made as a newcomer makes them: each answered in one line
on stderr that says what is wrong, where it came from and what to do; exit non-zero."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import redis as syncredis

from tests.conftest import RedisServer, free_port
from tests.test_cli_check import alertd, shipped

__all__ = ["shipped"]  # the fixture, used by name


def one_line(stderr: str) -> str:
    """The single line an error must be (fails on tracebacks and multi-line output)."""
    lines = stderr.strip().splitlines()
    assert 1 == len(lines), stderr
    assert "Traceback" not in stderr
    return lines[0]


def set_key(config_dir: Path, key: str, value: str) -> None:
    """Set `key = value` where the shipped alertd.toml sets that key."""
    cfg = config_dir / "alertd.toml"
    text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", cfg.read_text(), count=1)
    assert 1 == n
    cfg.write_text(text)


BAD_URLS = [
    ("redis:/127.0.0.1:6391", "'redis:' without '//'"),
    ("127.0.0.1:6391", "has no scheme"),
    ("http://127.0.0.1:6391/0", "scheme 'http:'"),
    ("redis://127.0.0.1:63x1/0", "port '63x1', not a number"),
    ("redis://127.0.0.1:99999/0", "port '99999', not a number"),
    ("redis:///0", "names no host"),
    ("redis://127.0.0.1:6391/zero", "database 'zero', not a number"),
]


class TestRedisUrl:
    """A Redis URL alertd would misread is refused before anything connects."""

    @pytest.mark.parametrize("command", [["check"], ["alerts"], ["publish", "x", "1"], ["run"]])
    @pytest.mark.parametrize(("url", "why"), BAD_URLS, ids=[u for u, _ in BAD_URLS])
    def test_env_url_refused_by_every_command(
        self, shipped: Path, command: list[str], url: str, why: str
    ) -> None:
        result = alertd(*command, cwd=shipped, env={"ALERTD_REDIS_URL": url})

        line = one_line(result.stderr)
        assert 1 == result.returncode
        assert line.startswith("alertd: environment variable ALERTD_REDIS_URL: "), line
        assert why in line
        assert "alertd.toml" not in line

    def test_file_url_names_the_file_and_key(self, shipped: Path) -> None:
        set_key(shipped, "url", '"redis:/10.0.0.1"')

        result = alertd("check", cwd=shipped)

        line = one_line(result.stderr)
        assert line.startswith("alertd: alertd.toml: redis.url: Redis URL 'redis:/10.0.0.1'"), line

    def test_password_is_masked(self, shipped: Path) -> None:
        result = alertd(
            "check", cwd=shipped, env={"ALERTD_REDIS_URL": "redis://:hunter22@10.0.0.1:port/0"}
        )

        line = one_line(result.stderr)
        assert "hunter22" not in line
        assert "redis://:***@10.0.0.1:port/0" in line

    def test_unreachable_redis_names_address_and_source(self, shipped: Path) -> None:
        url = f"redis://127.0.0.1:{free_port()}/0"
        result = alertd("alerts", cwd=shipped, env={"ALERTD_REDIS_URL": url})

        line = one_line(result.stderr)
        assert 2 == result.returncode
        assert line.startswith(f"alertd: cannot reach Redis at {url} (from ALERTD_REDIS_URL)")


class TestEnvironmentErrors:
    """A bad ALERTD_* value names the variable, in plain words, not alertd.toml."""

    def test_log_level(self, shipped: Path) -> None:
        result = alertd("check", cwd=shipped, env={"ALERTD_LOG_LEVEL": "loud"})

        assert 1 == result.returncode
        assert (
            "alertd: environment variable ALERTD_LOG_LEVEL: "
            "'loud' is not one of 'debug', 'info', 'warning', 'error'"
        ) == one_line(result.stderr)

    def test_http_listen(self, shipped: Path) -> None:
        result = alertd("check", cwd=shipped, env={"ALERTD_HTTP_LISTEN": "9099"})

        assert 1 == result.returncode
        assert (
            "alertd: environment variable ALERTD_HTTP_LISTEN: listen must be HOST:PORT, got '9099'"
        ) == one_line(result.stderr)

    def test_same_mistake_in_the_file_names_the_file(self, shipped: Path) -> None:
        set_key(shipped, "level", '"loud"')

        result = alertd("check", cwd=shipped)

        line = one_line(result.stderr)
        assert line.startswith("alertd: alertd.toml: "), line
        assert "'loud' is not one of" in line


class TestConfigNotFound:
    """Without alertd.toml at hand, the error says where alertd looked and how to point it."""

    def test_default_path(self, tmp_path: Path) -> None:
        result = alertd("alerts", cwd=tmp_path)

        assert 1 == result.returncode
        assert (
            f"alertd: alertd.toml: file not found in {tmp_path}; run alertd where alertd.toml "
            "is, or pass --config PATH (or set ALERTD_CONFIG)"
        ) == one_line(result.stderr)

    def test_named_by_environment(self, tmp_path: Path) -> None:
        result = alertd("check", cwd=tmp_path, env={"ALERTD_CONFIG": "/etc/nope/alertd.toml"})

        line = one_line(result.stderr)
        assert line.startswith("alertd: /etc/nope/alertd.toml: file not found"), line
        assert "ALERTD_CONFIG" in line

    def test_named_by_flag(self, tmp_path: Path) -> None:
        result = alertd("check", "--config", "conf/alertd.toml", cwd=tmp_path)

        line = one_line(result.stderr)
        assert line.startswith("alertd: conf/alertd.toml: file not found"), line
        assert f"{tmp_path}/conf" in line
        assert "--config" in line


class TestPublishNeedsOnlyRedis:
    """`alertd publish` runs on a producer's machine: it needs the Redis URL and stream only."""

    def test_without_any_config_file(self, tmp_path: Path, redis_server: RedisServer) -> None:
        client = syncredis.Redis.from_url(redis_server.url)
        client.delete("alertd:events")

        result = alertd(
            "publish",
            "queue_depth",
            "7",
            "q=a",
            cwd=tmp_path,
            env={"ALERTD_REDIS_URL": redis_server.url},
        )

        assert 0 == result.returncode, result.stderr
        assert 1 == client.xlen("alertd:events")

    def test_broken_rules_do_not_stop_it(self, shipped: Path, redis_server: RedisServer) -> None:
        (shipped / "rules" / "broken.toml").write_text("[[rules]]\nname = 'X'\n")
        client = syncredis.Redis.from_url(redis_server.url)
        client.delete("alertd:events")

        published = alertd(
            "publish", "queue_depth", "7", cwd=shipped, env={"ALERTD_REDIS_URL": redis_server.url}
        )
        checked = alertd("check", cwd=shipped, env={"ALERTD_REDIS_URL": redis_server.url})

        assert (0, 1) == (published.returncode, checked.returncode), published.stderr
        assert 1 == client.xlen("alertd:events")


class TestUsageErrors:
    """Wrong arguments are one line naming the command, not argparse's usage block."""

    def test_unknown_severity(self, shipped: Path) -> None:
        result = alertd("alerts", "--severity", "crit", cwd=shipped)

        assert 2 == result.returncode
        assert (
            "alertd alerts: argument --severity: invalid choice: 'crit' "
            "(choose from 'info', 'warning', 'critical'); see 'alertd alerts --help'"
        ) == one_line(result.stderr)

    def test_unknown_command(self, shipped: Path) -> None:
        result = alertd("alert", cwd=shipped)

        assert 2 == result.returncode
        assert "see 'alertd --help'" in one_line(result.stderr)


class TestRuleFileGivenToRulesTest:
    """`alertd rules test` on a rule file says it is one, and names its test file."""

    def test_points_at_the_test_file(self, shipped: Path) -> None:
        result = alertd("rules", "test", "rules/default.toml", cwd=shipped)

        assert 1 == result.returncode
        assert (
            "alertd: rules/default.toml: is a rule file (it has [[rules]]), not a test file "
            "([[tests]] and rule_files); run alertd rules test rules/default.test.toml"
        ) == one_line(result.stderr)


class TestUnknownChannelInRoute:
    """A misspelled channel in a route gets "did you mean", the channels there are, and
    routes counted from 1."""

    def test_did_you_mean_and_the_list(self, shipped: Path) -> None:
        (shipped / "channels" / "ops.toml").write_text(
            '[channels.ops-hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
        )
        cfg = shipped / "alertd.toml"
        cfg.write_text(
            cfg.read_text()
            + '\n[[routes]]\nchannels = ["log"]\n\n[[routes]]\nchannels = ["ops-hoook"]\n'
        )

        result = alertd("check", cwd=shipped)

        assert 1 == result.returncode
        assert (
            "alertd: alertd.toml: routes #2.channels: unknown channel 'ops-hoook'; "
            "did you mean 'ops-hook'? (channels: log, ops-hook)"
        ) == one_line(result.stderr)

    def test_unknown_key_in_a_route_is_counted_from_one(self, shipped: Path) -> None:
        cfg = shipped / "alertd.toml"
        cfg.write_text(cfg.read_text() + '\n[[routes]]\nchanels = ["log"]\n')

        result = alertd("check", cwd=shipped)

        assert 1 == result.returncode
        assert "unknown key 'chanels' in alertd.toml routes #1; did you mean 'channels'?" in (
            result.stderr
        )


class TestRedisRefusals:
    """Redis answering but refusing is not "cannot reach": the login or the command is named."""

    def test_wrong_password(self, shipped: Path, tmp_path: Path) -> None:
        port = free_port()
        server = RedisServer(port, tmp_path, extra_args=["--requirepass", "right-one"])
        server.start()
        try:
            url = f"redis://:wrong-one@127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while True:  # until it listens: then the answer is about the login
                result = alertd("alerts", cwd=shipped, env={"ALERTD_REDIS_URL": url})
                if "refused the login" in result.stderr or time.monotonic() > deadline:
                    break
        finally:
            server.stop()

        line = one_line(result.stderr)
        assert 2 == result.returncode
        assert line.startswith(
            f"alertd: Redis at redis://:***@127.0.0.1:{port}/0 (from ALERTD_REDIS_URL) refused "
            "the login: "
        ), line
        assert line.endswith("; check the user and password in the URL")
        assert "wrong-one" not in line

    def test_replay_of_a_malformed_id(self, shipped: Path, redis_server: RedisServer) -> None:
        result = alertd(
            "dlq", "replay", "nonsense", cwd=shipped, env={"ALERTD_REDIS_URL": redis_server.url}
        )

        assert 1 == result.returncode
        assert (
            "alertd: 'nonsense' is not a dead letter id (like 1764000000000-0); "
            "alertd dlq list shows them"
        ) == one_line(result.stderr)


class TestOtherFilesGivenToRulesTest:
    """`alertd rules test alertd.toml` says it is not a test file, not pydantic's words."""

    def test_config_file(self, shipped: Path) -> None:
        result = alertd("rules", "test", "alertd.toml", cwd=shipped)

        assert 1 == result.returncode
        assert (
            "alertd: alertd.toml: is not a rule test file (one has rule_files and [[tests]]; "
            "see docs/rules.md)"
        ) == one_line(result.stderr)

    def test_directory_as_config(self, shipped: Path) -> None:
        result = alertd("check", "--config", "rules", cwd=shipped)

        assert "alertd: rules: is a directory; name the .toml file in it" == one_line(result.stderr)


class TestPlainWords:
    """Type mistakes in alertd.toml read as an operator writes, not as pydantic's."""

    @pytest.mark.parametrize(
        ("key", "value", "expected"),
        [
            ("batch_size", '"lots"', "daemon.batch_size: 'lots' is not a whole number"),
            ("batch_size", "0", "daemon.batch_size: must be at least 1"),
            ("send_resolved", '"maybe"', "notify.send_resolved: 'maybe' is not true or false"),
            ("rules", '"rules/*.toml"', 'paths.rules: must be a list, e.g. ["a", "b"]'),
        ],
    )
    def test_wording(self, shipped: Path, key: str, value: str, expected: str) -> None:
        set_key(shipped, key, value)

        result = alertd("check", cwd=shipped)

        assert 1 == result.returncode
        assert f"alertd: alertd.toml: {expected}" == one_line(result.stderr)

    def test_route_without_channels(self, shipped: Path) -> None:
        cfg = shipped / "alertd.toml"
        cfg.write_text(cfg.read_text() + '\n[[routes]]\nmatch = { service = "api" }\n')

        result = alertd("check", cwd=shipped)

        assert "alertd: alertd.toml: routes #1.channels: is required; add it" == one_line(
            result.stderr
        )


class TestCheckNamesTheRedis:
    """`alertd check` says which Redis the commands will use, and what chose it."""

    def test_from_environment_and_from_file(self, shipped: Path) -> None:
        url = "redis://:hunter22@10.1.2.3:6390/2"
        from_env = alertd("check", cwd=shipped, env={"ALERTD_REDIS_URL": url})
        from_file = alertd("check", cwd=shipped)

        assert 0 == from_env.returncode, from_env.stderr
        assert (
            "  redis: redis://:***@10.1.2.3:6390/2 (from ALERTD_REDIS_URL), stream alertd:events"
        ) == from_env.stdout.splitlines()[1]
        assert (
            "  redis: redis://127.0.0.1:6379/0 (from redis.url), stream alertd:events"
        ) == from_file.stdout.splitlines()[1]
