"""Helpers for the browser suite: where Chromium is, test configs, what a page asked and got."""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, Request, Response

from tests.support import REPO

ARTIFACTS = REPO / "tests" / "artifacts"
DOCS = REPO / "docs"
UPDATE_DOCS_ENV = "WAITROOM_UPDATE_DOCS"
CHROMIUM_ENV = "WAITROOM_CHROMIUM"
WAIT_HEADING = "You are in the waiting room"
COUNTER_PRE = "body > pre"
"""Chromium shows a JSON answer (the request counter's) as text in a <pre>."""


class ChromiumMissing(RuntimeError):
    pass


def find_chromium(env: Mapping[str, str] = os.environ) -> str:
    """Debian's chromium (or $WAITROOM_CHROMIUM); Playwright never downloads a browser of its own."""
    wanted = env.get(CHROMIUM_ENV)
    candidates = [wanted] if wanted else [shutil.which("chromium"), "/usr/bin/chromium"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    where = f"${CHROMIUM_ENV}={wanted}" if wanted else "`chromium` on PATH or /usr/bin/chromium"
    raise ChromiumMissing(
        f"the browser tests need Debian's chromium, and found no {where}: "
        "run `make system-deps` (it runs apt-get install chromium)"
    )


def room_config(
    *,
    new_sessions: int,
    window: str,
    block_for: str,
    retry_after: str = "1s",
    name: str = "shop",
    extra: str = "",
) -> str:
    """One room over every path, in front of the request counter."""
    return (
        "rooms:\n"
        f"  - name: {name}\n"
        "    match: {path_prefix: /}\n"
        f"    new_sessions: {new_sessions}\n"
        f"    window: {window}\n"
        f"    block_for: {block_for}\n"
        f"    retry_after: {retry_after}\n"
        f"{extra}"
    )


def is_poll(request: Request) -> bool:
    """The wait page's own question: may I come in?"""
    return request.headers.get("waitroom-poll") == "1"


def counter_json(page: Page) -> Any:
    return json.loads(page.locator(COUNTER_PRE).inner_text())


@dataclass(frozen=True)
class Seen:
    url: str
    status: int
    kind: str
    poll: bool
    waitroom: str | None
    """The proxy's `Waitroom-Status` header: `waiting`, `admitted` (a poll), or None."""


@dataclass
class Journal:
    """Every answer a page got, in order, from the browser's side (headers only: bodies of earlier
    documents are gone once the page navigates)."""

    page: Page
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("response", self._record)

    def _record(self, response: Response) -> None:
        request = response.request
        self.seen.append(
            Seen(
                response.url,
                response.status,
                request.resource_type,
                is_poll(request),
                response.headers.get("waitroom-status"),
            )
        )

    def documents(self) -> list[tuple[str, int]]:
        return [(s.url, s.status) for s in self.seen if s.kind == "document"]

    def polls(self) -> list[tuple[int, str | None]]:
        return [(s.status, s.waitroom) for s in self.seen if s.poll]


def relative_luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2.x relative luminance of an sRGB colour with 0..255 channels."""

    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def over(fg: list[int], bg: list[int]) -> tuple[float, float, float]:
    """`fg` (RGBA, 0..255) painted over the opaque `bg`."""
    alpha = fg[3] / 255
    return (
        fg[0] * alpha + bg[0] * (1 - alpha),
        fg[1] * alpha + bg[1] * (1 - alpha),
        fg[2] * alpha + bg[2] * (1 - alpha),
    )


def contrast_ratio(fg: tuple[float, float, float], bg: tuple[float, float, float]) -> float:
    light, dark = sorted((relative_luminance(fg), relative_luminance(bg)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)
