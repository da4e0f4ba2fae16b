"""Where delivery reports come from: .eml files, Maildir folders, mbox files, stdin (a Postfix pipe).

Each report is yielded with where it was found; a source that cannot be read is yielded as a
problem (one line) and the others are still read. Nothing is ever deleted or moved here.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# A delivery report is a few KB; one that carries a whole issue back ~100 KB. Past this, it is
# not read (kept where it is) rather than parsed into memory.
MAX_REPORT_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Incoming:
    where: str  # the file, "mbox FILE, message N", "stdin"
    raw: bytes


@dataclass(frozen=True)
class Unreadable:
    where: str
    problem: str


def read_reports(sources: list[str], stdin: BinaryIO) -> Iterator[Incoming | Unreadable]:
    """Every report in the sources, in order: "-" is stdin, a folder a Maildir or a folder of files."""
    for source in sources:
        if source == "-":
            yield _checked("stdin", stdin.read(MAX_REPORT_BYTES + 1))
            continue
        path = Path(source)
        try:
            if path.is_dir():
                yield from (_maildir(path) if (path / "cur").is_dir() and (path / "new").is_dir()
                            else _folder(path))
            elif path.is_file():
                yield from _mbox_or_file(path)
            else:
                yield Unreadable(source, "no such file or folder")
        except OSError as exc:
            yield Unreadable(source, exc.strerror or str(exc))


def _too_large(where: str) -> Unreadable:
    return Unreadable(where, f"larger than {MAX_REPORT_BYTES // (1024 * 1024)} MB, so not read as a delivery "
                             "report (left where it is)")


def _checked(where: str, raw: bytes) -> Incoming | Unreadable:
    if len(raw) > MAX_REPORT_BYTES:
        return _too_large(where)
    if not raw.strip():
        return Unreadable(where, "empty")
    return Incoming(where, raw)


def _read_file(path: Path) -> Incoming | Unreadable:
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            return _too_large(str(path))
        return _checked(str(path), path.read_bytes())
    except OSError as exc:
        return Unreadable(str(path), exc.strerror or str(exc))


def _maildir(path: Path) -> Iterator[Incoming | Unreadable]:
    # New mail first, then mail already seen by a client; tmp/ holds deliveries still being written.
    for sub in ("new", "cur"):
        for entry in sorted((path / sub).iterdir()):
            if entry.is_file() and not entry.name.startswith("."):
                yield _read_file(entry)


def _folder(path: Path) -> Iterator[Incoming | Unreadable]:
    for entry in sorted(path.iterdir()):
        if entry.is_file() and not entry.name.startswith("."):
            yield from _mbox_or_file(entry)


def _mbox_or_file(path: Path) -> Iterator[Incoming | Unreadable]:
    with path.open("rb") as handle:
        is_mbox = handle.read(5) == b"From "
    if not is_mbox:
        yield _read_file(path)
        return
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.iterkeys(), start=1):
            yield _checked(f"{path}, message {number}", box.get_bytes(key))
    finally:
        box.close()
