"""What the deciders know of one request: found once by the gate, handed to both deciders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from waitroom.web.client import ForwardingRules, request_ip


def no_cookies(_name: str) -> Sequence[str]:
    return ()


@dataclass(frozen=True, slots=True)
class RequestFacts:
    host: str
    """The authority decided on and forwarded, normalised (target.normalize_authority)."""
    path: str
    """The path in its routing form (target.judge_target)."""
    method: str
    peer: str
    """The TCP peer's address."""
    header: Callable[[str], str | None]
    """`header(name)`: the request's header of that name, or None."""
    waited: float = 0.0
    """Seconds the request already spent in the proxy before this decision."""
    cookies: Callable[[str], Sequence[str]] = no_cookies
    """`cookies(name)`: every value the request carries under that cookie name (a browser may send
    a stale one beside the fresh one)."""

    @property
    def user_agent(self) -> str:
        return self.header("User-Agent") or ""

    def client_ip(self, rules: ForwardingRules) -> str:
        """The visitor's address, believing forwarded headers only as `rules` allow."""
        return request_ip(rules, self.peer, self.header)
