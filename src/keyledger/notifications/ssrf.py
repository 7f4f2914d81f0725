"""The SSRF guard: webhook URLs that resolve to loopback, link-local, private or otherwise non-public
addresses are refused at send time (DNS may change after ``webhooks add``), unless
``KEYLEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true``.

At creation (:func:`refuse_non_public`) the same rule is applied without DNS: IP literals in every form a
resolver accepts (``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``017700000001``, ``[::ffff:127.0.0.1]``) and
``localhost`` names are refused; other names are resolved, and checked, at every delivery."""

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


def literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally (including the legacy IPv4 forms inet_aton accepts), else None."""
    h = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(h))
    except (OSError, ValueError):
        return None


def _is_localhost_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")  # RFC 6761: always loopback


def _refusal(host: str, ip: object) -> str:
    return (f"{host} is {ip}, a non-public address "
            "(set KEYLEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow)")


def refuse_non_public(url: str, *, allow_private: bool) -> None:
    """At creation, without DNS: raise Invalid if the URL's host is a non-public IP literal or a localhost
    name (unless allowed)."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    ip = literal_ip(host)
    if ip is not None and _blocked(ip):
        raise Invalid("webhook URL host " + _refusal(host, ip))
    if ip is None and _is_localhost_name(host):
        raise Invalid("webhook URL host " + _refusal(host, "loopback"))


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
    ip = literal_ip(host)
    if ip is not None or _is_localhost_name(host):  # no resolver needed (and none asked)
        if ip is None or _blocked(ip):
            raise Refused(_refusal(host, ip or "loopback"))
        return
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Refused(f"cannot resolve {host}: {exc.strerror}") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if _blocked(ip):
            raise Refused(_refusal(host, ip).replace(" is ", " resolves to ", 1))
