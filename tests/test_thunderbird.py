"""The sent email as Thunderbird shows it: Debian's Thunderbird under Xvfb, measured from screenshots.

A real send to one reader over a real SMTP server gives the .eml; Thunderbird opens it once in a
message window (a throw-away profile, tests/thunderbird.py) and shows it in each of the three
views of View > Message Body As (original HTML, simple HTML, plain text), switched from that
menu, at a desktop width (1000 px) and a phone width (420 px). No network: the pictures stay blocked, as in a reader's Thunderbird
before they allow remote content. Screenshots go to test-artifacts/thunderbird/. The checks
read ink from the pixels, so each fails when what it checks is broken; the last test shows
them failing on a left-to-right, too-wide copy of the same email.
"""

from __future__ import annotations

import email
import email.policy
import functools
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from PIL import Image, ImageChops

from newsletter.config import PROJECT_DIR, Settings
from newsletter.edition import send_edition
from .ports import free_port
from newsletter.store.database import Status, Store

from .conftest import SAMPLE_DATE, RecordingHandler
from .thunderbird import Thunderbird, View

ARTIFACTS = PROJECT_DIR / "test-artifacts" / "thunderbird"
DESKTOP, PHONE = 1000, 420  # 420: with the toolbars' minimum width lifted (see USER_CHROME); 600 without
HEIGHT = 1000
WIDTHS = (DESKTOP, PHONE)
INK = 60  # luminance difference from the background that counts as ink


# --- the email under test ----------------------------------------------------


@pytest.fixture(scope="module")
def sent_eml(tmp_path_factory) -> Path:
    """The issue exactly as the SMTP server received it from a send to one reader."""
    folder = tmp_path_factory.mktemp("send")
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        settings = Settings(_env_file=None, database_url=f"sqlite:///{folder / 'subscribers.sqlite3'}",
                            smtp_host="127.0.0.1", smtp_port=controller.port, from_address="morning@news.example",
                            base_url="https://news.example", editorial_dir=str(folder / "editorial"),
                            secret_key="tests-only-key-0123456789-abcdefghijklmnop")
        store = Store(settings.database_url)
        try:
            store.add_subscriber("layla@example.com", "ليلى حداد", Status.active)
            assert send_edition(settings, store, SAMPLE_DATE).report.sent == 1
        finally:
            store.close()
    finally:
        controller.stop()
    (received,) = handler.messages
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # screenshots of this run only
    ARTIFACTS.mkdir(parents=True)
    path = ARTIFACTS / "issue.eml"
    path.write_bytes(received.raw)
    return path


def window_title(eml: Path) -> str:
    """A pattern for the message window's title, which is the subject: its first three words."""
    subject = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)["Subject"]
    return re.escape(" ".join(subject.split()[:3]))


# --- what Thunderbird shows ----------------------------------------------------


@dataclass
class Screens:
    """One view at one width: the window at the top of the message and after End."""

    top: Image.Image
    end: Image.Image
    sideways: bool  # the arrow keys moved the message sideways: something is wider than the window

    def __post_init__(self) -> None:
        # The message body is what scrolling moved (the headers above it stay put).
        box = ImageChops.difference(self.top, self.end).convert("L").point(lambda v: 255 if v > 16 else 0).getbbox()
        assert box, "End did not scroll the message: the footer is out of reach or the message fits (it should not)"
        self.rows = box[1], box[3]
        # A classic scrollbar at the right edge (12 px of one grey, its thumb at the bottom after
        # End) is not the message's ink: cut it off.
        y = self.rows[0] + 2
        track = self.end.getpixel((self.end.width - 1, y))
        x = self.end.width - 1
        while x > 0 and self.end.getpixel((x, y)) == track:
            x -= 1
        if 6 <= self.end.width - 1 - x <= 24:
            self.top, self.end = (image.crop((0, 0, x + 1, image.height)) for image in (self.top, self.end))

    def body(self) -> tuple[int, int]:
        """The first and last rows of the message body."""
        return self.rows


