"""web/target.py: the canonical request target and the one authority, case by case; covers()."""

from __future__ import annotations

import pytest

from waitroom.web.target import (
    Refused,
    canonical_prefix,
    covers,
    judge_authority,
    judge_target,
    normalize_authority,
)


@pytest.mark.parametrize(
    ("sent", "routing", "forwarded"),
    [
        ("/", "/", "/"),
        ("/shop", "/shop", "/shop"),
        ("//shop//cart/", "/shop/cart/", "/shop/cart/"),
        ("/%73hop", "/shop", "/shop"),
        ("/a%20b", "/a b", "/a%20b"),
        ("/caf\u00e9", "/caf\u00e9", "/caf%C3%A9"),
        ("/x;p=1/y", "/x;p=1/y", "/x;p=1/y"),
        ("/a?b=../c&d=%2F", "/a", "/a?b=../c&d=%2F"),
        ("/a?", "/a", "/a?"),
        ("*", "/", "*"),
    ],
)
def test_canonical(sent: str, routing: str, forwarded: str) -> None:
    target = judge_target(sent)
    assert (target.routing, target.forwarded) == (routing, forwarded)
    assert judge_target(target.forwarded) == target  # the forwarded form is a fixed point


@pytest.mark.parametrize(
    "sent",
    [
        "/a/../b",
        "/a/./b",
        "/..",
        "/%2e%2E/b",
        "/a%2fb",
        "/a%5Cb",
        "/a\\b",
        "/a%",
        "/a%g1",
        "/a%00",
        "/a%0d%0a",
        "/\udcff",
        "/%c0%af",
        "/a#b",
        "a",
        "http://x/a",
        "/a?b\x00",
    ],
)
def test_refused(sent: str) -> None:
    with pytest.raises(Refused) as refused:
        judge_target(sent)
    assert refused.value.status == 400
    assert len(sent) < 3 or sent not in refused.value.reason  # nothing of the input is echoed


def test_too_long() -> None:
    with pytest.raises(Refused) as refused:
        judge_target("/" + "a" * 9000)
    assert refused.value.status == 414


def test_prefixes() -> None:
    assert canonical_prefix("/shop/") == "/shop/"
    for bad, hint in (("//shop", "'/shop'"), ("/%73hop", "'/shop'"), ("/a/../b", "dot segment")):
        with pytest.raises(ValueError, match=hint):
            canonical_prefix(bad)


def test_authority() -> None:
    assert judge_authority(["shop.example"], "", required=True) == "shop.example"
    assert judge_authority([], "shop.example:80", required=True) == "shop.example:80"
    assert judge_authority(["Shop.Example."], "shop.example:443", required=True) == "shop.example:443"
    assert judge_authority([], "", required=False) == ""
    for hosts, absolute, required in (
        (["a", "b"], "", False),
        (["a", "a"], "", False),
        (["a.example"], "b.example", False),
        ([], "", True),
        (["a b"], "", False),
        (["a\x00"], "", False),
    ):
        with pytest.raises(Refused) as refused:
            judge_authority(hosts, absolute, required=required)
        assert refused.value.kind == "authority"


def test_prefixes_are_segment_aware() -> None:
    assert covers("/shop", "/shop")
    assert covers("/shop", "/shop/")
    assert covers("/shop", "/shop/cart")
    assert not covers("/shop", "/shopping")
    assert covers("/static/", "/static/x")
    assert covers("/static/", "/static")
    assert covers("/", "/anything")


def test_normalize_authority() -> None:
    assert normalize_authority("Shop.Example.com:443") == "shop.example.com"
    assert normalize_authority("example.com.") == "example.com"
    assert normalize_authority("[::1]:8080") == "[::1]"
