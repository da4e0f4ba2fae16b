"""The editor's hand on one day's issue: `editorial/YYYY-MM-DD.toml`.

    intro = "افتتاحية قصيرة تظهر أعلى الرسالة"
    lead = "https://…"              # this story opens the issue
    order = ["https://…", "https://…"]  # these come first, in this order
    pin = ["https://…"]             # in the issue whatever the ranking says
    drop = ["https://…"]            # never in this issue
    apart = ["https://…"]           # not the story it was grouped with: together, another one

    [[override]]
    url = "https://…"
    title = "عنوان معدّل"
    summary = "ملخص معدّل"

Every URL must be a story some feed offered that day. `preview`, `render` and
`send` all apply it; a broken file stops them with its file and line.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NewsletterError
from .feeds import Story, without_tracking
from .selection import Dropped, Event, Selection, tell_apart

KNOWN_KEYS = {"intro", "lead", "order", "pin", "drop", "apart", "override"}
PINNED = "pinned by the editor"


class EditorialError(NewsletterError):
    """The day's editorial file is broken; the issue must not go out built from it."""


@dataclass(frozen=True)
class Override:
    title: str | None = None
    summary: str | None = None


@dataclass
class Editorial:
    path: Path
    intro: str = ""
    lead: str | None = None
    order: list[str] = field(default_factory=list)
    pin: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    apart: list[str] = field(default_factory=list)
    overrides: dict[str, Override] = field(default_factory=dict)

    source: str = ""

    def line_of(self, text: str) -> int:
        """The line where `text` first appears in the file (TOML parsers give no positions)."""
        source = self.source
        index = source.find(text)
        return source.count("\n", 0, index) + 1 if index >= 0 else 1

    def error(self, message: str, near: str = "") -> EditorialError:
        return EditorialError(f"{self.path}:{self.line_of(near) if near else 1}: {message}")

    def referenced_urls(self) -> list[str]:
        return [u for u in [self.lead, *self.order, *self.pin, *self.drop, *self.apart, *self.overrides] if u]


def editorial_path(folder: Path, date: dt.date) -> Path:
    return Path(folder) / f"{date.isoformat()}.toml"


def _string_list(editorial: Editorial, data: dict, key: str) -> list[str]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise editorial.error(f"`{key}` must be a list of story URLs", near=f"{key}")
    return [without_tracking(v.strip()) for v in value]


def load_editorial(folder: Path, date: dt.date) -> Editorial | None:
    """The editorial file for `date`, or None when there is none."""
    path = editorial_path(folder, date)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise EditorialError(f"{path}: cannot read: {exc}") from None
    return parse_editorial(path, text)


