"""The docs cannot rot: docs/*.md and README.md are run against the code as it is.

Conventions the docs follow (docs/quickstart.md says so to readers too):

- Commands are ```console blocks. A line starting `$ ` is a command (a trailing
  `\\` continues it); the lines under it are output that must appear, in order,
  where `...` stands for anything. Every command runs with bash in a temp
  copy of the shipped config (alertd.toml, rules/, channels/), with a private
  Redis (ALERTD_REDIS_URL) and a real `alertd run` of that copy on a free port;
  `redis-cli` is pointed at that Redis and `curl localhost:9099` at that
  daemon. Shell variables carry over between the commands of one document.
  Commands that cannot run here are in SKIPPED, each with its reason; any
  other command fails the test until it runs or gets a reason.
- A ```toml block whose first line is `# file: PATH` is that file of the
  config dir: it is written there when the document reaches it (so later
  commands see it), and the document's files together must load with
  alertd's real loader (`*.test.toml` files must pass). Any other ```toml
  block must parse and load on its own over the shipped files, as a rules
  file, a channels file or alertd.toml, by its top-level keys.
- ```python blocks run (in document order, with the same Redis); ```json
  blocks parse; relative links point at files and headings that exist.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web

from alertd.channels.base import ChannelContext
from alertd.channels.webhook import WebhookChannel, WebhookConfig, webhook_payload
from alertd.errors import ConfigErrors, DeliveryError
from alertd.ops import test_notification as synthetic_notification
from alertd.ruletest import run_file
from alertd.settings import load_config
from tests.conftest import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
README = ROOT / "README.md"
ALL_DOCS = [*DOCS, README]
BIN = Path(sys.executable).parent

# Commands a test cannot run, with the reason. Matched against the command text.
SKIPPED: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^make (run|check)\b"), "runs the daemon in the foreground until Ctrl-C"),
    (re.compile(r"^make demo\b"), "takes about a minute; tests/test_demo.py runs it (fast)"),
    (re.compile(r"^make (test|lint|fmt|bench)\b"), "the test suite and its tools themselves"),
    (re.compile(r"^(\S*/)?alertd run\b"), "the daemon in the foreground; the test runs its own"),
    (re.compile(r"^docker\b"), "needs Docker and images from a registry"),
    (re.compile(r"^(kill|systemctl|journalctl)\b"), "acts on a daemon the reader started"),
    (re.compile(r"^source \.venv/bin/activate$"), "the test puts alertd on PATH itself"),
    (re.compile(r"^(pip|npm|go) "), "installs from a package registry"),
    (re.compile(r"^vmalert\b"), "needs VictoriaMetrics (vmalert and a datasource)"),
]
RUNNABLE = {"alertd", ".venv/bin/alertd", "redis-cli", "curl", "export", "python", "amtool"}
# Commands that only read: retried until their expected output appears (the
# daemon works asynchronously), instead of failing at the first look.
READ_ONLY = re.compile(
    r"^(\S*alertd (alerts|check|silence list|dlq list)\b|curl\b(?!.*(-X|--request|-d |--data)))"
)
RETRY_S = 15.0
DUMMY_ENV = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
    "OPS_HOOK_URL": "https://hooks.example.com/alertd",
    "OPS_HOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "SMTP_HOST": "smtp.example.com",
    "SMTP_USER": "alertd",
    "SMTP_PASSWORD": "secret",
    "ALERT_EMAIL_TO": "oncall@example.com",
    "ALERTD_API_TOKEN": "s3cret-token",
    "ALERTD_REDIS_URL": "redis://127.0.0.1:6379/0",
    "TEAMS_WEBHOOK_URL": "https://example.webhook.office.com/workflows/1/invoke?sig=x",
    "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/token",
}
PRELUDE = r"""
curl() {
  local args=() a
  for a in "$@"; do
    a="${a//localhost:9099/$ALERTD_DOC_HTTP}"
    args+=("${a//127.0.0.1:9099/$ALERTD_DOC_HTTP}")
  done
  command curl --max-time 10 "${args[@]}"
}
redis-cli() { command redis-cli -u "$ALERTD_REDIS_URL" "$@"; }
amtool() {
  local args=() a
  for a in "$@"; do args+=("${a//localhost:9099/$ALERTD_DOC_HTTP}"); done
  command amtool "${args[@]}"
}
"""
NOT_STATE = "PATH|PWD|OLDPWD|SHLVL|_|PYTEST_CURRENT_TEST|ALERTD_DOC_HTTP|ALERTD_REDIS_URL"


# --- reading documents ------------------------------------------------------------------


@dataclass
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def file(self) -> str | None:
        """The config-dir path of a `# file: PATH` block."""
        first = self.text.split("\n", 1)[0]
        m = re.fullmatch(r"#\s*file:\s*(\S+)\s*", first)
        return m[1] if m else None


@dataclass
class Command:
    block: Block
    line: int
    text: str
    expected: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.block.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    out: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+)\s*([\w+-]*)", lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, lang = m[1], m[2], m[3]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j].removeprefix(indent))
            j += 1
        out.append(Block(doc, i + 1, lang.lower(), "\n".join(body) + "\n"))
        i = j + 1
    return out


def commands(block: Block) -> list[Command]:
    out: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            text, start = line[2:], block.line + 1 + i
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1].rstrip() + " " + lines[i].strip()
            out.append(Command(block, start, text))
        elif line.strip() and out:
            out[-1].expected.append(line)
        elif line.strip():
            raise AssertionError(f"{block.where}: console output before any `$ ` command")
        i += 1
    return out


def first_word(cmd: str) -> str:
    """The program a command runs: `alertd` in `id=$(alertd ...)` and `X=1 alertd ...`."""
    m = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\"?\$\((.*)\)\"?", cmd.strip())
    words = (m[1] if m else cmd).split()
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
        words.pop(0)
    return words[0] if words else ""


def skip_reason(cmd: str) -> str | None:
    return next((reason for pattern, reason in SKIPPED if pattern.search(cmd)), None)


# --- matching output --------------------------------------------------------------------


def _squash(text: str) -> str:
    return " ".join(text.split())


def line_matches(expected: str, actual: str) -> bool:
    """`expected` with `...` as a wildcard, whitespace runs equal, over the whole line."""
    pattern = ".*".join(re.escape(_squash(part)) for part in expected.split("..."))
    return re.fullmatch(pattern, _squash(actual)) is not None


def missing_lines(expected: list[str], output: str) -> list[str]:
    """Expected lines that do not appear in order in `output`."""
    actual = output.splitlines()
    pos = 0
    missing = []
    for want in expected:
        hit = next((i for i in range(pos, len(actual)) if line_matches(want, actual[i])), None)
        if hit is None:
            missing.append(want)
        else:
            pos = hit + 1
    return missing


# --- the workspace a document runs in ----------------------------------------------------


def copy_shipped(dest: Path) -> Path:
    shutil.copy(ROOT / "alertd.toml", dest / "alertd.toml")
    for folder in ("rules", "channels", "templates"):
        shutil.copytree(ROOT / folder, dest / folder)
    return dest / "alertd.toml"


def env_for(text: str) -> dict[str, str]:
    """An environment that sets every `${VAR}` without a default in `text`."""
    env = dict(DUMMY_ENV)
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
        env.setdefault(name, "x")
    return env


@dataclass
class Workspace:
    dir: Path
    env: dict[str, str]
    daemon: subprocess.Popen[bytes] | None = None

    def write(self, block: Block) -> None:
        assert block.file is not None
        path = self.dir / block.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text)

    def run(self, cmd: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        script = "\n".join(
            [
                "set -a",
                ". .doctest/prelude.sh",
                "[ -f .doctest/state ] && . .doctest/state",
                cmd,
                "__rc=$?",
                f"export -p | grep -Ev '^declare -x ({NOT_STATE})=' > .doctest/state",
                "exit $__rc",
            ]
        )
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.dir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def start_daemon(self) -> None:
        """`alertd run` of this workspace (once)."""
        if self.daemon is not None:
            return
        log = (self.dir / ".doctest" / "alertd.log").open("wb")
        self.daemon = subprocess.Popen(
            [str(BIN / "alertd"), "run"],
            cwd=self.dir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()  # the daemon has its own copy
        wait_ready(f"http://{self.env['ALERTD_HTTP_LISTEN']}/health/ready", self.daemon)

    def stop_daemon(self) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(15)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()

    def run_command(self, c: Command) -> None:
        self.start_daemon()
        deadline = time.monotonic() + RETRY_S
        while True:
            result = self.run(c.text)
            missing = missing_lines(c.expected, result.stdout)
            if result.returncode == 0 and not missing:
                return
            if not READ_ONLY.search(c.text) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise AssertionError(
            f"{c.where}: $ {c.text}\nexit status {result.returncode}; "
            f"missing lines: {missing}\noutput:\n{result.stdout}"
        )

    def run_python(self, block: Block) -> None:
        self.start_daemon()
        path = self.dir / ".doctest" / f"block_{block.line}.py"
        path.write_text(block.text)
        code = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='docs_example')"
        # A reader has set the variables the examples read (OPS_HOOK_SECRET ...).
        env = {k: v for k, v in DUMMY_ENV.items() if not k.startswith("ALERTD_")}
        result = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            cwd=self.dir,
            env={**env, **self.env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert 0 == result.returncode, f"{block.where}: python block failed\n{result.stderr}"


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"alertd run exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("alertd run was not ready in time")


@pytest.fixture
def workspace(tmp_path: Path, redis_server: RedisServer) -> Iterator[Workspace]:
    for tool in ("bash", "curl", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not on PATH")
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    copy_shipped(tmp_path)
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    for tool in ("alertd", "python"):
        (venv_bin / tool).symlink_to(BIN / tool)
    (tmp_path / ".doctest").mkdir()
    (tmp_path / ".doctest" / "prelude.sh").write_text(PRELUDE)
    http = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ALERTD_REDIS_URL=redis_server.url,
        ALERTD_HTTP_LISTEN=http,
        ALERTD_DOC_HTTP=http,
        PYTHONPATH=str(ROOT),
    )
    ws = Workspace(tmp_path, env)
    try:
        yield ws
    finally:
        ws.stop_daemon()


def doc_id(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


# --- the tests --------------------------------------------------------------------------


class TestCommands:
    """Every command in the docs runs and prints what the docs say it prints."""

    @pytest.mark.timeout(180)
    @pytest.mark.parametrize("doc", ALL_DOCS, ids=doc_id)
    def test_console_blocks(self, doc: Path, workspace: Workspace) -> None:
        ran = 0
        if any(b.lang in ("console", "python") for b in blocks(doc)):
            # Running before the document's files appear, as for a reader whose daemon runs.
            workspace.start_daemon()
        for block in blocks(doc):
            if block.lang == "toml" and block.file:
                workspace.write(block)
            elif block.lang == "python":
                workspace.run_python(block)
            elif block.lang == "console":
                for c in commands(block):
                    if skip_reason(c.text):
                        continue
                    word = first_word(c.text)
                    assert word in RUNNABLE, (
                        f"{c.where}: `{c.text}` can neither run here nor is it in SKIPPED "
                        "(tests/test_docs.py) with a reason"
                    )
                    workspace.run_command(c)
                    ran += 1
        if doc != README:
            assert ran > 0 or not any(b.lang == "console" for b in blocks(doc))

    @pytest.mark.parametrize("doc", ALL_DOCS, ids=doc_id)
    def test_one_convention_for_commands(self, doc: Path) -> None:
        """Command blocks are ```console with `$ ` prompts, so the test above sees them."""
        wrong = [
            b.where
            for b in blocks(doc)
            if b.lang in ("", "sh", "bash", "shell", "shell-session", "text")
            and any(
                re.match(r"^(\$ |\.venv/bin/alertd |alertd |redis-cli |make |curl )", line)
                for line in b.text.splitlines()
            )
        ]
        if wrong and doc == README:
            pytest.skip(f"README.md command blocks are not ```console yet: {wrong}")
        assert [] == wrong


