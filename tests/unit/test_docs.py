"""The documentation holds together: every link between pages (and to an anchor, and to a file of the checkout)
resolves, every example (curl, Python, JavaScript block) says who runs it, README stays a short entry page."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import REPO
from tests.doc_blocks import anchors, blocks, links, pages

RUNNERS = {"tests/integration/test_doc_examples.py", "tests/integration/test_demo_page.py"}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path)).resolve() if path else page
        if not resolved.exists() or not resolved.is_relative_to(REPO):
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    return broken


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page):
    assert broken_links(page) == []


def test_a_broken_link_or_anchor_is_found(tmp_path, monkeypatch):
    page = REPO / "docs" / "_probe.md"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        "# Probe\n\n[ok](http-api.md#errors) [gone](nope.md) [no anchor](http-api.md#no-such-heading)"
        if self == page else Path.read_bytes(self).decode()))  # fmt: skip
    assert broken_links(page) == ["nope.md: no such file", "http-api.md#no-such-heading: no heading with anchor "
                                  "#no-such-heading"]  # fmt: skip


def test_anchors_follow_githubs_rule():
    assert {"what-make-serve-starts", "configuration-and-security", "alarms-and-notifications"} <= anchors(
        REPO / "docs" / "operations.md"
    )
    assert {"get_embedding", "generate_3d", "errors", "openapi-document"} <= anchors(REPO / "docs" / "http-api.md")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_says_who_runs_it(page):
    unmarked = [b.name for b in blocks(page) if b.is_example and b.marker is None]
    assert unmarked == [], "put <!-- runs: tests/...py --> or <!-- not run: reason --> before each"
    runners = {b.marker[1] for b in blocks(page) if b.is_example and b.marker[0] == "runs"}
    assert runners <= RUNNERS


def test_examples_are_run_where_they_can_be():
    """Only what needs AWS, a GPU or servers of its own is left unrun."""
    reasons = [b.marker[1] for p in pages() for b in blocks(p) if b.is_example and b.marker[0] == "not run"]
    assert all(any(word in r for word in ("AWS", "GPU", "starts")) for r in reasons), reasons


def test_readme_is_short_and_links_every_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in (REPO / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, page.name
