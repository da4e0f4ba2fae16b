"""Turn the selected stories into the issue: subject, preheader, HTML and plain text.

Jinja2 (autoescape on) → MJML → mjml-python → premailer. Runs once per issue;
the unsubscribe link is left as a slot that `message` fills per subscriber.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html as html_escaping
import re
import tomllib
import unicodedata
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import jinja2

from ..errors import EmailTooLargeError, TemplateError
from .editorial import Editorial
from .ranking import Standing
from .selection import Selection
from .subject_line import SUBJECT_LIMIT, cut_at_phrase

# Gmail shows "[Message clipped]" and hides the rest (footer and unsubscribe link included) above
# about 102 KB of HTML; `send` refuses such an issue and `preview` shows its size in red.
GMAIL_CLIP_BYTES = 102 * 1024

# Stands in for the per-subscriber unsubscribe token until `message` splices it
# in. Plain ASCII word characters, so Jinja, MJML and premailer leave it alone.
UNSUBSCRIBE_SLOT = "NLUNSUBSCRIBETOKENSLOT"
# Each story's link (headline, picture, «اقرأ المزيد») is a slot too: `message` fills it per reader
# with a tracked link (/c/<token>) or the outlet's own URL (NEWSLETTER_TRACKING=off); the archive
# and the preview always with the outlet's URL.
LINK_SLOT = re.compile(r"NLLINK(\d\d)SLOT")
SLOTS = re.compile(rf"{UNSUBSCRIBE_SLOT}|NLLINK\d\dSLOT")  # every slot `message` fills, named by its text
# What a filled link may cost at most: a tracked link is the public address, /c/ and a token of
# at most 42 characters. The size check counts each link as this or the outlet's URL, the longer.
TRACKED_LINK_ALLOWANCE = 110


@dataclass(frozen=True)
class IssueStory:
    url: str
    title: str
    summary: str
    sources: list[str]
    image: str | None
    image_alt: str
    follow_up: bool = False  # continues a story an earlier issue told
    standing: Standing | None = None  # what the ranking knew of its event: the desk's leads are learned from it


@dataclass(frozen=True)
class Issue:
    """The data of one morning issue; everything rendered comes from here."""

    date: dt.date
    stories: list[IssueStory]
    intro: str = ""

    def manifest(self) -> list[dict]:
        return [{"url": s.url, "title": s.title, "summary": s.summary, "source": s.sources[0],
                 **({"standing": s.standing.as_json()} if s.standing else {})} for s in self.stories]


@dataclass(frozen=True)
class RenderedIssue:
    date: dt.date
    subject: str
    preheader: str
    html: str
    text: str
    stories: list[dict]

    @cached_property  # size_label and check_size each ask; the slots are found once
    def html_bytes(self) -> int:
        """The HTML's size as a reader receives it: each story link filled with the longer of its forms."""
        size = len(self.html.encode("utf-8"))
        for match in LINK_SLOT.finditer(self.html):
            url = html_escaping.escape(self.story_url(int(match.group(1))))
            size += max(len(url.encode("utf-8")), TRACKED_LINK_ALLOWANCE) - len(match.group(0))
        return size

    def story_url(self, place: int) -> str:
        """The outlet's URL of the story at `place` (1 is the lead); "" for a place the issue does not have."""
        return story_url(self.stories, place)

    def with_outlet_links(self, text: str, escape: bool) -> str:
        """`text` (this issue's HTML or plain text) with every story link straight to its outlet."""
        return with_outlet_links(text, self.stories, escape)

    @property
    def size_label(self) -> str:
        return f"{self.html_bytes / 1024:.1f} KB of HTML, Gmail clips above {GMAIL_CLIP_BYTES // 1024} KB"

    def check_size(self) -> None:
        """Raise EmailTooLargeError when Gmail would clip the issue."""
        if self.html_bytes > GMAIL_CLIP_BYTES:
            raise EmailTooLargeError(self.html_bytes, GMAIL_CLIP_BYTES)