class TestConfigExamples:
    """Every TOML example parses, and every config example loads with the real loader."""

    @pytest.mark.parametrize("doc", ALL_DOCS, ids=doc_id)
    def test_toml_blocks(self, doc: Path, tmp_path: Path) -> None:
        files = tmp_path / "files"
        files.mkdir()
        copy_shipped(files)
        problems: list[str] = []
        written: list[tuple[Block, Path]] = []
        for i, block in enumerate(b for b in blocks(doc) if b.lang == "toml"):
            try:
                data = tomllib.loads(block.text)
            except tomllib.TOMLDecodeError as exc:
                problems.append(f"{block.where}: invalid TOML: {exc}")
                continue
            if block.file:
                path = files / block.file
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block.text)
                written.append((block, path))
            else:
                alone = tmp_path / f"alone{i}"
                alone.mkdir()
                problems += check_alone(block, data, copy_shipped(alone))
        # The document's files together (one may name a channel another defines).
        env = env_for("".join(b.text for b, _ in written))
        for block, path in written:
            problems += check_file(block, path, files, env)
        assert [] == problems

    @pytest.mark.parametrize("doc", ALL_DOCS, ids=doc_id)
    def test_json_and_python_blocks(self, doc: Path) -> None:
        for block in blocks(doc):
            if block.lang == "json":
                json.loads(block.text)
            elif block.lang == "python":
                compile(block.text, block.where, "exec")
            elif block.lang in ("go", "js", "javascript"):
                assert "alertd:events" in block.text, block.where
                assert '"data"' in block.text, block.where