def photograph(thunderbird: Thunderbird, eml: Path, views: tuple[View, ...], widths: tuple[int, ...],
               name: str) -> dict[tuple[View, int], Screens]:
    """Open `eml` once; in each view (switched from the View menu) and at each width, photograph
    the top of the message, try the arrow keys, press End."""
    thunderbird.open(eml, views[0], window_title(eml))
    screens = {}
    try:
        for view in views:
            if view is not views[0]:
                before = thunderbird.settled()
                thunderbird.show(view)
                after = thunderbird.settled()
                assert ImageChops.difference(before, after).getbbox(), f"the View menu did not switch to {view.name}"
            for width in widths:
                screens[view, width] = photograph_at(thunderbird, width, f"{name}-{view.name}-{width}")
    finally:
        thunderbird.close()
    return screens


def photograph_at(thunderbird: Thunderbird, width: int, name: str) -> Screens:
    got = thunderbird.size(width, HEIGHT)
    assert got == (width, HEIGHT), f"Thunderbird's window is {got}, not {width}x{HEIGHT}"
    thunderbird.pointer_away()
    thunderbird.key("Home")
    top = thunderbird.settled()
    thunderbird.key("Left", "Left", "Left")
    leftwards = thunderbird.settled()
    thunderbird.key("Right", "Right", "Right", "Right", "Right", "Right")
    rightwards = thunderbird.settled()
    thunderbird.key("End")
    end = thunderbird.settled()
    sideways = any(ImageChops.difference(top, shot).getbbox() for shot in (leftwards, rightwards))
    if sideways:
        leftwards.save(ARTIFACTS / f"{name}-sideways.png")
    top.save(ARTIFACTS / f"{name}-top.png")
    end.save(ARTIFACTS / f"{name}-end.png")
    return Screens(top, end, bool(sideways))


@pytest.fixture(scope="module")
def thunderbird():
    client = Thunderbird(screen=(DESKTOP + 100, HEIGHT))
    yield client
    client.stop()


@pytest.fixture(scope="module")
def shown(thunderbird, sent_eml) -> dict[tuple[View, int], Screens]:
    """The issue in every view at every width, from one start of Thunderbird."""
    return photograph(thunderbird, sent_eml, tuple(View), WIDTHS, "issue")


# --- reading ink -------------------------------------------------------------


@dataclass
class Line:
    """A band of rows with ink, its extent and how much of its box is ink (text ≈ 0.1–0.4, a solid block ≈ 1)."""

    top: int
    bottom: int
    left: int
    right: int
    fill: float
    background: int


def ink_lines(image: Image.Image, top: int, bottom: int) -> list[Line]:
    """Lines of ink between rows top and bottom. The background of a row is the commonest grey in
    the 25 rows around it (a bold Arabic baseline can fill most of one row by itself)."""
    gray = image.convert("L")
    width, data = gray.width, gray.tobytes()
    rows = [data[y * width:(y + 1) * width] for y in range(top, bottom)]
    counts = [Counter(row) for row in rows]
    around = Counter()
    for row in counts[:12]:
        around.update(row)
    lines: list[Line] = []
    current: list[int] | None = None
    for i, row in enumerate(rows):
        if i + 12 < len(rows):
            around.update(counts[i + 12])
        if i - 13 >= 0:
            around.subtract(counts[i - 13])
        background = max(around, key=around.__getitem__)
        ink = row.translate(_ink_table(background))
        pixels = ink.count(1)
        if pixels:
            left, right = ink.find(1), ink.rfind(1)
            if current is None:
                current = [top + i, top + i, left, right, pixels, background]
            else:
                current[1], current[2], current[3] = top + i, min(current[2], left), max(current[3], right)
                current[4] += pixels
        elif current is not None:
            lines.append(_line(current))
            current = None
    if current is not None:
        lines.append(_line(current))
    return lines


@functools.cache
def _ink_table(background: int) -> bytes:
    """bytes.translate table: 1 for a grey that is ink on `background`, 0 for one that is not."""
    return bytes(1 if abs(v - background) > INK else 0 for v in range(256))


def _line(found: list[int]) -> Line:
    top, bottom, left, right, pixels, background = found
    return Line(top, bottom, left, right, pixels / ((bottom - top + 1) * (right - left + 1)), background)


def text_lines(screens: Screens) -> list[Line]:
    """Lines of text in the body, top and end screenshots together; solid blocks (the banner, buttons)
    and rules one or two pixels high are left out."""
    top, bottom = screens.body()
    found = []
    for image in (screens.top, screens.end):
        found += [line for line in ink_lines(image, top, bottom)
                  if line.fill < 0.6 and line.bottom - line.top >= 6 and line.right - line.left >= 12]
    return found


