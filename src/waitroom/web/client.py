"""Who the client is and how it reached us, trusting forwarded headers only from trusted proxies.

An address is counted in one canonical form, whichever way it was spelled (docs/security.md,
"Addresses"): parsed with `ipaddress`, an IPv4-mapped IPv6 address as its IPv4 address, and masked
to the network that stands for one client (an IPv6 /64 by default). A forwarded value that is no
address counts as the TCP peer: junk never mints a fresh allowance.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from waitroom.metrics import METRICS

MAX_ADDRESS_TEXT = 128
"""Longer text is no address (the longest spelling, bracketed IPv6 with a zone and a port, is far
shorter): never parsed, never cached."""


class ForwardingRules(Protocol):
    """What the operator says of the proxies in front of us: the config's `client_ip:` section."""

    @property
    def trusted_proxies(self) -> int: ...

    @property
    def header(self) -> str | None: ...

    @property
    def ipv4_prefix(self) -> int: ...

    @property
    def ipv6_prefix(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """The client as every per-address count keys it."""

    network: str
    """Canonical: "203.0.113.7" (an IPv4 /32 is printed bare), "2001:db8:0:1::/64"; the peer's text
    as given when even the peer is no address (a replayed flow without one)."""
    forwarded_valid: bool = True
    """False: the believed forwarded value was no address, and `network` is the TCP peer's."""


def canonical_network(text: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str | None:
    """The network one client address stands for, in one spelling; None if `text` is no address.

    Accepted spellings: surrounding spaces and double quotes (RFC 7239), `[v6]` and `[v6]:port`,
    `v4:port`, a `%zone` (dropped), any case and zero padding IPv6 allows. IPv4 with leading zeros
    (`010.9.9.9`: octal to some parsers) is refused, as `ipaddress` refuses it. `::ffff:a.b.c.d`
    (in any spelling) is the IPv4 address a.b.c.d; other embeddings (NAT64, 6to4, Teredo) are not:
    the IPv4 address inside is not the client."""
    if len(text) > MAX_ADDRESS_TEXT or not text.isascii():
        return None
    return _canonical(text, ipv4_prefix, ipv6_prefix)


@functools.lru_cache(maxsize=8192)  # bounded, and keyed by short text only: an attacker cannot grow it
def _canonical(text: str, ipv4_prefix: int, ipv6_prefix: int) -> str | None:
    value = text.strip().strip('"').strip()
    if value.startswith("["):  # [v6] or [v6]:port
        end = value.find("]")
        if end < 0 or not (value[end + 1 :] == "" or _is_port(value[end + 1 :])):
            return None
        value = value[1:end]
    elif value.count(":") == 1:  # v4:port (IPv6 has at least two colons)
        value, _, port = value.partition(":")
        if not _is_port(":" + port):
            return None
    value = value.partition("%")[0]  # a zone names the interface it came in on, not the client
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return _masked(address, ipv4_prefix)
    return _masked(address, ipv6_prefix)


def _is_port(text: str) -> bool:
    return len(text) >= 2 and text[0] == ":" and text[1:].isdigit() and len(text) <= 6


def _masked(address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int) -> str:
    bits = address.max_prefixlen
    if prefix >= bits:
        return str(address)
    shift = bits - prefix  # by integer shift: a tenth of the cost of building an ip_network
    network = type(address)((int(address) >> shift) << shift)
    return f"{network}/{prefix}"


def behind_trusted_proxy(config: ForwardingRules) -> bool:
    """Forwarded headers are believed only when the operator says a proxy of theirs sets them."""
    return config.trusted_proxies > 0 or config.header is not None


def client_is_https(config: ForwardingRules, *, tls: bool, forwarded_proto: str | None) -> bool:
    """Did the visitor's own connection use https? Our connection, or the trusted proxy's word.

    With N trusted proxies the nearest one appends its view last, so the last value counts.
    """
    if tls:
        return True
    if forwarded_proto and behind_trusted_proxy(config):
        return forwarded_proto.split(",")[-1].strip().lower() == "https"
    return False


def client_ip(
    config: ForwardingRules, *, peer: str, forwarded_for: str | None, header_value: str | None
) -> str:
    """The visitor's address, believing forwarded headers only as far as our own proxies vouch.

    - `client_ip.header` set: that header's value, which a trusted proxy (e.g. Envoy's
      X-Envoy-External-Address) overwrites on every request; absent → the peer.
    - `client_ip.trusted_proxies` = N: each of our N proxies appended the address it saw to
      X-Forwarded-For, so the visitor is the Nth entry from the right. Entries further left were
      written by the client and are ignored: spoofing XFF cannot move a client to another bucket.
    - otherwise: the TCP peer.
    """
    if config.header is not None:
        value = (header_value or "").strip()
        return value or peer
    if config.trusted_proxies > 0 and forwarded_for:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        if len(hops) >= config.trusted_proxies:
            return hops[-config.trusted_proxies]
        # Fewer hops than trusted proxies: it did not pass all of them. The leftmost entry is the
        # one written closest to the client, and there are no client-written entries to its left.
        if hops:
            return hops[0]
    return peer


def client_address(config: ForwardingRules, peer: str, header: Callable[[str], str | None]) -> ClientAddress:
    """The client of a request in canonical form (`header(name)` reads the request's headers): the
    hop client_ip believes, or the TCP peer when that hop is no address."""
    chosen = client_ip(
        config,
        peer=peer,
        forwarded_for=header("X-Forwarded-For"),
        header_value=header(config.header) if config.header else None,
    )
    network = canonical_network(chosen, config.ipv4_prefix, config.ipv6_prefix)
    if network is not None:
        return ClientAddress(network)
    own = canonical_network(peer, config.ipv4_prefix, config.ipv6_prefix) or peer
    if chosen == peer:
        return ClientAddress(own)
    METRICS.proxy.client_ip_invalid.inc()
    return ClientAddress(own, forwarded_valid=False)


def request_ip(config: ForwardingRules, peer: str, header: Callable[[str], str | None]) -> str:
    """The canonical network of a request's client: what every per-address count keys."""
    return client_address(config, peer, header).network
