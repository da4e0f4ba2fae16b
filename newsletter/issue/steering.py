"""The editor's changes to one day's issue, made by clicking: each one writes the editorial file.

The page (`newsletter preview`) and the file stay one thing, so the CLI, cron and the page always
agree. A change reads the file as it is, comments and layout included, edits it with tomlkit
(style-preserving), checks the result exactly as `render` and `send` will, and replaces the file
atomically. Every change names the version it was made on (a hash of the file's bytes): one made
on an older version is refused with the fresh state, so two editors never overwrite each other
silently. The day's previous versions are kept beside the file (`.history/`), for undo.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError

from ..errors import NewsletterError
from .editorial import EditorialError, check_pin_count, editorial_path, parse_editorial

NO_FILE = "none"  # the version of a day without an editorial file
MAX_TITLE = 300
MAX_SUMMARY = 2000
MAX_INTRO = 2000
ACTIONS = ("lead", "up", "down", "drop", "pin", "apart", "together", "edit", "restore", "intro")


class StaleVersion(NewsletterError):
    """The change was made on a version of the file that is no longer the current one."""

    def __init__(self, current: str, message: str = "someone changed this issue meanwhile: the page now shows "
                                                   "the latest version; make your change again") -> None:
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class Change:
    action: str  # one of ACTIONS
    url: str = ""
    title: str = ""
    summary: str = ""
    intro: str = ""


def version_of(text: str | None) -> str:
    return NO_FILE if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def current_version(folder: Path, date: dt.date) -> str:
    return version_of(_read(editorial_path(folder, date)))


def steer(folder: Path, date: dt.date, change: Change, version: str, shown: list[str],
          offered: set[str], max_stories: int = 12) -> str:
    """Apply one change made on `version` of the day's file; the new version.

    `shown` is the issue's stories as the page showed them (lead first), `offered` every story
    URL the feeds offer today, `max_stories` NEWSLETTER_MAX_STORIES. Raises StaleVersion, or EditorialError with the file's own message
    when the change would make a file that `render` and `send` reject; nothing is written then.
    """
    path = editorial_path(folder, date)
    text = _read(path)
    if version != version_of(text):
        raise StaleVersion(version_of(text))
    try:
        document = tomlkit.parse(text or "")
    except TOMLKitError as exc:
        raise EditorialError(f"{path}: fix the file first: {exc}") from None
    _apply(document, change, shown)
    new_text = tomlkit.dumps(document)
    if new_text == (text or ""):
        return version  # nothing changed (a story already told apart, pinned…): no new version to undo
    editorial = parse_editorial(path, new_text)
    for url in editorial.referenced_urls():
        if url not in offered:
            raise editorial.error(f"unknown story URL {url}: no feed offers it today", near=url)
    check_pin_count(editorial, max_stories)
    _keep_history(path, text)
    _write_atomically(path, new_text)
    return version_of(new_text)


def undo(folder: Path, date: dt.date, version: str) -> str:
    """Put back the version before the last change of the day; the new version."""
    path = editorial_path(folder, date)
    text = _read(path)
    if version != version_of(text):
        raise StaleVersion(version_of(text))
    kept = _history(path)
    if not kept:
        raise EditorialError(f"{path}: nothing to undo today")
    previous = kept[-1].read_text(encoding="utf-8")
    if kept[-1].suffix == ".none":  # before the first change there was no file
        path.unlink(missing_ok=True)
        new_version = NO_FILE
    else:
        _write_atomically(path, previous)
        new_version = version_of(previous)
    kept[-1].unlink()
    return new_version


def can_undo(folder: Path, date: dt.date) -> bool:
    return bool(_history(editorial_path(folder, date)))


def _apply(document: tomlkit.TOMLDocument, change: Change, shown: list[str]) -> None:
    url = change.url.strip()
    if change.action not in ACTIONS:
        raise EditorialError(f"unknown change {change.action!r}")
    if change.action != "intro" and not url:
        raise EditorialError("the change names no story")
    if change.action == "intro":
        _set_text(document, "intro", change.intro.strip(), MAX_INTRO, "the intro")
    elif change.action == "lead":
        _remove(document, "drop", url)
        _set_order(document, [url] + [u for u in shown if u != url])
    elif change.action in ("up", "down"):
        if url not in shown:
            raise EditorialError(f"{url} is not in the issue")
        order = list(shown)
        at = order.index(url)
        to = max(at - 1, 0) if change.action == "up" else min(at + 1, len(order) - 1)
        order.insert(to, order.pop(at))
        _set_order(document, order)
    elif change.action == "drop":
        for key in ("pin", "order"):
            _remove(document, key, url)
        if document.get("lead") == url:
            del document["lead"]
        _add(document, "drop", url)
    elif change.action == "pin":
        _remove(document, "drop", url)
        _add(document, "pin", url)
    elif change.action == "apart":
        _add(document, "apart", url)
    elif change.action == "together":
        _remove(document, "apart", url)
    elif change.action == "edit":
        _set_override(document, url, change.title.strip(), change.summary.strip())
    elif change.action == "restore":
        _remove_override(document, url)


def _set_order(document: tomlkit.TOMLDocument, order: list[str]) -> None:
    if not order:
        return
    document["lead"] = order[0]
    document["order"] = _array(order[1:])


def _array(values: list[str]) -> tomlkit.items.Array:
    array = tomlkit.array()
    array.extend(values)
    if len(values) > 1:
        array.multiline(True)
    return array


def _add(document: tomlkit.TOMLDocument, key: str, url: str) -> None:
    values = [str(v) for v in document.get(key, [])]
    if url not in values:
        if key in document:
            document[key].append(url)
        else:
            document[key] = _array([url])


def _remove(document: tomlkit.TOMLDocument, key: str, url: str) -> None:
    if key not in document:
        return
    kept = [str(v) for v in document[key] if str(v) != url]
    if len(kept) != len(document[key]):
        document[key] = _array(kept)


def _set_text(document: tomlkit.TOMLDocument, key: str, value: str, limit: int, what: str) -> None:
    if len(value) > limit:
        raise EditorialError(f"{what} is {len(value):,} characters long; keep it under {limit:,}")
    if value:
        document[key] = value
    elif key in document:
        del document[key]


def _set_override(document: tomlkit.TOMLDocument, url: str, title: str, summary: str) -> None:
    for value, limit, what in ((title, MAX_TITLE, "the headline"), (summary, MAX_SUMMARY, "the summary")):
        if len(value) > limit:
            raise EditorialError(f"{what} is {len(value):,} characters long; keep it under {limit:,}")
    if not title and not summary:
        _remove_override(document, url)
        return
    tables = document.setdefault("override", tomlkit.aot())
    entry = next((t for t in tables if t.get("url") == url), None)
    if entry is None:
        entry = tomlkit.table()
        entry["url"] = url
        tables.append(entry)
    for key, value in (("title", title), ("summary", summary)):
        if value:
            entry[key] = value
        elif key in entry:
            del entry[key]


def _remove_override(document: tomlkit.TOMLDocument, url: str) -> None:
    if "override" not in document:
        return
    kept = [t for t in document["override"] if t.get("url") != url]
    if not kept:
        del document["override"]
    elif len(kept) != len(document["override"]):
        tables = tomlkit.aot()
        for table in kept:
            tables.append(table)
        document["override"] = tables


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise EditorialError(f"{path}: cannot read: {exc}") from None


def _history_dir(path: Path) -> Path:
    return path.parent / ".history" / path.stem


def _history(path: Path) -> list[Path]:
    folder = _history_dir(path)
    return sorted(folder.iterdir(), key=lambda p: int(p.stem)) if folder.is_dir() else []


def _keep_history(path: Path, text: str | None) -> None:
    """Keep the version a change replaces: NNN.toml, or NNN.none when there was no file yet."""
    kept = _history(path)
    number = int(kept[-1].stem) + 1 if kept else 1
    folder = _history_dir(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / f"{number:04d}.{'toml' if text is not None else 'none'}", text or "")
    except OSError as exc:
        raise EditorialError(f"{path.parent}: cannot write the editorial folder: {exc.strerror or exc}") from None


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old file or the new one, never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise EditorialError(f"{path}: cannot write: {exc.strerror or exc}") from None
