"""The documentation's pages (README.md, docs/*.md): their code blocks, the examples among them (every `curl`
block, every Python and JavaScript block) with the HTML comment before each saying who runs it, and their links.

An example's marker is the last non-blank line before its block: ``<!-- runs: tests/...py -->`` (that test runs
it) or ``<!-- not run: reason -->`` (it needs AWS, a GPU, ...)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

MARKER = re.compile(r"^<!-- (runs|not run): (.+?) -->$")
FENCE = re.compile(r"^```(\w*)\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: tuple[str, str] | None  # ("runs", test file) or ("not run", reason)

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def is_example(self) -> bool:
        return self.language in ("python", "js") or (self.language in ("bash", "sh") and "curl " in self.code)


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        code = "\n".join(lines[i + 1 : end])
        found.append(Block(page, i + 1, fence.group(1), code, marker.groups() if marker else None))
        i = end + 1
    return found


def examples_run_by(test_file: str) -> list[Block]:
    """The examples whose marker says ``test_file`` runs them, in page order."""
    return [b for p in pages() for b in blocks(p) if b.is_example and b.marker == ("runs", test_file)]


def prose(page: Path) -> str:
    """The page without its code blocks (links inside code are not links)."""
    text = page.read_text()
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page))


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    headings = re.findall(r"^#{1,6} (.+)$", prose(page), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}
