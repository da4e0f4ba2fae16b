"""The real-coverage corpus copies no sentence of the pages it cites (issue 27).

benchmarks/corpus/real/source-shingles.txt holds keyed hashes of every run of
seven consecutive words of the cited pages (their text, retrieved once and kept
outside the repository, and the headline words of every cited address), made by
benchmarks/source_shingles.py. Every title and summary of the corpus is hashed
the same way; one hash in common is a copied run of seven words.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from pathlib import Path

import pytest

from benchmarks import source_shingles
from benchmarks.source_shingles import REAL, SHINGLE_WORDS, shingle_hash, shingles, words


@pytest.fixture(scope="module")
def source() -> set[str]:
    return source_shingles.load_hashes()


def reports(folder: Path) -> list[dict]:
    return [
        report
        for path in sorted(folder.glob("days-*.json"))
        for day in json.loads(path.read_text(encoding="utf-8"))["days"]
        for report in day["reports"]
    ]


def copied(report: dict, source: set[str]) -> list[str]:
    """The report's runs of seven words that a cited page has too."""
    return [s for field in ("title", "summary") for s in shingles(report[field]) if shingle_hash(s) in source]


def test_the_hashes_cover_the_cited_pages(source):
    cited = source_shingles.cited_addresses()
    corpus_urls = {r["url"] for r in reports(REAL)}

    assert len(source) > 3_000, "the cited pages' text is hashed, not only their addresses"
    assert all(shingle_hash(s) in source for a in cited for s in shingles(source_shingles.headline_of(a)))
    # nabd's copies carry its tracking parameters after the page's own address.
    assert {urllib.parse.unquote(u.split("?utm_")[0].split("&utm_")[0]) for u in corpus_urls} <= set(cited)


def test_no_title_or_summary_copies_a_cited_page(source):
    found = {r["url"]: hits for r in reports(REAL) if (hits := copied(r, source))}

    assert not found, found


def test_a_copied_sentence_is_caught(source):
    report = copy.deepcopy(next(r for r in reports(REAL) if r["feed"] == "lbci"))
    # The first sentence of a cited page (LBCI on the Iran vote), planted with its diacritics.
    report["summary"] += (
        " فشل مسعى روسيّ وصينيّ لتأجيل إعادة فرض عقوبات الأمم المتحدة على إيران في مجلس الأمن الدوليّ"
        " المكون من 15 دولة عضوًا."
    )

    assert copied(report, source)


def test_spelling_variants_hash_alike():
    assert words("إعادةُ فرضِ العقوباتِ ٤٫٧٥٪ على إيــران") == words("اعاده فرض العقوبات 4,75% علي ايران")
    assert len(list(shingles("one two three four five six seven eight"))) == 8 - SHINGLE_WORDS + 1
