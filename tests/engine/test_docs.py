"""Comments that send a reader to docs/engine.md name a section that is there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_REFERENCE = re.compile(r'docs/engine\.md,\s*(?:#\s*)?"([^"]+)"')


def test_every_section_the_code_points_to_exists() -> None:
    headings = {
        line.lstrip("#").strip() for line in (ROOT / "docs/engine.md").read_text().splitlines() if line.startswith("#")
    }
    cited = {
        (str(path.relative_to(ROOT)), section)
        for path in sorted((ROOT / "engine").rglob("*.py"))
        for section in _REFERENCE.findall(path.read_text(encoding="utf-8").replace("\n", " "))
    }
    assert cited
    assert {(path, section) for path, section in cited if section not in headings} == set()