def check_html_size(html: str, template: str) -> None:
    """Raise TemplateError when Gmail would clip this email (a reader's own: no slots to allow for)."""
    size = len(html.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        raise TemplateError(f"{template} makes {size / 1024:.1f} KB of HTML, over Gmail's "
                            f"{GMAIL_CLIP_BYTES // 1024} KB clipping limit; shorten the template")


def story_url(stories: list[dict], place: int) -> str:
    """The outlet's URL of the story at `place` (1 is the lead) of an issue's stories; "" for none."""
    return str(stories[place - 1].get("url", "")) if 1 <= place <= len(stories) else ""


def with_outlet_links(text: str, stories: list[dict], escape: bool) -> str:
    """An issue's HTML (escape=True) or plain text with every story link straight to its outlet."""
    def url(match: re.Match) -> str:
        found = story_url(stories, int(match.group(1)))
        return html_escaping.escape(found) if escape else found
    return LINK_SLOT.sub(url, text)


def html_digest(html: str) -> str:
    """The SHA-256 of an issue's HTML: what an approval names, and what a page's approve form says it showed."""
    return hashlib.sha256(html.encode("utf-8")).hexdigest()


def shared_copy(html: str, stories: list[dict]) -> str:
    """An issue's HTML as anyone may see it (the archive, the desk's frozen issue): story links straight to
    the outlets, and no reader's token: the unsubscribe and manage links go to the pages that ask for an
    address."""
    html = with_outlet_links(html, stories, escape=True)
    return html.replace(f"/unsubscribe/{UNSUBSCRIBE_SLOT}", "/unsubscribe").replace(
        f"/manage/{UNSUBSCRIBE_SLOT}", "/manage")


def issue_from_selection(selection: Selection, date: dt.date, editorial: Editorial | None = None) -> Issue:
    overrides = editorial.overrides if editorial else {}
    stories = []
    for event in selection.events:
        story = event.story
        sources = event.sources
        override = next((overrides[r.url] for r in event.reports if r.url in overrides), None)
        title = override.title if override and override.title else story.title
        summary = override.summary if override and override.summary else story.summary
        stories.append(IssueStory(story.url, title, summary, sources, story.image, story.image_alt or title,
                                  follow_up=event.follow_up_of is not None, standing=event.standing))
    return Issue(date, stories, editorial.intro if editorial else "")


class Renderer:
    """Templates loaded from one folder; editors change the look there, not in code."""

    def __init__(self, templates_dir: Path, base_url: str) -> None:
        self.templates_dir = Path(templates_dir)
        self.base_url = base_url.rstrip("/")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.templates_dir),
            autoescape=jinja2.select_autoescape(enabled_extensions=("mjml.j2", "html.j2"), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
        )
        # The subject is the lead headline cut at a phrase within what a phone's inbox shows; the
        # preheader begins with what the cut left out (subject_line.py).
        self.env.filters["phrase_head"] = lambda text, limit=SUBJECT_LIMIT: cut_at_phrase(text, limit)[0]
        self.env.filters["phrase_rest"] = lambda text, limit=SUBJECT_LIMIT: cut_at_phrase(text, limit)[1]

    @cached_property
    def _locale(self) -> dict:
        path = self.templates_dir / "locale.toml"
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise TemplateError(f"{path}: {exc}") from None

    def date_label(self, date: dt.date) -> str:
        """The date as the newsroom writes it: «الثلاثاء 24 تشرين الثاني/نوفمبر 2026»."""
        weekday = self._locale["weekdays"][date.weekday()]
        month = self._locale["months"][date.month - 1]
        return f"{weekday} {date.day} {month} {date.year}"

    def test_subject(self, subject: str) -> str:
        return f"{self._locale['test_subject_prefix']} {subject}"

    def _render(self, name: str, context: dict) -> str:
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.filename or name}, line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template not found: {self.templates_dir / str(exc)}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{_template_location(exc, self.templates_dir / name)}: {exc}") from None

    def render(self, issue: Issue) -> RenderedIssue:
        if not issue.stories:
            raise TemplateError("an issue needs at least one story")
        stories = [{**asdict(s), "link": link_slot(place)} for place, s in enumerate(issue.stories, start=1)]
        context = {
            "intro": issue.intro,
            "date_label": self.date_label(issue.date),
            "stories": stories,
            "lead": stories[0],
            "view_url": f"{self.base_url}/archive/{issue.date.isoformat()}",
            "unsubscribe_url": f"{self.base_url}/unsubscribe/{UNSUBSCRIBE_SLOT}",
            # The manage page takes the same token as unsubscribing (Tokens.manage_token): no other slot to fill.
            "manage_url": f"{self.base_url}/manage/{UNSUBSCRIBE_SLOT}",
            "signup_url": f"{self.base_url}/",
        }
        context["subject"] = " ".join(self._render("subject.txt.j2", context).split())
        context["preheader"] = " ".join(self._render("preheader.txt.j2", context).split())
        mjml = self._render("issue.mjml.j2", context)
        html = inline_css(compile_mjml(mjml)).rstrip() + "\n"
        text = for_right_to_left(self._render("issue.txt.j2", context).strip()) + "\n"
        return RenderedIssue(issue.date, context["subject"], context["preheader"], html, text, issue.manifest())


    def render_confirmation(self, confirm_url: str, valid_days: int) -> tuple[str, str, str]:
        """The double opt-in email: (subject, html, text)."""
        context = {"confirm_url": confirm_url, "valid_days": valid_days, "signup_url": f"{self.base_url}/"}
        subject = " ".join(self._render("confirm_subject.txt.j2", context).split())
        context["subject"] = subject
        html = inline_css(compile_mjml(self._render("confirm.mjml.j2", context))).rstrip() + "\n"
        text = for_right_to_left(self._render("confirm.txt.j2", context).strip()) + "\n"
        return subject, html, text

    def edition_time_label(self, time: dt.time, timezone: str) -> str:
        """When the issue arrives, as a reader says it: «السابعة صباحًا بتوقيت باريس» (locale.toml)."""
        words = self._locale
        hour, minute = time.hour, time.minute
        if minute == 45:  # «الثامنة إلا ربعًا»: said by the next hour
            hour, tail = (hour + 1) % 24, words["to_quarter"]
        else:
            tail = {0: "", 15: words["quarter"], 30: words["half"]}.get(minute)
        if tail is None:  # 7:05 has no everyday words: the digits, as the issue writes its dates
            clock = f"{hour % 12 or 12}:{minute:02d}"
        else:
            clock = " ".join(filter(None, (words["hours"][(hour % 12 or 12) - 1], tail)))
        city = words.get("zones", {}).get(timezone) or timezone.rpartition("/")[2].replace("_", " ")
        return f"{clock} {words['day_parts'][hour]} بتوقيت {city}"

    def render_welcome(self, edition_label: str, latest_issue_url: str, unsubscribe_url: str,
                       manage_url: str = "") -> tuple[str, str, str]:
        """The email a reader gets once confirmed: (subject, html, text). The issue's size limit applies."""
        context = {"edition_label": edition_label, "latest_issue_url": latest_issue_url,
                   "unsubscribe_url": unsubscribe_url, "manage_url": manage_url,
                   "archive_url": f"{self.base_url}/archive", "signup_url": f"{self.base_url}/"}
        subject = " ".join(self._render("welcome_subject.txt.j2", context).split())
        context["subject"] = subject
        html = inline_css(compile_mjml(self._render("welcome.mjml.j2", context))).rstrip() + "\n"
        text = for_right_to_left(self._render("welcome.txt.j2", context).strip()) + "\n"
        check_html_size(html, str(self.templates_dir / "welcome.mjml.j2"))
        return subject, html, text

    def render_page(self, name: str, **context: object) -> str:
        """A web page from templates/pages/ (signup, confirm, unsubscribe, archive)."""
        return self._render(f"pages/{name}.html.j2", {"base_url": self.base_url, "email": "", "error": "", **context})


