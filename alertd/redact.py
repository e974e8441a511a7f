"""Keep secrets out of logs, API answers and dead letters."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
# Userinfo in URLs (redis://user:pass@host) is a secret wherever it appears.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret (and any URL password) replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, MASK)
    if "://" not in text:  # no URL, no URL password: most log values, at a fraction of the cost
        return text
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def url_secrets(url: str) -> list[str]:
    """A webhook URL that is itself the credential, and its parts a service may echo
    alone: the last path segment (Discord's token) and query values (Teams' `sig`)."""
    parts = urlsplit(url)
    found = [url]
    tail = parts.path.rstrip("/").rpartition("/")[2]
    if len(tail) >= 8:
        found.append(tail)
    found += [v for _, v in parse_qsl(parts.query) if len(v) >= 8]
    return found
