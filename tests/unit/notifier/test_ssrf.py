"""The SSRF guard's decision, as a pure function over addresses and URLs (no traffic).

The addresses come from the IANA IPv4 and IPv6 special-purpose address registries: every
block the registries do not call globally reachable is refused, for each address a host
resolves to; IPv6 addresses that carry an IPv4 address are judged as documented in
``notifier.domain.ssrf``.
"""

from __future__ import annotations

import ipaddress

import pytest

from notifier.domain.ssrf import Target, UnsafeUrl, check_target, parse_target, refusal

REFUSED = [
    # IPv4 special-purpose registry
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "100.100.100.200",  # shared address space: a cloud metadata address
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.254",
    "192.0.0.1",
    "192.0.0.8",
    "192.0.0.170",
    "192.0.0.171",
    "192.0.0.200",  # in 192.0.0.0/24 beyond its /29: Python 3.11's is_global passes it
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.254",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",  # multicast: is_global passes it
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6 special-purpose registry
    "::",
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped, judged by the IPv4 address
    "::ffff:100.100.100.200",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible (deprecated): outside 2000::/3
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::100.100.100.200",
    "64:ff9b:1::1",
    "100::1",
    "100:0:0:1::1",
    "2001::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:2::1",
    "2001:10::1",
    "2001:db8::1",
    "2001:1ff::1",  # IETF protocol assignments, unassigned
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:6464:64c8::1",  # 6to4 of 100.100.100.200
    "2002:808:808::1",  # 6to4, even of a public address
    "3fff::1",
    "5f00::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",  # site-local (deprecated): outside 2000::/3
    "ff02::1",
    "4000::1",  # not allocated for global unicast
]

ALLOWED = [
    "93.184.215.14",
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below 100.64.0.0/10
    "100.128.0.0",  # just above
    "172.32.0.1",
    "192.0.0.9",  # PCP anycast: globally reachable in the registry
    "192.0.0.10",
    "192.31.196.1",
    "192.52.193.1",
    "192.175.48.1",
    "198.20.0.1",
    "223.255.255.254",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2001:1::1",
    "2001:3::1",
    "2001:4:112::1",
    "2001:20::1",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "2620:4f:8000::1",
]


@pytest.mark.parametrize("text", REFUSED)
def test_addresses_that_are_not_globally_reachable_are_refused(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert refusal(address) is not None
    with pytest.raises(UnsafeUrl, match="resolves to"):
        check_target(Target("https", "hooks.example", 443), [text], allow=())


@pytest.mark.parametrize("text", ALLOWED)
def test_globally_reachable_addresses_pass(text: str) -> None:
    assert refusal(ipaddress.ip_address(text)) is None
    check_target(Target("https", "hooks.example", 443), [text], allow=())


@pytest.mark.parametrize(
    ("url", "resolved", "refused"),
    [
        ("http://100.100.100.200/latest/meta-data/", ["100.100.100.200"], "shared address"),
        ("http://[2002:a9fe:a9fe::]/", ["2002:a9fe:a9fe::"], "6to4"),
        ("http://[2001:0:4136:e378::1]/", ["2001:0:4136:e378::1"], "Teredo"),
        ("http://[::ffff:a9fe:a9fe]/", ["::ffff:169.254.169.254"], "link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/", ["64:ff9b::169.254.169.254"], "link-local"),
        ("https://hooks.example/x", ["93.184.215.14", "100.64.1.1"], "shared address"),
        ("https://hooks.example/x", ["2606:4700::1", "fe80::1%eth0"], "link-local"),
        ("https://hooks.example/x", ["93.184.215.14", "2001:4860::1"], None),
        ("https://hooks.example:8443/x", ["2001:4860::1"], None),
    ],
)
def test_each_resolved_address_of_a_url_is_judged(
    url: str, resolved: list[str], refused: str | None
) -> None:
    target = parse_target(url)
    if refused is None:
        check_target(target, resolved, allow=())
    else:
        with pytest.raises(UnsafeUrl, match=refused):
            check_target(target, resolved, allow=())


def test_the_allow_list_still_opens_a_refused_address() -> None:
    target = parse_target("http://100.100.100.200:8090/x")
    check_target(target, ["100.100.100.200"], allow=["100.64.0.0/10"])
    check_target(target, ["100.100.100.200"], allow=["100.100.100.200:8090"])
    with pytest.raises(UnsafeUrl):
        check_target(target, ["100.100.100.200"], allow=["100.100.100.200:9999"])