RLM = "\u200f"  # RIGHT-TO-LEFT MARK
_ARABIC_LETTER = re.compile(r"[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")
_ENDS_WITH_LINK = re.compile(r"(https?://\S+|NLLINK\d\dSLOT|NLUNSUBSCRIBETOKENSLOT)\s*$")


def for_right_to_left(text: str) -> str:
    """A plain-text part laid out for Arabic readers in clients that show plain text left to right.

    Most plain-text viewers (Thunderbird's among them) start every line left to right: the final
    full stop lands at the start of an Arabic line, «1.» at the far side. A right-to-left mark at
    the start of each Arabic line, and at its end unless a link ends it (the mark would become part
    of the link), puts numbers and punctuation where an Arabic reader expects them.
    """
    lines = []
    for line in text.split("\n"):
        if _ARABIC_LETTER.search(line):
            line = RLM + line + ("" if _ENDS_WITH_LINK.search(line) else RLM)
        lines.append(line)
    return "\n".join(lines)


def link_slot(place: int) -> str:
    """The slot standing for the link of the story at `place` (1 is the lead)."""
    return f"NLLINK{place:02d}SLOT"


def _template_location(exc: BaseException, fallback: Path) -> str:
    """file, line of the template frame where a render error happened (Jinja keeps them in the traceback)."""
    location = str(fallback)
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            location = f"{filename}, line {tb.tb_lineno}"
        tb = tb.tb_next
    return location