def shared_edge_share(edges: list[int], tolerance: int = 3) -> float:
    """The share of lines whose edge is within `tolerance` px of one of the two commonest edges
    (two: a picture's column beside the text at desktop width has its own edge)."""
    counts = Counter(edges)
    common = []
    for edge, _ in counts.most_common():
        if all(abs(edge - c) > 2 * tolerance for c in common):
            common.append(edge)
        if len(common) == 2:
            break
    # the commonest edge's neighbourhood, not one pixel column: anti-aliasing moves an edge by a pixel
    return sum(1 for e in edges if any(abs(e - c) <= tolerance for c in common)) / len(edges)


def alignment(lines: list[Line]) -> tuple[float, float]:
    """(share of lines sharing a right edge, share sharing a left edge)."""
    return shared_edge_share([line.right for line in lines]), shared_edge_share([line.left for line in lines])


def is_right_aligned(lines: list[Line]) -> bool:
    right, left = alignment(lines)
    return len(lines) >= 10 and right >= 0.7 and right >= left + 0.3


# --- the checks --------------------------------------------------------------

# Not the plain-text view: Thunderbird 153 lays text/plain out left-aligned whatever its script
# (messageBody.css gives .moz-text-plain no `unicode-bidi: plaintext`, its <div> has no dir), so
# no plain text can be right-aligned there; test_plain_text_lines_end_on_their_left checks what
# the right-to-left marks do achieve.
HTML_VIEWS = (View.original_html, View.simple_html)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("view", HTML_VIEWS, ids=lambda v: v.name)
def test_the_body_text_is_right_aligned(shown, view, width):
    lines = text_lines(shown[view, width])

    right, left = alignment(lines)
    assert is_right_aligned(lines), (f"{view.name} at {width} px: {right:.0%} of {len(lines)} lines share a right "
                                     f"edge, {left:.0%} a left edge")


def link_share(image: Image.Image, line: Line) -> float:
    """The share of a line's ink in a link's blue (Thunderbird's #0000ee and its anti-aliasing)."""
    box = (line.left, line.top, line.right + 1, line.bottom + 1)
    ink = image.crop(box).convert("L").tobytes().translate(_ink_table(line.background))
    rgb = image.crop(box).tobytes()
    inked = [i for i, v in enumerate(ink) if v]
    blue = sum(1 for i in inked if rgb[3 * i + 2] - max(rgb[3 * i], rgb[3 * i + 1]) > 80)
    return blue / len(inked) if inked else 0.0


def footer_lines(image: Image.Image, body: tuple[int, int], view: View) -> list[Line]:
    """The footer's lines at the bottom of the body, told by how each view draws them: as sent,
    grey on the page's #eef0f3 below the last white card; simple HTML, a sentence without links
    over a line of two links (wider than one «اقرأ المزيد»); plain text, two labels each over
    its address."""
    lines = [line for line in ink_lines(image, *body) if line.fill < 0.6 and line.bottom - line.top >= 6]
    if view is View.original_html:
        page = [line for line in lines[-2:] if abs(line.background - 239) <= 3]  # #eef0f3's luminance
        return page if len(page) == 2 else []
    if view is View.simple_html:
        if len(lines) < 2:
            return []
        sentence, links = lines[-2:]
        two_links = link_share(image, links) >= 0.6 and links.right - links.left >= 150
        return lines[-2:] if two_links and link_share(image, sentence) < 0.2 else []
    # «النسخة على الإنترنت:», its address, «لإلغاء الاشتراك:», its address; a story ends on one address
    links = [link_share(image, line) >= 0.6 for line in lines[-4:]]
    return lines[-4:] if links == [False, True, False, True] else []


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("view", View, ids=lambda v: v.name)
def test_the_footer_is_on_screen_after_scrolling_to_the_end(shown, view, width):
    screens = shown[view, width]
    body = screens.body()

    footer = footer_lines(screens.end, body, view)

    assert footer, f"{view.name} at {width} px: no footer at the bottom of the window after End"
    assert footer[-1].bottom < body[1] - 1, "the footer's last line is cut off by the window's bottom"
    assert not footer_lines(screens.top, body, view), "the footer was found before scrolling: the check tells nothing"


@pytest.mark.parametrize(("view", "width"), [
    pytest.param(view, width, id=f"{view.name}-{width}") for view in View for width in WIDTHS])
def test_nothing_extends_past_the_window(shown, view, width):
    screens = shown[view, width]

    assert not screens.sideways, f"{view.name} at {width} px: the arrow keys scroll the message sideways"


