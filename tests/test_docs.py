"""The documentation holds together: README.md and docs/ link only to files and headings that exist,
and every setting in .env.example is explained somewhere in docs/."""

import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]

LINK = re.compile(r"\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks, with inline code spans blanked out."""
    lines, fence = [], None
    for line in text.splitlines():
        marker = re.match(r"\s*(```|~~~)", line)
        if marker:
            fence = None if fence == marker.group(1) else (fence or marker.group(1))
            continue
        if fence is None:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(page: Path) -> list[str]:
    found = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        found += LINK.findall(re.sub(r"`[^`]*`", "``", line))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(PROJECT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(PROJECT) if file.is_relative_to(PROJECT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(PROJECT)}")
    assert not broken, "\n".join(broken)


def test_docs_index_lists_every_page() -> None:
    index = PROJECT / "docs" / "README.md"
    listed = {target.partition("#")[0] for target in links(index)}
    missing = [page.name for page in PAGES[1:] if page != index and page.name not in listed]
    assert not missing, f"docs/README.md does not list {missing}"


def test_every_setting_in_env_example_is_in_the_docs() -> None:
    settings = set(re.findall(r"NEWSLETTER_[A-Z0-9_]+", (PROJECT / ".env.example").read_text(encoding="utf-8")))
    docs = "\n".join(page.read_text(encoding="utf-8") for page in PAGES[1:])
    missing = sorted(name for name in settings if not re.search(rf"\b{name}\b", docs))
    assert not missing, f"in .env.example but not in docs/: {missing}"
