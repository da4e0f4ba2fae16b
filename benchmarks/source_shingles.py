"""The real-coverage corpus's originality check: hashes of the cited pages' word shingles, never their text.

    .venv/bin/python -m benchmarks.source_shingles /tmp/corpus-sources

Reads the cited pages' text, saved outside the repository (one file a page,
`*.txt`, its first line the page's address as SOURCES.md gives it, the rest the
page's text), adds the headline words every cited address carries in its path,
and writes benchmarks/corpus/real/source-shingles.txt: the truncated, keyed
BLAKE2b hash of every run of SHINGLE_WORDS consecutive normalised words, sorted,
one a line. tests/test_corpus_originality.py hashes every title and summary of
the corpus the same way and fails on any hash found here, so a copied sentence
is caught without the repository keeping anyone's text.

Normalised: Arabic diacritics and tatweel dropped, alef, ya, ta marbuta and
hamza seats unified, Arabic-Indic and Persian digits made ASCII, decimal commas
and points made one, punctuation dropped. The key is public (it is below); it
only keeps the file from being a table anyone's shingles can be looked up in.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import unicodedata
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

REAL = Path(__file__).resolve().parent / "corpus" / "real"
HASHES = REAL / "source-shingles.txt"
SOURCES = REAL / "SOURCES.md"
SHINGLE_WORDS = 7
HASH_BYTES = 6
KEY = b"arabic-morning-corpus-originality-v1"

_DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_LETTERS = str.maketrans({
    "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ی": "ي", "ئ": "ي", "ؤ": "و", "ة": "ه", "ک": "ك",
    **{chr(0x0660 + n): str(n) for n in range(10)},
    **{chr(0x06F0 + n): str(n) for n in range(10)},
    "٫": ".", "٬": ",",
})
# A decimal comma or point between digits is one mark ("4,0" and "4.0" alike); other punctuation splits words.
_DECIMAL = re.compile(r"(?<=\d)[.,](?=\d)")
_WORD = re.compile(r"[^\W_]+(?:\.\d+)?")


def words(text: str) -> list[str]:
    """The text's words, normalised so that spelling variants of one word hash alike."""
    text = unicodedata.normalize("NFKC", text)
    text = _DIACRITICS.sub("", text).translate(_LETTERS).lower()
    text = _DECIMAL.sub(".", text)
    return _WORD.findall(text)


def shingles(text: str, size: int = SHINGLE_WORDS) -> Iterator[str]:
    """Every run of `size` consecutive words of the text, joined by one space."""
    found = words(text)
    for start in range(len(found) - size + 1):
        yield " ".join(found[start:start + size])


def shingle_hash(shingle: str) -> str:
    return hashlib.blake2b(shingle.encode("utf-8"), digest_size=HASH_BYTES, key=KEY).hexdigest()


def load_hashes(path: Path = HASHES) -> set[str]:
    return {line for line in path.read_text(encoding="ascii").splitlines() if line and not line.startswith("#")}


def cited_addresses(sources: Path = SOURCES) -> list[str]:
    """Every page address SOURCES.md cites, in its order."""
    return [urllib.parse.unquote(a) for a in re.findall(r"<(https?://[^>]+)>", sources.read_text(encoding="utf-8"))]


def headline_of(address: str) -> str:
    """The words a page's address carries in its path (most outlets put the headline there)."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(address).path)
    return re.sub(r"[-_/+.]+", " ", path)


def saved_pages(folder: Path) -> dict[str, str]:
    """address -> text of every page saved in the folder."""
    pages = {}
    for path in sorted(folder.glob("*.txt")):
        address, _, text = path.read_text(encoding="utf-8").partition("\n")
        pages[urllib.parse.unquote(address.strip())] = text
    return pages


def source_hashes(texts: Iterable[str]) -> set[str]:
    return {shingle_hash(s) for text in texts for s in shingles(text)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the saved pages, one *.txt a page (address on the first line)")
    args = parser.parse_args(argv)

    cited = cited_addresses()
    pages = saved_pages(args.folder)
    strangers = sorted(set(pages) - set(cited))
    if strangers:
        raise SystemExit(f"not cited in SOURCES.md: {', '.join(strangers)}")
    hashes = source_hashes([*pages.values(), *(headline_of(a) for a in cited)])
    HASHES.write_text(
        f"# {len(hashes)} hashes of {SHINGLE_WORDS}-word shingles of {len(pages)} of the {len(set(cited))} cited pages'"
        " text and of every cited address's headline words: benchmarks/source_shingles.py\n"
        + "".join(f"{h}\n" for h in sorted(hashes)),
        encoding="ascii",
    )
    missing = [a for a in dict.fromkeys(cited) if a not in pages]
    print(f"{len(pages)} pages read, {len(missing)} cited pages without text, {len(hashes)} hashes -> {HASHES}")
    for address in missing:
        print(f"  no text: {address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