def line_end_dots(image: Image.Image, top: int, bottom: int) -> tuple[int, int]:
    """(full stops and colons at the left end of their line, at the right end): blobs of ink at
    most 4 px square with no other ink beside them on one side of their line."""
    gray = image.convert("L")
    width, data = gray.width, gray.tobytes()
    table = _ink_table(Counter(data[top * width:bottom * width]).most_common(1)[0][0])
    ink: set[tuple[int, int]] = set()
    rows: dict[int, list[int]] = {}
    for y in range(top, bottom):
        xs = [m.start() for m in re.finditer(b"\x01", data[y * width:(y + 1) * width].translate(table))]
        if xs:
            rows[y] = xs
            ink.update((x, y) for x in xs)
    seen: set[tuple[int, int]] = set()
    left = right = 0
    # a dot at either end of its line holds the first or last ink of its rows
    ends = {(xs[0], y) for y, xs in rows.items()} | {(xs[-1], y) for y, xs in rows.items()}
    for start in ends:
        if start in seen:
            continue
        blob, i = [start], 0
        seen.add(start)
        while i < len(blob) and len(blob) < 40:
            x, y = blob[i]
            i += 1
            for near in ((x + dx, y + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)):
                if near in ink and near not in seen:
                    seen.add(near)
                    blob.append(near)
        xs, ys = [p[0] for p in blob], [p[1] for p in blob]
        if len(blob) < 3 or max(xs) - min(xs) > 3 or max(ys) - min(ys) > 3:
            continue
        # the rest of its line: a full stop sits on the baseline, its letters reach up to ~9 px above
        others = [x for y in range(min(ys) - 9, max(ys) + 3) for x in rows.get(y, ())
                  if not (min(xs) <= x <= max(xs) and min(ys) <= y <= max(ys))]
        if others and max(xs) < min(others) - 1:
            left += 1
        elif others and min(xs) > max(others) + 1:
            right += 1
    return left, right


def reads_right_to_left(screens: Screens) -> tuple[bool, tuple[int, int]]:
    """Thunderbird lays text/plain out left to right and left-aligned whatever its script; the
    right-to-left marks put each Arabic line's full stop or colon at its left end, where an Arabic
    sentence ends. Without them they land at the right end, where it starts."""
    top, bottom = screens.body()
    counts = [line_end_dots(image, top, bottom) for image in (screens.top, screens.end)]
    left, right = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return left >= 5 and left >= 2 * right, (left, right)


@pytest.mark.parametrize("width", WIDTHS)
def test_plain_text_lines_end_on_their_left(shown, width):
    ok, (left, right) = reads_right_to_left(shown[View.plain_text, width])

    assert ok, f"plain text at {width} px: {left} full stops/colons end lines on the left, {right} on the right"


# --- the checks can fail ---------------------------------------------------------


def left_to_right_copy(eml: Path, folder: Path) -> Path:
    """The same message turned left to right and too wide: dir and alignment flipped in the HTML,
    a 1600 px rule added at its top, the right-to-left marks taken out of the text."""
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    html = message.get_body(("html",))
    content = html.get_content()
    for rtl, ltr in (('dir="rtl"', 'dir="ltr"'), ("direction:rtl", "direction:ltr"),
                     ("text-align:right", "text-align:left"), ('align="right"', 'align="left"')):
        content = content.replace(rtl, ltr)
    content = re.sub(r"(<body[^>]*>)", r'\1<div style="width:1600px;height:3px;background:#1f2328"></div>',
                     content, count=1)
    html.set_content(content, subtype="html", charset="utf-8")
    text = message.get_body(("plain",))
    text.set_content(text.get_content().replace("\u200f", ""), charset="utf-8")
    path = folder / "left-to-right.eml"
    path.write_bytes(message.as_bytes())
    return path


def test_a_left_to_right_email_is_caught(thunderbird, sent_eml, tmp_path):
    broken = left_to_right_copy(sent_eml, tmp_path)

    screens = photograph(thunderbird, broken, (View.original_html, View.plain_text), (DESKTOP,), "left-to-right")
    html, text = screens[View.original_html, DESKTOP], screens[View.plain_text, DESKTOP]

    assert not is_right_aligned(text_lines(html)), alignment(text_lines(html))
    assert html.sideways
    assert not reads_right_to_left(text)[0]
