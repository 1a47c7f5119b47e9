"""Every relative link in README.md and docs/*.md points at a file that exists, and every
`#anchor` at a heading of the page it names (GitHub's heading anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from waitroom.config.schema import RoomConfig

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    heading = heading.strip().lower()
    heading = re.sub(r"[^\w\- ]", "", heading)
    return heading.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def links(page: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(_prose(page.read_text(encoding="utf-8")))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading with this anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_docs_are_linked_from_the_readme() -> None:
    readme = set(links(ROOT / "README.md"))
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md's map of the docs lacks {missing}"


def test_the_design_contract_names_every_room_key() -> None:
    """docs/design.md's Contract is what users rely on: every room key is in it, and nothing there
    is still "planned" (it once called the built fifo queue planned)."""
    design = (ROOT / "docs" / "design.md").read_text()
    contract = design.split("## Contract", 1)[1].split("\n## ", 1)[0]
    missing = [
        name
        for name in RoomConfig.model_fields
        if f"`{name}`" not in contract and f"`rooms[].{name}`" not in contract
    ]
    assert not missing, f"docs/design.md's Contract does not name: {missing}"
    assert not [line for line in contract.splitlines() if line.lstrip("- *").lower().startswith("planned")]
