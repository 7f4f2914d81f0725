"""The SSRF guard: webhook URLs that resolve to loopback, link-local, private or otherwise non-public
addresses are refused at send time (DNS may change after ``webhooks add``), unless
``KEYLEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true``."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from keyledger.core.errors import Invalid


class Refused(Exception):
    """The URL's host is not a public address."""


def validate_url(url: str) -> str:
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"webhook URL must be http(s)://host/…, got {url!r}")
    if parts.username or parts.password:
        raise Invalid("webhook URL must not carry credentials")
    if len(url) > 2000:
        raise Invalid("webhook URL is longer than 2000 characters")
    return url


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def check(url: str, *, allow_private: bool) -> None:
    """Resolve the URL's host; raise Refused if any address is non-public (and that is not allowed)."""
    host = urlsplit(url).hostname or ""
    if allow_private:
        return
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Refused(f"cannot resolve {host}: {exc.strerror}") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if _blocked(ip):
            raise Refused(
                f"{host} resolves to {ip}, a non-public address "
                "(set KEYLEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow)"
            )
