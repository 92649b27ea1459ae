"""Every design document the code cites is in the repository, with the section it names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"docs/(\w+\.md)(?: section (\d+))?")


def _sources() -> list[Path]:
    return sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))


def test_every_cited_document_and_section_exists():
    cited = 0
    for path in _sources():
        for name, section in CITATION.findall(path.read_text(encoding="utf-8")):
            doc = ROOT / "docs" / name
            assert doc.is_file(), f"{path.relative_to(ROOT)} cites docs/{name}, which does not exist"
            if section:
                headings = re.findall(r"^## (\d+)\. ", doc.read_text(encoding="utf-8"), flags=re.M)
                assert section in headings, f"{path.relative_to(ROOT)} cites docs/{name} section {section}"
            cited += 1
    assert cited > 0  # the code does cite them


def test_no_citation_of_documents_outside_the_repository():
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\b(METHOD|SERVING)\.md\b", text), (
            f"{path.relative_to(ROOT)} cites a missing file"
        )


def test_readme_links_the_design_documents():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("method.md", "serving.md"):
        assert f"(docs/{name})" in readme
        assert (ROOT / "docs" / name).is_file()
