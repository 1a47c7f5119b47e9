"""counter/http.py: the counter's paths and content negotiation."""

from __future__ import annotations

import pytest

from waitroom.counter.http import MAX_PATH_BYTES, BadRequest, counter_path, wants_text

_prefix = iter(range(1_000_000))


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/", "/"),
        ("", "/"),
        ("/a", "/a"),
        ("/a/", "/a"),
        ("/a?x=1", "/a"),
        ("/a#frag", "/a"),
        ("//a///b", "/a/b"),
        ("/%61", "/a"),
        ("/a%2Fb", "/a/b"),
        ("/a/./b/../c", "/a/c"),
        ("/../../a", "/a"),
        ("/A", "/A"),
        ("/caf%C3%A9", "/café"),
        ("/café", "/café"),
        ("/a%20b", "/a b"),
        ("/%3F", "/?"),
    ],
)
def test_paths_are_normalised(target: str, path: str) -> None:
    assert counter_path(target) == path


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/a%", 400),
        ("/a%zz", 400),
        ("/a%4", 400),
        ("/%ff", 400),  # not UTF-8
        ("/a%00b", 400),  # a control character
        ("/a%0Ab", 400),
        ("/" + "a" * (MAX_PATH_BYTES + 1), 414),
        ("/" + "a" * 100_000, 414),
    ],
)
def test_bad_paths_are_refused_with_a_clear_status(target: str, status: int) -> None:
    with pytest.raises(BadRequest) as refused:
        counter_path(target)
    assert refused.value.status == status
    assert refused.value.answer().headers["Content-Type"] == "application/problem+json"


def test_the_longest_allowed_path_is_counted() -> None:
    longest = "/" + "a" * (MAX_PATH_BYTES - 1)
    assert counter_path(longest) == longest


@pytest.mark.parametrize(
    ("accept", "text"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/plain", True),
        ("text/*", True),
        ("text/plain, application/json", False),  # a tie: JSON
        ("text/plain;q=1, application/json;q=0.5", True),
        ("application/json;q=0.9, text/plain", True),
        ("text/html", False),
        ("text/plain;q=oops", False),
    ],
)
def test_text_is_served_when_preferred(accept: str, text: bool) -> None:
    assert wants_text(accept) is text
