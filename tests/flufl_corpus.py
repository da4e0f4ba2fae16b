"""The outside corpus of bounce reports: the samples in flufl.bounce's own source distribution.

GNU Mailman's detectors ship ~117 real reports from many MTAs (tests/data/*.txt) with the
addresses each should yield as permanent or temporary failures (tests/test_detectors.py). The
tests fetch that distribution from the package index at the version constraints.txt pins (it is
not copied into this repository) and keep it under test-artifacts/ between runs.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
CACHE = PROJECT / "test-artifacts" / "flufl-bounce-sdist"


@dataclass(frozen=True)
class Sample:
    name: str  # dsn_05.txt
    raw: bytes
    permanent: frozenset[str]  # lowercased addresses flufl's tests expect as permanent failures
    temporary: frozenset[str]


def pinned_version() -> str:
    text = (PROJECT / "constraints.txt").read_text(encoding="utf-8")
    match = re.search(r"^flufl\.bounce==(\S+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("constraints.txt does not pin flufl.bounce")
    return match.group(1)


def source_tree(version: str) -> Path:
    """flufl.bounce's unpacked source distribution, downloaded once from the package index."""
    tree = CACHE / f"flufl_bounce-{version}"
    if (tree / "tests" / "test_detectors.py").is_file():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"flufl.bounce=={version}", "--dest", str(CACHE)], check=True, timeout=300)
    [archive] = CACHE.glob(f"flufl_bounce-{version}.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    return tree


def expectations(tree: Path) -> dict[str, tuple[set[str], set[str]]]:
    """{file: (permanent, temporary)} from the DETECTORS table of flufl's test_detectors.py.

    A file listed under several detectors (groupwise_02: [] for GroupWise, an address for
    Exchange) expects the union: what some detector finds in it.
    """
    module = ast.parse((tree / "tests" / "test_detectors.py").read_text(encoding="utf-8"))
    table = next(node.value for node in module.body if isinstance(node, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "DETECTORS" for t in node.targets))
    expected: dict[str, tuple[set[str], set[str]]] = {}
    for _, filename, addresses, is_temporary in ast.literal_eval(table):
        permanent, temporary = expected.setdefault(filename, (set(), set()))
        (temporary if is_temporary else permanent).update(a.decode("ascii").lower() for a in addresses)
    return expected


def samples() -> list[Sample]:
    """Every sample report of the pinned version, with what flufl expects of it ({} for the rest)."""
    tree = source_tree(pinned_version())
    expected = expectations(tree)
    found = []
    for path in sorted((tree / "tests" / "data").glob("*.txt")):
        permanent, temporary = expected.get(path.name, (set(), set()))
        found.append(Sample(path.name, path.read_bytes(), frozenset(permanent), frozenset(temporary)))
    return found
