"""Ending a visit early, so that its place is free at once (docs/concepts.md, "Capacity and release").

- The upstream answers with `Waitroom-Command: release` (checkout done, logout): the visitor's
  session in the room ends, its place inside is free, and the cookie is cleared. The header never
  reaches the client, whatever its value.
- `POST /.waitroom/leave` (the page, or the service on the visitor's behalf): every room whose
  cookie the request carries is left — a session ends, a ticket's place in line is given up — and
  the cookies are cleared. It is answered by the proxy; the upstream never sees it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

from mitmproxy import http

from waitroom import early
from waitroom.act import SESSION_KEY, SET_COOKIE_KEY, cookie_secure
from waitroom.config import RoomConfig
from waitroom.decide import cookie_name
from waitroom.replay import METADATA_KEY
from waitroom.responses import set_cookie
from waitroom.runtime import Loaded
from waitroom.store import Overloaded, StoreError

log = logging.getLogger(__name__)

COMMAND_HEADER = "Waitroom-Command"
LEAVE_PATH = "/.waitroom/leave"


async def on_response(flow: http.HTTPFlow, loaded: Loaded) -> None:
    """The upstream's answer: take the command header off; on `release`, end the session (the
    store is told before the answer goes on, within store.timeout) and clear the cookie."""
    response = flow.response
    if response is None or COMMAND_HEADER not in response.headers:
        return
    commands = [c.strip().lower() for c in response.headers.get_all(COMMAND_HEADER)]
    del response.headers[COMMAND_HEADER]
    found = flow.metadata.pop(SESSION_KEY, None)
    if "release" not in commands or found is None:
        return
    # Saved with the flow (`mitmdump -w`): a replay gives the recorded answer its command back.
    flow.metadata.setdefault(METADATA_KEY, {})["command"] = "release"
    room_name, session_id = found
    room = next((r for r in loaded.config.rooms if r.name == room_name), None)
    if room is None:  # the config changed under the request
        return
    flow.metadata.pop(SET_COOKIE_KEY, None)  # no renewal, nor a new session, on its way out
    await _release(loaded, room_name, session_id, "header")
    response.headers.add("Set-Cookie", _cleared(flow, loaded, room))


async def leave(flow: http.HTTPFlow, loaded: Loaded, cookies: Callable[[str], Sequence[str]]) -> None:
    """POST /.waitroom/leave: leave every room (or line) the request's cookies hold a place in."""
    if flow.request.method != "POST":
        answer = http.Response.make(405, b'{"status": "error", "detail": "use POST"}\n')
        answer.headers.update(
            {"Allow": "POST", "Content-Type": "application/json", "Cache-Control": "no-store"}
        )
        early.answer_now(flow, answer)
        return
    codec, now = loaded.decider.codec, loaded.decider.clock()
    user_agent = flow.request.headers.get("User-Agent", "")  # what tickets are bound to
    left, cleared = [], []
    for room in loaded.config.rooms:
        for token in cookies(cookie_name(loaded.config, room)):
            held = codec.verify(token, room.name, now) or codec.ticket(token, room.name, now, user_agent)
            session_id = held.session_id if held else codec.pending(token, room.name, now)
            if session_id is not None:
                await _release(loaded, room.name, session_id, "leave")
                left.append(room.name)
                cleared.append(_cleared(flow, loaded, room))
                break
    body = json.dumps({"status": "left", "rooms": left}).encode()
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store", "Waitroom-Status": "left"}
    answer = http.Response.make(200, body, headers)
    for header in cleared:
        answer.headers.add("Set-Cookie", header)
    early.answer_now(flow, answer)


async def _release(loaded: Loaded, room: str, session_id: str, source: str) -> None:
    try:
        await loaded.decider.activity.release(room, session_id, source)
    except (StoreError, Overloaded) as e:
        # Not honoured here any more, and the cookie goes; the place comes back when the session's
        # activity stops (session.ttl) or the ticket is dropped (abandon_after).
        log.warning("waitroom: a release in room %s could not reach the store (%s)", room, e)


def _cleared(flow: http.HTTPFlow, loaded: Loaded, room: RoomConfig) -> str:
    return set_cookie(cookie_name(loaded.config, room), "", 0, cookie_secure(flow, loaded))
