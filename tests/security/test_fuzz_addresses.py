"""Issue 27, N4: one client address, however it is spelled, is one key; text that is no address
never raises and never becomes a key of its own (hypothesis; pure, a few seconds)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from waitroom.config.rules import ClientIPConfig
from waitroom.web.client import canonical_network, client_address

V6 = st.integers(min_value=0, max_value=2**128 - 1)
V4 = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def hex_group(draw: st.DrawFn, value: int) -> str:
    digits = f"{value:x}".rjust(draw(st.integers(1, 4)), "0")
    return "".join(c.upper() if draw(st.booleans()) else c for c in digits)


@st.composite
def v6_spelling(draw: st.DrawFn, value: int, tail_v4: bool = False) -> str:
    """`value` written as RFC 4291 allows: any case, zero padding, `::` over any run of zero groups
    (or none), and with `tail_v4` the last 32 bits dotted."""
    groups = [(value >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    words = [draw(hex_group(g)) for g in groups]
    if tail_v4:
        words = [*words[:6], str(ipaddress.IPv4Address(value & 0xFFFFFFFF))]
    runs = [
        (i, j)
        for i in range(len(words))
        for j in range(i + 1, len(words) + 1)
        if all(g == 0 for g in groups[i:j]) and not (tail_v4 and j > 6)
    ]
    if runs and draw(st.booleans()):
        i, j = draw(st.sampled_from(runs))
        return ":".join(words[:i]) + "::" + ":".join(words[j:])
    return ":".join(words)


@st.composite
def dressed(draw: st.DrawFn, address: str, v6: bool) -> str:
    """The address as a hop or a header may carry it: zone, brackets, port, quotes, spaces."""
    if v6 and draw(st.booleans()):
        address += "%" + draw(st.sampled_from(["eth0", "1", "en0"]))
    port = draw(st.one_of(st.none(), st.integers(0, 65535)))
    if v6 and (port is not None or draw(st.booleans())):
        address = f"[{address}]"
    if port is not None:
        address += f":{port}"
    if draw(st.booleans()):
        address = f'"{address}"'
    return " " * draw(st.integers(0, 2)) + address + " " * draw(st.integers(0, 2))


def _v6_key(value: int, prefix: int = 64) -> str:
    return str(ipaddress.ip_network((value >> (128 - prefix) << (128 - prefix), prefix)))


@settings(max_examples=500, deadline=None)
@given(data=st.data(), value=V6)
def test_every_ipv6_spelling_is_one_key(data: st.DataObject, value: int) -> None:
    if ipaddress.IPv6Address(value).ipv4_mapped is not None:
        return  # an IPv4 client: the next test
    spelled = data.draw(dressed(data.draw(v6_spelling(value, tail_v4=data.draw(st.booleans()))), v6=True))
    assert canonical_network(spelled) == _v6_key(value), spelled


@settings(max_examples=500, deadline=None)
@given(data=st.data(), value=V4)
def test_every_ipv4_spelling_is_one_key(data: st.DataObject, value: int) -> None:
    mapped = 0xFFFF_0000_0000 | value
    spelled = data.draw(
        st.one_of(
            st.just(str(ipaddress.IPv4Address(value))),
            v6_spelling(mapped),  # ::ffff:0a09:0909, in any case and padding
            v6_spelling(mapped, tail_v4=True),  # ::ffff:10.9.9.9
        )
    )
    spelled = data.draw(dressed(spelled, v6=":" in spelled))
    assert canonical_network(spelled) == str(ipaddress.IPv4Address(value)), spelled


@settings(max_examples=300, deadline=None)
@given(network=V6, a=st.integers(0, 2**64 - 1), b=st.integers(0, 2**64 - 1), other=V6)
def test_one_64_is_one_key_and_two_are_two(network: int, a: int, b: int, other: int) -> None:
    base = network >> 64 << 64
    if ipaddress.IPv6Address(base).ipv4_mapped is not None or (base >> 32) == 0xFFFF:
        return
    first, second = str(ipaddress.IPv6Address(base | a)), str(ipaddress.IPv6Address(base | b))
    assert canonical_network(first) == canonical_network(second) == _v6_key(base)
    if other >> 64 != network >> 64 and ipaddress.IPv6Address(other).ipv4_mapped is None:
        assert canonical_network(str(ipaddress.IPv6Address(other))) != canonical_network(first)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(max_size=80), st.binary(max_size=80).map(lambda b: b.decode("latin-1"))))
def test_any_text_is_an_address_or_none(text: str) -> None:
    found = canonical_network(text)
    if found is not None:
        ipaddress.ip_network(found)  # a key is always a network in canonical form
        assert canonical_network(found.partition("/")[0]) == found


@settings(max_examples=300, deadline=None)
@given(hops=st.lists(st.text(max_size=30).filter(lambda t: "," not in t), min_size=1, max_size=4))
def test_a_junk_forwarded_hop_is_the_peer_never_a_new_key(hops: list[str]) -> None:
    rules = ClientIPConfig(trusted_proxies=1)
    found = client_address(rules, "192.0.2.1", {"X-Forwarded-For": ", ".join(hops)}.get)
    believed = [h.strip() for h in hops if h.strip()]
    expected = canonical_network(believed[-1]) if believed else None
    assert found.network == (expected or "192.0.2.1")
    assert found.forwarded_valid == (expected is not None or not believed)
