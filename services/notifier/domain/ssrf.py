"""Which webhook URLs the notifier may call (server-side request forgery guard, pure).

A URL is refused when its scheme is not http(s), or when any address its host resolves
to is not globally reachable, unless the host (``host`` or ``host:port``) or the address's
network is on the allow list. "Globally reachable" is read off the IANA special-purpose
address registries (IPv4 and IPv6, as of 2025), written out below as data: Python's
``ipaddress.is_global`` tables are incomplete in 3.11 (they pass ``192.0.0.0/24`` beyond
its first ``/29``, every multicast address, 6to4 and Teredo addresses).

IPv6 addresses that carry an IPv4 address are judged as follows: IPv4-mapped
(``::ffff:0:0/96``) and the NAT64 well-known prefix (``64:ff9b::/96``) by the IPv4 address
they carry, since a connection to them reaches that address; 6to4 (``2002::/16``) and
Teredo (``2001::/32``) are refused whatever they carry (the registry does not call them
globally reachable: their traffic goes through relays to an address of the sender's
choosing). Outside ``2000::/3`` (the global unicast space) every IPv6 address is refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from notifier.errors import NotifierError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeUrl(NotifierError):
    """A webhook URL the notifier refuses to call; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class Block:
    """One entry of an IANA special-purpose registry: its block, name and whether it is
    globally reachable (the registry's "N/A" counts as not reachable)."""

    network: Network
    name: str
    reachable: bool


def _blocks(rows: Iterable[tuple[str, str, bool]]) -> tuple[Block, ...]:
    return tuple(Block(ipaddress.ip_network(net), name, ok) for net, name, ok in rows)


# IANA IPv4 Special-Purpose Address Registry, plus multicast (224.0.0.0/4: a group, never
# a webhook receiver). The most specific block containing an address decides.
IPV4_SPECIAL = _blocks(
    [
        ("0.0.0.0/8", "'this network' (RFC 791)", False),
        ("0.0.0.0/32", "unspecified ('this host on this network', RFC 1122)", False),
        ("10.0.0.0/8", "private-use (RFC 1918)", False),
        ("100.64.0.0/10", "shared address space (RFC 6598)", False),
        ("127.0.0.0/8", "loopback (RFC 1122)", False),
        ("169.254.0.0/16", "link-local (RFC 3927)", False),
        ("172.16.0.0/12", "private-use (RFC 1918)", False),
        ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)", False),
        ("192.0.0.9/32", "port control protocol anycast (RFC 7723)", True),
        ("192.0.0.10/32", "TURN anycast (RFC 8155)", True),
        ("192.0.2.0/24", "documentation (RFC 5737)", False),
        ("192.31.196.0/24", "AS112-v4 (RFC 7535)", True),
        ("192.52.193.0/24", "AMT (RFC 7450)", True),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)", False),
        ("192.168.0.0/16", "private-use (RFC 1918)", False),
        ("192.175.48.0/24", "direct delegation AS112 service (RFC 7534)", True),
        ("198.18.0.0/15", "benchmarking (RFC 2544)", False),
        ("198.51.100.0/24", "documentation (RFC 5737)", False),
        ("203.0.113.0/24", "documentation (RFC 5737)", False),
        ("224.0.0.0/4", "multicast (RFC 5771)", False),
        ("240.0.0.0/4", "reserved (RFC 1112)", False),
        ("255.255.255.255/32", "limited broadcast (RFC 919)", False),
    ]
)

# IANA IPv6 Special-Purpose Address Registry. Blocks outside 2000::/3 (loopback,
# unspecified, unique-local, link-local, multicast, discard, ...) are refused by the
# global-unicast rule before this table is read; they are listed for the reason given.
IPV6_SPECIAL = _blocks(
    [
        ("::/128", "unspecified (RFC 4291)", False),
        ("::1/128", "loopback (RFC 4291)", False),
        ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation (RFC 8215)", False),
        ("100::/64", "discard-only (RFC 6666)", False),
        ("100:0:0:1::/64", "dummy IPv6 prefix (RFC 9780)", False),
        ("2001::/23", "IETF protocol assignments (RFC 2928)", False),
        ("2001::/32", "Teredo (RFC 4380)", False),
        ("2001:1::1/128", "port control protocol anycast (RFC 7723)", True),
        ("2001:1::2/128", "TURN anycast (RFC 8155)", True),
        ("2001:1::3/128", "DNS-SD service registration protocol anycast (RFC 9665)", True),
        ("2001:2::/48", "benchmarking (RFC 5180)", False),
        ("2001:3::/32", "AMT (RFC 7450)", True),
        ("2001:4:112::/48", "AS112-v6 (RFC 7535)", True),
        ("2001:10::/28", "deprecated ORCHID (RFC 4843)", False),
        ("2001:20::/28", "ORCHIDv2 (RFC 7343)", True),
        ("2001:30::/28", "drone remote ID entity tags (RFC 9374)", True),
        ("2001:db8::/32", "documentation (RFC 3849)", False),
        ("2002::/16", "6to4 (RFC 3056)", False),
        ("2620:4f:8000::/48", "direct delegation AS112 service (RFC 7534)", True),
        ("3fff::/20", "documentation (RFC 9637)", False),
        ("5f00::/16", "segment routing SIDs (RFC 9602)", False),
        ("fc00::/7", "unique-local (private, RFC 4193)", False),
        ("fe80::/10", "link-local (RFC 4291)", False),
        ("ff00::/8", "multicast (RFC 4291)", False),
    ]
)

GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


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


def _special(address: Address, table: Sequence[Block]) -> Block | None:
    """The most specific registry block holding ``address``, if any."""
    found: Block | None = None
    for block in table:
        if address in block.network and (
            found is None or block.network.prefixlen > found.network.prefixlen
        ):
            found = block
    return found


def refusal(address: Address) -> str | None:
    """Why a connection to ``address`` is refused, or None when it is globally reachable."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in IPV4_MAPPED or address in NAT64_WELL_KNOWN:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
            reason = refusal(embedded)
            return None if reason is None else f"{reason}, carried in {address}"
        block = _special(address, IPV6_SPECIAL)
        if block is not None and not block.reachable:
            return f"a {block.name} address"
        if address not in GLOBAL_UNICAST:
            return "an IPv6 address outside the global unicast space 2000::/3"
        return None
    block = _special(address, IPV4_SPECIAL)
    if block is not None and not block.reachable:
        return f"a {block.name} address"
    return None


def check_target(target: Target, addresses: Sequence[str], allow: Iterable[str]) -> None:
    """Raise :class:`UnsafeUrl` unless every resolved address of ``target`` may be called.

    ``addresses`` are what the host resolved to (the host itself when it is a literal
    address); each one is judged, so one private answer among public ones refuses the
    URL. ``allow`` holds hosts (``name`` or ``name:port``) and networks (CIDR) exempt from
    the address check. No addresses at all is refused (the host did not resolve).
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
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError as exc:
            raise UnsafeUrl(f"{target.host}: unusable address {text!r}") from exc
        if any(address in net for net in networks):
            continue
        reason = refusal(address)
        if reason is not None:
            raise UnsafeUrl(
                f"{target.host} resolves to {address}, {reason}; "
                "add it to TENURE_NOTIFIER_WEBHOOK_ALLOW_HOSTS to allow it"
            )
