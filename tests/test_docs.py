"""Comments send a reader only to documents in the repository, and to sections that are there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = sorted(
    p for folder in ("bot", "engine", "storage", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")
)
# docs/<page>.md, "<section>" (the line may wrap between the two)
_REFERENCE = re.compile(r'docs/(\w+)\.md,\s*(?:#\s*)?"([^"]+)"')
# the design notes the project started from live outside the repository: a reader of the code does not have them
_OUTSIDE = re.compile(r"(?<!docs/)\b(?:engine|dependencies|discord|style|precision)\.md\b")


def _headings(page: str) -> set[str]:
    lines = (ROOT / "docs" / f"{page}.md").read_text(encoding="utf-8").splitlines()
    return {line.lstrip("#").strip() for line in lines if line.startswith("#")}


def test_every_section_the_code_points_to_exists() -> None:
    cited = {
        (str(path.relative_to(ROOT)), page, section)
        for path in CODE
        for page, section in _REFERENCE.findall(path.read_text(encoding="utf-8").replace("\n", " "))
    }
    pages = {page for _, page, _ in cited}
    assert {"architecture", "discord", "engine"} <= pages
    headings = {page: _headings(page) for page in pages if (ROOT / "docs" / f"{page}.md").exists()}
    missing = {(path, page, section) for path, page, section in cited if section not in headings.get(page, set())}
    assert missing == set()


def test_no_code_cites_a_document_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in CODE
        if path != Path(__file__)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if _OUTSIDE.search(line)
    ]
    assert found == []