# mjml-python and premailer (with cssutils) are imported when an issue is rendered, not when the
# module is: a send whose issue is already frozen (a second sender, a re-run from cron) never
# renders, and starts ~0.3 s of CPU sooner without them.

def compile_mjml(source: str) -> str:
    from mjml import mjml2html

    try:
        return restore_marks(mjml2html(source, disable_comments=True))
    except Exception as exc:  # mjml-python raises its own untyped errors
        raise TemplateError(f"MJML could not be compiled: {exc}") from None


# mjml-python (1.4.2) writes attribute values with Rust's escape_debug: every combining mark as
# escape text (an alt of «تصعّد» comes out «تصع\u{651}د», which readers whose client blocks images
# see, and screen readers read out), a backslash doubled, a tab as \t. Text nodes are untouched.
# The escapes are undone inside attribute values only (in MJML's output those are always "…").
_ATTRIBUTE_VALUE = re.compile(r'="([^"]*\\[^"]*)"')
_RUST_ESCAPE = re.compile(r"""\\(?:u\{([0-9a-fA-F]{1,6})\}|([\\'"tnr0]))""")
# Control characters have no place in an attribute: a tab or line break becomes a space, the rest go.
_SIMPLE_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "t": " ", "n": " ", "r": " ", "0": ""}


def restore_marks(html: str) -> str:
    """`html` with mjml-python's escape text in attribute values turned back into the characters."""
    def unescape(match: re.Match) -> str:
        if match.group(1):
            code = int(match.group(1), 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                return match.group(0)
            return "" if unicodedata.category(chr(code)) == "Cc" else chr(code)
        return _SIMPLE_ESCAPES[match.group(2)]

    return _ATTRIBUTE_VALUE.sub(lambda m: '="' + _RUST_ESCAPE.sub(unescape, m.group(1)) + '"', html)


# MJML's own reset (`table, td { border-collapse … }`, `img { … }`) belongs in <head>, where clients
# that keep <style> read it; inlined, premailer copies it onto every table and cell (~8 KB an issue).
_MJML_RESET = '<style type="text/css">\n#outlook a'

# Wrappers in the templates (mj-wrapper css-class) that are the email's landmarks: screen readers
# jump between them, and axe-core's `region` rule wants all content inside one.
LANDMARKS = {"nl-banner": "banner", "nl-main": "main", "nl-contentinfo": "contentinfo"}


def inline_css(html: str) -> str:
    """Inline the template's own classes into style attributes, keeping MJML's reset and media queries in <style>.

    The doctype stays (without it clients render in quirks mode), and so do MJML's width and height
    attributes: premailer would otherwise rewrite `<img width="600">` from the CSS as `width="100%"`,
    and Outlook for Windows sizes an image from its attribute, in pixels, or else from the file.
    """
    from premailer import Premailer

    html = html.replace(_MJML_RESET, _MJML_RESET.replace("<style ", '<style data-premailer="ignore" ', 1), 1)
    html = html.replace(' height="auto"', "")  # MJML's, on images: not an HTML value (CSS height:auto stays)
    for css_class, role in LANDMARKS.items():
        html = html.replace(f'<div class="{css_class}" ', f'<div class="{css_class}" role="{role}" ', 1)
    return Premailer(
        html,
        keep_style_tags=False,
        remove_classes=False,
        strip_important=False,
        disable_validation=True,
        disable_basic_attributes=["width", "height"],
        cssutils_logging_level="CRITICAL",
        allow_network=False,
    ).transform(pretty_print=False, doctype="<!doctype html>")