def parse_editorial(path: Path, text: str) -> Editorial:
    """An editorial file's text, checked: EditorialError with `path:line` for what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise EditorialError(f"{path}:{match.group(1) if match else 1}: invalid TOML: {exc}") from None
    editorial = Editorial(path, source=text)
    for key in data:
        if key not in KNOWN_KEYS:
            raise editorial.error(f"unknown key `{key}` (known: {', '.join(sorted(KNOWN_KEYS))})", near=key)
    for key in ("intro", "lead"):
        if key in data and not isinstance(data[key], str):
            raise editorial.error(f"`{key}` must be text", near=key)
    editorial.intro = data.get("intro", "").strip()
    editorial.lead = without_tracking(data.get("lead", "").strip()) or None
    editorial.order = _string_list(editorial, data, "order")
    editorial.pin = _string_list(editorial, data, "pin")
    editorial.drop = _string_list(editorial, data, "drop")
    editorial.apart = _string_list(editorial, data, "apart")
    overrides = data.get("override", [])
    if not isinstance(overrides, list):
        raise editorial.error("write overrides as [[override]] tables", near="override")
    for entry in overrides:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url.strip():
            raise editorial.error("each [[override]] needs a `url`", near="[[override]]")
        if "title" not in entry and "summary" not in entry:
            raise editorial.error("an [[override]] changes `title`, `summary` or both", near=url)
        for key in ("title", "summary"):
            # A blank headline would go out as the subject: an empty one.
            if key in entry and not (isinstance(entry[key], str) and entry[key].strip()):
                raise editorial.error(f"the [[override]]'s `{key}` must be text, not empty", near=url)
        editorial.overrides[without_tracking(url.strip())] = Override(entry.get("title"), entry.get("summary"))
    conflict = set(editorial.drop) & ({editorial.lead} | set(editorial.pin) | set(editorial.order))
    if conflict:
        url = sorted(conflict)[0]
        raise editorial.error(f"{url} is both dropped and kept", near=url)
    return editorial


def check_pin_count(editorial: Editorial, max_stories: int) -> None:
    """An issue holds at most NEWSLETTER_MAX_STORIES stories: more pins than that cannot all be in it."""
    if len(editorial.pin) > max_stories:
        raise editorial.error(f"{len(editorial.pin)} stories pinned, more than NEWSLETTER_MAX_STORIES={max_stories}: "
                              "unpin some, or raise the setting", near=editorial.pin[max_stories])


def _event_with(events: list[Event], url: str) -> Event | None:
    """The event holding the report at `url`; that report is the one the issue shows."""
    event = next((e for e in events if any(r.url == url for r in e.reports)), None)
    if event is not None:
        event.chosen = next(r for r in event.reports if r.url == url)
    return event


def apply_editorial(selection: Selection, offered: list[Story], editorial: Editorial,
                    max_stories: int) -> Selection:
    """The selection as the editor wants it: stories told apart, drops, pins, lead, order."""
    by_url = {s.url: s for s in offered}
    for url in editorial.referenced_urls():
        if url not in by_url:
            raise editorial.error(f"unknown story URL {url}: no feed offers it today", near=url)
    check_pin_count(editorial, max_stories)
    events = list(selection.events)
    dropped = list(selection.dropped)

    told_apart = {}  # id(the story told apart) -> the event it was taken from
    for at, event in reversed(list(enumerate(events))):
        if (split := tell_apart(event, editorial.apart, selection.sent, selection.compared)) is not None:
            events[at:at + 1] = split
            told_apart[id(split[1])] = split[0]
    for url in editorial.drop:
        event = _event_with(events, url)
        if event is not None:
            events.remove(event)
            dropped.extend(Dropped(r, "dropped by the editor") for r in event.reports)
    for url in editorial.pin:
        event = _event_with(events, url)
        if event is None:
            event = Event([by_url[url]])
            events.append(event)
            dropped = [d for d in dropped if d.story.url != url]
        event.editor_note = PINNED

    wanted = [u for u in ([editorial.lead] if editorial.lead else []) + editorial.order]
    placed = list(dict.fromkeys(e for u in wanted if (e := _event_with(events, u)) is not None))
    ordered = placed + [e for e in events if e not in placed and id(e) not in told_apart]
    for event in [e for e in events if id(e) in told_apart and e not in placed]:
        origin = told_apart[id(event)]  # right after the story it was taken from, wherever that is now
        ordered.insert(ordered.index(origin) + 1 if origin in ordered else len(ordered), event)
    # Over the limit (pins, stories told apart): the least covered story goes, never a pinned or placed
    # one, nor the lead; a story the editor told apart only when no other is left to go.
    while len(ordered) > max_stories:
        spare = [e for e in ordered[1:] if e.editor_note != PINNED and e not in placed]
        if not spare:
            break  # only pins and placed stories left (pins at most the limit: check_pin_count)
        victim = max(spare, key=lambda e: (id(e) not in told_apart, selection.ranking.coverage_key(e.standing),
                                           ordered.index(e)))
        ordered.remove(victim)
        dropped.extend(Dropped(r, f"over the limit of {max_stories} stories (after the editor's changes)")
                       for r in victim.reports)
    for event in ordered:
        event.lead_candidate = False
        if event in placed and not event.editor_note:
            event.editor_note = "placed by the editor"
    if ordered:
        ordered[0].lead_candidate = True
    return Selection(ordered, dropped, selection.window_start, selection.window_end, selection.ranking,
                     selection.sent, selection.compared)
