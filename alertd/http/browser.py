"""What a web page on another site could make a browser send to alertd, refused.

With no token (the shipped default) alertd trusts loopback clients, and a
browser on the same machine is one. A page elsewhere can make it send:
- a "simple" cross-site POST (a form, or `fetch` with `text/plain`): a write's body
  must therefore be `application/json` (which a page can only send cross-site after
  a CORS preflight alertd never approves), and a write whose `Origin` or
  `Sec-Fetch-Site` says it comes from another site is refused;
- any request to a name it controls that resolves to 127.0.0.1 (DNS rebinding):
  with no token, the `Host` must be an address, a single-label name (`localhost`,
  a container's service name), the host of `http.listen` or of `http.external_url`.
Probes and metrics (/health, /metrics) are exempt: they change nothing and load
balancers and scrapers use names of their own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from alertd.http.common import Denial

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
EXEMPT_PREFIXES = ("/health", "/metrics")
JSON_TYPES = ("application/json",)
SAME_SITE_FETCH = frozenset({"same-origin", "none"})


def allowed_hosts(listen: str, external_url: str) -> frozenset[str]:
    """Host names (lower case, no port) the daemon answers to by name."""
    names = {listen.rpartition(":")[0].strip("[]").lower()}
    if external_url:
        host = urlsplit(external_url).hostname
        if host:
            names.add(host.lower())
    return frozenset(n for n in names if n)


def _host_name(host_header: str) -> str:
    """`example.com:9099` / `[::1]:9099` to `example.com` / `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    if not host_header:
        return True  # HTTP/1.0 without Host: no browser sends that
    name = _host_name(host_header).rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True  # an address cannot be rebound to another
    except ValueError:
        pass
    return "." not in name or name in allowed


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def _netloc(host: str) -> str:
    """host[:port] lower case, without a default port: behind a TLS-terminating proxy the
    browser's https://name and the Host the daemon sees differ only there."""
    host = host.strip().lower()
    for default in (":80", ":443"):
        host = host.removesuffix(default)
    return host


def _same_origin(origin: str, host_header: str | None, external_url: str) -> bool:
    if origin == "null":  # sandboxed frames, file:// pages: never this site
        return False
    netloc = _netloc(urlsplit(origin).netloc)
    if not netloc:
        return False
    if host_header is not None and netloc == _netloc(host_header):
        return True
    return bool(external_url) and netloc == _netloc(urlsplit(external_url).netloc)


def browser_decision(
    method: str,
    path: str,
    headers: Mapping[str, str],
    external_url: str,
    hosts: frozenset[str] | None,
) -> Denial | None:
    """None when the request may go on; else why not. `hosts`: None when a token is set."""
    if path.startswith(EXEMPT_PREFIXES):
        return None
    host = headers.get("Host")
    if hosts is not None and not host_allowed(host, hosts):
        return Denial(
            403,
            "host not allowed",
            (
                f"Host {_host_name(host or '')!r} is not an address, a single-label name or "
                "the host of http.listen / http.external_url; set http.external_url to the "
                "name clients use, or set http.token",
            ),
        )
    if method.upper() not in WRITE_METHODS:
        return None
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() not in SAME_SITE_FETCH:
        return Denial(403, "cross-site request refused", (f"Sec-Fetch-Site is {fetch_site!r}",))
    origin = headers.get("Origin")
    if origin is not None and not _same_origin(origin.strip(), host, external_url):
        return Denial(
            403, "cross-site request refused", (f"Origin {origin[:100]!r} is not this site",)
        )
    # A write without a body carries no data to mislabel (and clients label it at will).
    has_body = headers.get("Content-Length", "0").strip() not in ("", "0") or (
        "Transfer-Encoding" in headers
    )
    if has_body and not is_json(headers.get("Content-Type")):
        return Denial(
            415,
            "unsupported media type",
            ("a request that changes something must send Content-Type: application/json",),
        )
    return None
