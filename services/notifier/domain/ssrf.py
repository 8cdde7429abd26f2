"""Which webhook URLs the notifier may call (server-side request forgery guard, pure).

A URL is refused when its scheme is not http(s), or when any address its host resolves
to is private, loopback, link-local, multicast, reserved or unspecified, unless the host
(``host`` or ``host:port``) or the address's network is on the allow list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


class UnsafeUrl(Exception):
    """A webhook URL the notifier refuses to call; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def parse_target(url: str) -> Target:
    """Scheme, host and port of ``url``; raises :class:`UnsafeUrl` for a non-HTTP URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"{url!r}: scheme must be http or https")
    if not parts.hostname:
        raise UnsafeUrl(f"{url!r}: no host")
    if parts.username or parts.password:
        raise UnsafeUrl(f"{url!r}: credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeUrl(f"{url!r}: {exc}") from exc
    return Target(parts.scheme, parts.hostname.lower(), port)


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _forbidden(address.ipv4_mapped)
    for flag in (
        "is_unspecified",
        "is_loopback",
        "is_link_local",
        "is_private",
        "is_multicast",
        "is_reserved",
    ):
        if getattr(address, flag):
            return flag.removeprefix("is_").replace("_", "-")
    return None


def check_target(target: Target, addresses: Sequence[str], allow: Iterable[str]) -> None:
    """Raise :class:`UnsafeUrl` unless every resolved address of ``target`` may be called.

    ``allow`` holds hosts (``name`` or ``name:port``) and networks (CIDR) exempt from the
    address check. No addresses at all is refused (the host did not resolve).
    """
    allowed = set()
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            allowed.add(entry.lower())
    if target.host in allowed or f"{target.host}:{target.port}" in allowed:
        return
    if not addresses:
        raise UnsafeUrl(f"{target.host}: did not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if any(address in net for net in networks):
            continue
        reason = _forbidden(address)
        if reason is not None:
            raise UnsafeUrl(
                f"{target.host} resolves to {address}, a {reason} address; "
                "add it to TENURE_NOTIFIER_WEBHOOK_ALLOW_HOSTS to allow it"
            )