def check_file(block: Block, path: Path, base: Path, env: dict[str, str]) -> list[str]:
    if path.name.endswith(".test.toml"):
        _, failed, report = asyncio.run(run_file(path))
        return [f"{block.where}: rule tests failed:\n" + "\n".join(report)] if failed else []
    try:
        load_config(base / "alertd.toml", env=env)
    except ConfigErrors as exc:
        return [f"{block.where}: {e}" for e in exc.errors]
    return []


def check_alone(block: Block, data: dict[str, Any], config: Path) -> list[str]:
    """A block without `# file:`: a rules file, a channels file, or alertd.toml."""
    base = config.parent
    if "tests" in data or "rule_files" in data:
        return [f"{block.where}: a rule test example needs `# file: rules/NAME.test.toml`"]
    if set(data) == {"rules"}:
        (base / "rules" / "example.toml").write_text(block.text)
    elif set(data) == {"channels"}:
        for shipped in (base / "channels").glob("*.toml"):  # the example may redefine `log`
            shipped.unlink()
        (base / "channels" / "example.toml").write_text(block.text)
    else:
        config.write_text(block.text)
    try:
        load_config(config, env=env_for(block.text))
    except ConfigErrors as exc:
        return [f"{block.where}: {e}" for e in exc.errors]
    return []


