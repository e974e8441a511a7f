"""Redis URLs as operators write them: refuse what redis-py would quietly misread.

redis-py takes `redis:/127.0.0.1:6391` (one slash) as "no host" and connects to
localhost:6379, and answers a URL with no scheme with a traceback. Checking the
URL when the configuration loads turns both into one line naming the mistake.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from alertd.redact import redact

SCHEMES = ("redis", "rediss", "unix")
EXAMPLE = "redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0"


def shown(url: str) -> str:
    """The URL as it may appear in a message or a log line (password masked)."""
    return redact(url)


def check_redis_url(url: str, require_host: bool = True) -> str:
    """`url` unchanged when redis-py will connect where it says; ValueError otherwise.

    `require_host=False` where the address comes from elsewhere (Sentinel: the URL
    carries only the database, credentials and TLS).
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or "://" not in url:
        got = f"scheme '{parts.scheme}:'" if parts.scheme else "no scheme"
        if parts.scheme in SCHEMES:
            got = f"'{parts.scheme}:' without '//'"
        raise ValueError(f"Redis URL {shown(url)!r} has {got}; write {EXAMPLE}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"Redis URL {shown(url)!r} names no socket path; write unix:///PATH")
        return url
    if require_host and not parts.hostname:
        raise ValueError(f"Redis URL {shown(url)!r} names no host; write {EXAMPLE}")
    try:
        parts.port  # noqa: B018 - the property raises on a port that is not a number in range
    except ValueError:
        port = parts.netloc.rpartition(":")[2]
        raise ValueError(
            f"Redis URL {shown(url)!r} has port '{port}', not a number from 1 to 65535"
        ) from None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(
            f"Redis URL {shown(url)!r} has database '{db}', not a number; write {EXAMPLE}"
        )
    return url
