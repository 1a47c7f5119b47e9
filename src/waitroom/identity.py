"""Who the client is and how it reached us, trusting forwarded headers only from trusted proxies."""

from __future__ import annotations

from collections.abc import Callable

from waitroom.config import ClientIPConfig


def behind_trusted_proxy(config: ClientIPConfig) -> bool:
    """Forwarded headers are believed only when the operator says a proxy of theirs sets them."""
    return config.trusted_proxies > 0 or config.header is not None


def client_is_https(config: ClientIPConfig, *, tls: bool, forwarded_proto: str | None) -> bool:
    """Did the visitor's own connection use https? Our connection, or the trusted proxy's word.

    With N trusted proxies the nearest one appends its view last, so the last value counts.
    """
    if tls:
        return True
    if forwarded_proto and behind_trusted_proxy(config):
        return forwarded_proto.split(",")[-1].strip().lower() == "https"
    return False


def client_ip(
    config: ClientIPConfig, *, peer: str, forwarded_for: str | None, header_value: str | None
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


def request_ip(config: ClientIPConfig, peer: str, header: Callable[[str], str | None]) -> str:
    """client_ip for a request: `header(name)` reads the request's headers."""
    return client_ip(
        config,
        peer=peer,
        forwarded_for=header("X-Forwarded-For"),
        header_value=header(config.header) if config.header else None,
    )