class TestWebhookExamples:
    """docs/channels.md shows the webhook payload alertd sends and a receiver that works."""

    def test_payload_has_the_real_shape(self) -> None:
        doc = next(b for b in blocks(ROOT / "docs" / "channels.md") if b.lang == "json")
        shown = json.loads(doc.text)
        real = webhook_payload(synthetic_notification("ops-hook", "critical", time.time()), "")
        assert list(real) == list(shown)
        assert list(real["alerts"][0]) == list(shown["alerts"][0])

    async def test_receiver_accepts_alertd_and_refuses_others(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        block = next(
            b
            for b in blocks(ROOT / "docs" / "channels.md")
            if b.lang == "python" and "standardwebhooks" in b.text
        )
        secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        monkeypatch.setenv("OPS_HOOK_SECRET", secret)
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        exec(compile(block.text, block.where, "exec"), namespace)
        runner = web.AppRunner(namespace["app"])
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}/alertd"
        ctx = ChannelContext()
        n = synthetic_notification("ops-hook", "critical", time.time())
        try:
            signed = WebhookConfig(type="webhook", url=url, secret=secret)
            await WebhookChannel("ops-hook", signed, ctx).send(n)
            assert f"{n.id} firing AlertdTestAlert 1.0" in capsys.readouterr().out
            other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
            for config in (
                WebhookConfig(type="webhook", url=url, secret=other),
                WebhookConfig(type="webhook", url=url),
            ):
                with pytest.raises(DeliveryError, match="HTTP 401") as refused:
                    await WebhookChannel("ops-hook", config, ctx).send(n)
                assert not refused.value.retryable
        finally:
            if ctx.http is not None:
                await ctx.http.close()
            await runner.cleanup()


class TestLinks:
    """Relative links between the docs point at files and headings that exist."""

    @pytest.mark.parametrize("doc", ALL_DOCS, ids=doc_id)
    def test_relative_links(self, doc: Path) -> None:
        broken = []
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            path = (doc.parent / file_part).resolve() if file_part else doc
            if not path.exists() or (
                anchor and path.suffix == ".md" and anchor not in anchors(path)
            ):
                broken.append(target)
        assert [] == broken


def anchors(doc: Path) -> set[str]:
    """GitHub's heading slugs."""
    out = set()
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#+\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


class TestHarness:
    """The doc-test's own matching rules."""

    @pytest.mark.parametrize(
        ("expected", "actual", "ok"),
        [
            ("published ... as ...", "published queue_depth=1 {} as 17-0", True),
            ("config alertd.toml: ok", "config alertd.toml: ok", True),
            ("QueueBacklog  firing", "QueueBacklog   firing", True),
            ("ok", "not ok", False),
            ("... ok", "not ok", True),
            ('{"a":1}', '{"a":1,"b":2}', False),
        ],
    )
    def test_line_matches(self, expected: str, actual: str, ok: bool) -> None:
        assert ok == line_matches(expected, actual)

    def test_lines_in_order(self) -> None:
        assert [] == missing_lines(["a", "c"], "a\nb\nc\n")
        assert ["a"] == missing_lines(["c", "a"], "a\nb\nc\n")

    def test_free_port_is_free(self) -> None:
        with socket.socket() as s:
            assert 0 != s.connect_ex(("127.0.0.1", free_port()))
