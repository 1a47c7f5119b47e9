"""web/client.py: the client behind trusted proxies."""

from __future__ import annotations

from waitroom.config.rules import ClientIPConfig
from waitroom.rooms.sessions import keys_from_secret
from waitroom.web.client import ClientAddress, canonical_network, client_address, client_ip, client_is_https

KEY_A = keys_from_secret("key-a-0123456789abcdef")

KEY_B = keys_from_secret("key-b-0123456789abcdef")

NOW = 1_800_000_000.0


def test_https_is_believed_only_from_trusted_proxies() -> None:
    untrusted, trusted = ClientIPConfig(), ClientIPConfig(trusted_proxies=1)
    assert client_is_https(untrusted, tls=True, forwarded_proto=None)
    assert not client_is_https(untrusted, tls=False, forwarded_proto="https")
    assert client_is_https(trusted, tls=False, forwarded_proto="http, https")
    assert not client_is_https(trusted, tls=False, forwarded_proto="https, http")


def test_spoofed_forwarded_for_does_not_move_the_client() -> None:
    untrusted, one = ClientIPConfig(), ClientIPConfig(trusted_proxies=1)
    assert client_ip(untrusted, peer="10.0.0.9", forwarded_for="1.2.3.4", header_value=None) == "10.0.0.9"
    assert client_ip(one, peer="10.0.0.1", forwarded_for="6.6.6.6, 5.5.5.5", header_value=None) == "5.5.5.5"
    assert client_ip(one, peer="10.0.0.1", forwarded_for="5.5.5.5", header_value=None) == "5.5.5.5"
    header = ClientIPConfig(header="X-Envoy-External-Address")
    assert client_ip(header, peer="10.0.0.1", forwarded_for="6.6.6.6", header_value="7.7.7.7") == "7.7.7.7"
    assert client_ip(header, peer="10.0.0.1", forwarded_for=None, header_value=None) == "10.0.0.1"


def test_every_spelling_of_an_address_is_one_client() -> None:
    one = {
        canonical_network(s)
        for s in (
            "2001:DB8::1",
            "2001:0db8::0001",
            "[2001:db8::1]:443",
            "2001:db8::1%eth0",
            ' "2001:db8::1" ',
        )
    }
    assert one == {"2001:db8::/64"}
    assert canonical_network("2001:db8::ffff:1") == "2001:db8::/64"  # the same /64
    assert canonical_network("2001:db8:0:1::1") == "2001:db8:0:1::/64"  # the next /64
    assert {
        canonical_network(s) for s in ("10.9.9.9", "::ffff:10.9.9.9", "::FFFF:0a09:0909", "10.9.9.9:80")
    } == {"10.9.9.9"}
    assert canonical_network("2001:db8::1", ipv6_prefix=128) == "2001:db8::1"
    assert canonical_network("2001:db8:aaaa:bbbb::1", ipv6_prefix=48) == "2001:db8:aaaa::/48"
    assert canonical_network("10.9.9.9", ipv4_prefix=24) == "10.9.9.0/24"


def test_text_that_is_no_address_is_none() -> None:
    for text in (
        "",
        "unknown",
        "_hidden",
        "010.9.9.9",
        "1.2.3.4:",
        "[::1]:",
        "[::1",
        "1.2.3.4:99999999",
        "١.2.3.4",
        "1.2.3.4" + " " * 200,
        "::ffff:1.2.3.4.5",
        "1.2.3",
    ):
        assert canonical_network(text) is None, text
    # NAT64 and friends are not the IPv4 address inside them.
    assert canonical_network("64:ff9b::10.9.9.9") == "64:ff9b::/64"


def test_a_forwarded_value_that_is_no_address_counts_as_the_peer() -> None:
    one = ClientIPConfig(trusted_proxies=1)
    headers = {"X-Forwarded-For": "6.6.6.6, unknown"}
    found = client_address(one, "10.0.0.1", headers.get)
    assert found == ClientAddress("10.0.0.1", forwarded_valid=False)
    assert client_address(one, "::ffff:10.0.0.1", {"X-Forwarded-For": "2001:DB8::7"}.get) == ClientAddress(
        "2001:db8::/64"
    )
    header = ClientIPConfig(header="X-Real", ipv6_prefix=56)
    assert client_address(header, "10.0.0.1", {"X-Real": "2001:db8:0:ff::1"}.get).network == "2001:db8::/56"
    assert client_address(ClientIPConfig(), "", {}.get) == ClientAddress("")  # no peer (a replay)
