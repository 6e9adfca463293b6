"""The docs stay wired together: bench scripts find their markers, the nav names pages that exist, the README stays
a product page. (The site itself is built, with warnings as errors, by `make docs`.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_bench_table_has_its_markers_in_the_benchmarks_page():
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    markers = set()
    for script in (ROOT / "bench").glob("*.py"):
        markers |= set(re.findall(r'(?:publish|replace_in_benchmarks)\("(\w+)"', script.read_text(encoding="utf-8")))
    assert {"text_fewshot", "image_fewshot", "audio_fewshot", "foresight", "adapt", "fit_speed"} <= markers
    for marker in markers:
        start, end = f"<!-- bench:{marker} -->", f"<!-- /bench:{marker} -->"
        assert page.count(start) == 1 and page.count(end) == 1, marker
        assert page.index(start) < page.index(end), marker


def test_the_readme_no_longer_holds_bench_markers():
    """The bench scripts write docs/benchmarks.md; markers left in the README would be stale copies."""
    assert "<!-- bench:" not in (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_page_in_the_nav_exists():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config[config.index("\nnav:"):]
    pages = re.findall(r"^\s*- (?:[^\n]*: )?([\w/.-]+\.md)\s*$", nav, flags=re.MULTILINE)
    assert "index.md" in pages and "reference.md" in pages
    missing = [p for p in pages if not (ROOT / "docs" / p).is_file()]
    assert not missing


def test_the_readme_is_a_product_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    setup = readme.index("make demo")
    assert readme.index("make test") > setup
    assert "make demo" in readme[:1000]
    for link in re.findall(r"\]\(((?:docs/|CONTRIBUTING)[^)#]*)", readme):
        assert (ROOT / link).is_file(), link
