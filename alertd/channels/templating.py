"""Channel templates (`template = "templates/NAME.j2"`): Jinja2, sandboxed.

A template replaces a channel's message body. Its data are the
notification's fields as the webhook payload has them (`status`, `alerts`,
`groupLabels`, `commonLabels`, `commonAnnotations`, `externalURL`, ...). It runs in
Jinja2's immutable sandbox: no attribute of Python internals, no mutation, bounded
`range`. An email template defines `{% block subject %}`, `{% block text %}` and
`{% block html %}`; only its HTML part is autoescaped.

Errors name the template file and the line in it, for `alertd check` and for the
dead letter of a notification whose template failed at delivery.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from alertd.model import Alert, Notification, NotifyReason, fingerprint

EMAIL_BLOCKS = ("subject", "text", "html")
# How a channel type uses its template (its config model's `template_form`):
#   json   the whole request body (webhook): must render JSON
#   text   the message text, or a JSON array of its blocks (Slack, Teams); Discord's text
#   html   the message text in HTML, autoescaped (Telegram)
#   email  blocks subject, text (plain) and html (autoescaped), each optional
FORMS = ("json", "text", "html", "email")
ESCAPED_FORMS = frozenset({"html", "email"})
MAX_OUTPUT = 1024 * 1024  # a body larger than this is a template bug, not a message


class TemplateFailure(ValueError):
    """A template that does not compile or render; `str()` names file and line."""

    def __init__(self, shown: str, line: int | None, message: str) -> None:
        self.shown = shown
        self.line = line
        where = f"{shown} line {line}" if line else shown
        super().__init__(f"{where}: {message}")


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        autoescape=autoescape, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
    )


_PLAIN = _environment(False)
_ESCAPED = _environment(True)


def _line_of(exc: BaseException, filename: str) -> int | None:
    """The template line a render error happened on (Jinja maps its frames to it)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    return frames[-1].lineno if frames else None


@dataclass(frozen=True)
class ChannelTemplate:
    """One compiled template file; `html` is its autoescaped compile (email, Telegram)."""

    path: str
    shown: str
    plain: Template
    html: Template | None = None
    blocks: frozenset[str] = field(default_factory=frozenset)

    def render(self, data: Mapping[str, Any], block: str | None = None, html: bool = False) -> str:
        """The rendered text (of one `block`, or the whole); TemplateFailure when it fails."""
        template = self.html if html and self.html is not None else self.plain
        try:
            if block is None:
                out = template.render(data)
            else:
                ctx = template.new_context(dict(data))
                out = "".join(template.blocks[block](ctx))
        except TemplateError as exc:
            raise TemplateFailure(self.shown, _line_of(exc, self.path), str(exc)) from None
        except Exception as exc:  # a filter fed the wrong type, a division by zero ...
            line = _line_of(exc, self.path)
            raise TemplateFailure(self.shown, line, f"{type(exc).__name__}: {exc}") from None
        if len(out) > MAX_OUTPUT:
            raise TemplateFailure(self.shown, None, f"renders more than {MAX_OUTPUT} characters")
        return out


def _compile(env: ImmutableSandboxedEnvironment, source: str, shown: str, path: Path) -> Template:
    # Named by its path, so a render error's frames point at the file's lines.
    code = env.compile(source, name=shown, filename=str(path))
    return env.template_class.from_code(env, code, env.make_globals(None))


def load_template(path: Path, shown: str, escaped: bool = False) -> ChannelTemplate:
    """Read and compile a template file; `escaped`: also an autoescaped compile (HTML)."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateFailure(shown, None, f"cannot read: {type(exc).__name__}") from None
    try:
        plain = _compile(_PLAIN, source, shown, path)
        html = _compile(_ESCAPED, source, shown, path) if escaped else None
    except TemplateSyntaxError as exc:
        raise TemplateFailure(shown, exc.lineno, exc.message or "syntax error") from None
    return ChannelTemplate(str(path), shown, plain, html, frozenset(plain.blocks))


def blocks_or_text(text: str) -> list[Any] | None:
    """A rendered text that is a JSON array (of Slack or Teams blocks), parsed; else None."""
    if not text.lstrip().startswith("["):
        return None
    try:
        parsed = orjson.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) else None


def check_template(path: Path, shown: str, form: str, data: Mapping[str, Any]) -> None:
    """Compile and render a template as its channel would, on `data` (a sample
    notification's); TemplateFailure naming file and line when it would fail."""
    tpl = load_template(path, shown, escaped=form in ESCAPED_FORMS)
    if form == "email":
        used = [b for b in EMAIL_BLOCKS if b in tpl.blocks]
        if not used:
            raise TemplateFailure(
                shown, None, "an email template defines blocks subject, text and/or html"
            )
        for block in used:
            tpl.render(data, block, html=block == "html")
        return
    out = tpl.render(data, html=form == "html")
    if form == "json":
        try:
            orjson.loads(out)
        except ValueError as exc:
            raise TemplateFailure(shown, None, f"does not render JSON ({exc})") from None
    elif form == "text" and out.lstrip().startswith("[") and blocks_or_text(out) is None:
        raise TemplateFailure(shown, None, "renders '[' but not a JSON array of blocks")


def sample_notification() -> Notification:
    """What `alertd check` renders every template on: a group with a firing and a
    resolved alert, every field filled."""
    now = 1_790_000_000.0

    def alert(instance: str, state: str, severity: str) -> Alert:
        labels = {
            "alertname": "HighErrorRate",
            "service": "api",
            "instance": instance,
            "severity": severity,
        }
        return Alert(
            fingerprint=fingerprint(labels),
            rule="HighErrorRate",
            labels=labels,
            annotations={
                "summary": f"{instance}: 7.30% of requests failed over 5m",
                "description": "Threshold 5%",
                "runbook_url": "https://runbooks.example.com/high-error-rate",
            },
            state=state,  # type: ignore[arg-type]
            severity=severity,
            value=0.073,
            starts_at=now - 600,
            ends_at=now - 60 if state == "resolved" else None,
        )

    return Notification(
        id="01JD3X5Y0C9Q8V7N6M5K4J3H2G",
        receiver="sample",
        status="firing",
        alerts=[alert("api-1", "firing", "critical"), alert("api-2", "resolved", "warning")],
        group_labels={"alertname": "HighErrorRate"},
        group_key='{}:{alertname="HighErrorRate"}',
        reason=NotifyReason.FIRST,
        created_at=now,
        changed_at=now,
    )
