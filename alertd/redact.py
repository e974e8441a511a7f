"""Keep secrets out of logs, API answers and dead letters.

A secret can come back in other forms than the one configured: a receiver
answering 400 may echo only the path of a Slack webhook URL
(`/services/T0/B0/XXXX`), or its query, or a value percent-encoded. So a secret
that is a URL is masked in each of those forms too (`secret_forms`). Besides the
configured secrets, a URL password (`redis://user:pass@host`) and the value of a
query parameter whose name says it is a credential (`?api_key=...`, `&token=`,
`sig=`) are masked wherever they appear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"
MIN_SECRET = 4  # shorter values would mask ordinary words
MIN_PATH = 8  # a URL path shorter than this ("/", "/hook") is not what makes it secret
# Userinfo in URLs (redis://user:pass@host) is a secret wherever it appears.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
# ?api_key=..., &access_token=..., sig=... in any URL or query text.
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:[\w.-]*?)(?:token|key|secret|password|passwd|pwd|sig|signature|auth)"
    r"[\w.-]*=)(?P<value>[^&;#\s\"'<>]+)",
    re.IGNORECASE,
)


@lru_cache(maxsize=1024)
def secret_forms(secret: str) -> tuple[str, ...]:
    """`secret` and the other forms it may come back in, longest first."""
    forms = {secret}
    if "://" in secret:
        parts = urlsplit(secret)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        forms.add(secret.split("://", 1)[1])  # without the scheme
        if len(parts.path.strip("/")) >= MIN_PATH:
            forms.update({tail, parts.path, parts.path.strip("/")})
        if parts.query:
            forms.add(parts.query)
            forms.update(v for _, v in parse_qsl(parts.query))
        if parts.password:
            forms.add(parts.password)
    forms |= {quote(f, safe="") for f in forms} | {unquote(f) for f in forms}
    return tuple(sorted((f for f in forms if len(f) >= MIN_SECRET), key=len, reverse=True))


def query_secrets(url: str) -> list[str]:
    """The values of a URL's query parameters: credentials more often than not."""
    return [v for _, v in parse_qsl(urlsplit(url).query) if len(v) >= MIN_SECRET]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret (in any of its forms), URL password and credential
    query parameter replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET:
            for form in secret_forms(secret):
                if form in text:
                    text = text.replace(form, MASK)
    if "=" in text:
        text = _SECRET_PARAM.sub(lambda m: m["key"] + MASK, text)
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
