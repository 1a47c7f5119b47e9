"""Who the client is and how it reached us, trusting forwarded headers only from trusted proxies."""

from __future__ import annotations

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
