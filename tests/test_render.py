"""Rendering the issue: Renderer and issue_from_selection.

HTML is checked by parsing it with lxml.html, the way a mail client would
see it, not by matching strings in the markup.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import replace
from urllib.parse import unquote

import lxml.html
import pytest

from newsletter.issue import render
from newsletter.config import MAX_STORIES_LIMIT, PROJECT_DIR, SAMPLE_FEEDS_DIR, Settings
from newsletter.errors import EmailTooLargeError, TemplateError
from newsletter.issue.feeds import read_feeds
from newsletter.issue.render import Issue, IssueStory, RenderedIssue, Renderer, issue_from_selection
from newsletter.issue.selection import select_stories
from newsletter.issue.subject_line import SUBJECT_LIMIT

TEMPLATES = PROJECT_DIR / "templates"
BASE_URL = "https://news.example"
SAMPLE_DATE = dt.date(2017, 5, 9)
SAMPLE_WINDOW_END = dt.datetime(2017, 5, 9, 5, 0, tzinfo=dt.timezone.utc)

RLM = "\u200f"


def flat(text: str) -> str:
    """A plain-text part as one line of words, without its direction marks."""
    return " ".join(text.replace(RLM, "").split())


HOSTILE_HEADLINE = 'بيان "عاجل" من الوزارة & <script>alert(1)</script> ردود <b>غاضبة</b> it\'s'


# --- helpers ---------------------------------------------------------------


def renderer(templates_dir=TEMPLATES) -> Renderer:
    return Renderer(templates_dir, BASE_URL)


def parse_html(rendered: RenderedIssue) -> lxml.html.HtmlElement:
    """The HTML as the archive shows it (and readers get it with tracking off): links straight to the outlets."""
    return lxml.html.document_fromstring(rendered.with_outlet_links(rendered.html, escape=True))


def same_url(href: str | None, url: str) -> bool:
    """lxml percent-encodes non-ASCII in href; the target is the same."""
    return href is not None and unquote(href) == unquote(url)


def links_to(tree, url: str) -> list:
    return [a for a in tree.iter("a") if same_url(a.get("href"), url)]


def story(n: int, **fields) -> IssueStory:
    values = {
        "url": f"https://news.example/world/2017/05/09/{n}",
        "title": f"الخبر رقم {n}: عنوان قصير",
        "summary": f"ملخص الخبر رقم {n}.",
        "sources": ["وكالة أ"],
        "image": None,
        "image_alt": "",
    }
    return IssueStory(**{**values, **fields})


def render_stories(*stories: IssueStory, templates_dir=TEMPLATES) -> RenderedIssue:
    return renderer(templates_dir).render(Issue(SAMPLE_DATE, list(stories)))


@pytest.fixture(scope="module")
def sample_issue() -> Issue:
    feeds = sorted(str(p) for p in SAMPLE_FEEDS_DIR.iterdir() if p.suffix in {".xml", ".atom"})
    batch = read_feeds(feeds)
    assert batch.failures == []
    selection = select_stories(
        batch.stories,
        window_end=SAMPLE_WINDOW_END,
        sections=Settings(_env_file=None).sections,
        max_stories=6,
    )
    return issue_from_selection(selection, SAMPLE_DATE)


@pytest.fixture(scope="module")
def sample_rendered(sample_issue) -> RenderedIssue:
    return renderer().render(sample_issue)


# --- issue_from_selection --------------------------------------------------


def test_issue_from_selection_keeps_the_chosen_report_and_its_outlets(sample_issue):
    lead = sample_issue.stories[0]

    assert len(sample_issue.stories) == 6
    assert lead.title == "التحالف الدولي يجتمع في كوبنهاغن لبحث المرحلة المقبلة من الحرب على تنظيم الدولة الإسلامية"
    assert lead.url == "https://sabah-dawli.example/world/middle-east/2017/05/09/48219-coalition-copenhagen-meeting-islamic-state"
    assert lead.image and lead.image.startswith("https://sabah-dawli.example/")
    assert lead.sources[0] == "الصباح الدولي"  # the shown report's outlet comes first
    assert sorted(lead.sources) == sorted(["فرانس 24 - دولي", "الصباح الدولي", "صوت العالم", "المرصد - أخبار العالم"])
    assert not lead.follow_up
    assert sample_issue.manifest()[0] == {"url": lead.url, "title": lead.title, "summary": lead.summary,
                                          "source": "الصباح الدولي", "standing": lead.standing.as_json()}
    # What the desk's leads are learned from: the event's coverage, not only the report shown.
    assert lead.standing.outlets == 4 and lead.standing.best_position == 1


# --- the HTML part ---------------------------------------------------------


@pytest.mark.parametrize(
    ("date", "label"),
    [
        (dt.date(2026, 11, 24), "الثلاثاء 24 تشرين الثاني/نوفمبر 2026"),
        (dt.date(2017, 5, 9), "الثلاثاء 9 أيار/مايو 2017"),
        (dt.date(2026, 1, 5), "الإثنين 5 كانون الثاني/يناير 2026"),
        (dt.date(2026, 12, 27), "الأحد 27 كانون الأول/ديسمبر 2026"),
        (dt.date(2024, 2, 29), "الخميس 29 شباط/فبراير 2024"),
    ],
)
def test_date_label_in_arabic(date, label):
    assert renderer().date_label(date) == label


def test_html_is_arabic_right_to_left_and_responsive(sample_rendered):
    tree = parse_html(sample_rendered)

    assert tree.tag == "html"
    assert tree.get("lang") == "ar"
    assert tree.get("dir") == "rtl"
    viewports = tree.xpath("//meta[@name='viewport']")
    assert viewports and "width=device-width" in viewports[0].get("content")
    styles = [s.text_content() for s in tree.iter("style")]
    # the template's own mobile rule survived CSS inlining (premailer)
    assert any("@media" in css and ".lead-headline" in css and "max-width: 479px" in css for css in styles)


def test_html_shows_the_preheader_and_the_arabic_date(sample_rendered, sample_issue):
    tree = parse_html(sample_rendered)

    assert sample_issue.stories[1].title[:30] in sample_rendered.preheader, "the preheader names the next story"
    hidden = [d.text_content().strip() for d in tree.xpath("//div[contains(@style, 'display:none')]")]
    assert sample_rendered.preheader in hidden
    assert "الثلاثاء 9 أيار/مايو 2017" in tree.text_content()


def test_every_story_has_its_headline_and_a_read_more_link(sample_issue, sample_rendered):
    tree = parse_html(sample_rendered)

    for item in sample_issue.stories:
        links = links_to(tree, item.url)
        texts = [a.text_content().strip() for a in links]
        assert item.title in texts, f"no headline link for {item.url}"
        assert "اقرأ المزيد" in texts, f"no «اقرأ المزيد» link for {item.url}"


def test_footer_links_to_the_archive_and_the_unsubscribe_slot(sample_rendered):
    tree = parse_html(sample_rendered)
    hrefs = [a.get("href") for a in tree.iter("a")]

    assert f"{BASE_URL}/archive/2017-05-09" in hrefs
    assert f"{BASE_URL}/unsubscribe/{render.UNSUBSCRIBE_SLOT}" in hrefs
    assert f"{BASE_URL}/manage/{render.UNSUBSCRIBE_SLOT}" in hrefs, "the reader's manage page, by the same token"


def test_every_image_has_alt_text(sample_rendered):
    images = list(parse_html(sample_rendered).iter("img"))

    assert images, "the sample issue has pictures"
    for img in images:
        assert (img.get("alt") or "").strip(), lxml.html.tostring(img)


def test_image_without_its_own_alt_falls_back_to_the_title():
    rendered = render_stories(
        story(1, image="https://img.example/1.jpg", image_alt=""),
        story(2, image="https://img.example/2.jpg", image_alt=""),
    )

    alts = [img.get("alt") for img in parse_html(rendered).iter("img")]
    assert alts == [story(1).title, story(2).title]


# --- what mail clients need (issue 12) -------------------------------------


def style_of(element) -> dict[str, str]:
    """The inline style attribute as {property: value}."""
    pairs = (d.split(":", 1) for d in (element.get("style") or "").split(";") if ":" in d)
    return {k.strip().lower(): v.strip().lower() for k, v in pairs}


def relative_luminance(hex_colour: str) -> float:
    channels = [int(hex_colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.fixture(scope="module")
def pictured() -> RenderedIssue:
    return render_stories(*(story(n, image=f"https://img.example/{n}.jpg", follow_up=n == 2) for n in range(1, 4)))


def test_the_doctype_survives_css_inlining(pictured):
    # without it the email renders in quirks mode
    assert pictured.html.lower().startswith("<!doctype html>")
    assert renderer().render_confirmation("https://news.example/confirm/x", 7)[1].lower().startswith("<!doctype html>")


def test_images_keep_mjml_pixel_widths_and_secondary_images_go_fluid_on_phones(pictured):
    tree = lxml.html.document_fromstring(pictured.html)
    images = list(tree.iter("img"))

    # Outlook for Windows sizes an image from its width attribute (pixels), not from CSS
    # the lead: 600 px less 24 px each side; the others: 204 px columns less 24 px padding
    assert [img.get("width") for img in images] == ["552", "180", "180"]
    for img in images[1:]:
        cell = img.xpath("ancestor::td[1]")[0]
        assert "mj-full-width-mobile" in cell.get("class", ""), "secondary pictures fill the column on phones"


def test_the_preheader_is_not_low_contrast_and_is_padded(pictured):
    tree = lxml.html.document_fromstring(pictured.html)
    hidden = tree.xpath("//div[contains(@style, 'display:none')]")
    preheader = next(d for d in hidden if d.text_content().strip() == pictured.preheader)
    padding = preheader.getnext()

    # SpamAssassin's HTML_FONT_LOW_CONTRAST: hidden text as light as the background
    assert contrast(style_of(preheader)["color"], "#eef0f3") >= 4.5
    assert padding is not None and "display:none" in padding.get("style", "").replace(" ", "")
    assert padding.text_content().count("\u200c\u00a0") >= 80  # the snippet stops here, before the masthead
    assert "اقرأ" not in padding.text_content()


def test_headings_and_landmarks(pictured):
    tree = lxml.html.document_fromstring(pictured.html)

    assert [h.text_content().strip() for h in tree.iter("h1")] == ["الرسالة الإخبارية"]
    assert [h.text_content().strip() for h in tree.iter("h2")] == [story(n).title for n in range(1, 4)]
    mains = tree.xpath("//*[@role='main']")
    assert len(mains) == 1
    assert {a.text_content().strip() for a in mains[0].iter("a")} >= {story(n).title for n in range(1, 4)}
    assert len(tree.xpath("//*[@role='banner']//h1")) == 1
    assert tree.xpath("//*[@role='contentinfo']//a[contains(@href, '/unsubscribe/')]")


def test_dark_mode_and_apple_metas(pictured):
    tree = lxml.html.document_fromstring(pictured.html)
    metas = {m.get("name"): m.get("content") for m in tree.iter("meta") if m.get("name")}
    css = " ".join(s.text_content() for s in tree.iter("style"))

    assert metas["color-scheme"] == "light dark"
    assert metas["supported-color-schemes"] == "light dark"
    assert "x-apple-disable-message-reformatting" in metas
    assert "prefers-color-scheme: dark" in css


def test_footer_text_is_at_least_14px_and_the_source_line_is_grey(pictured):
    tree = lxml.html.document_fromstring(pictured.html)
    footer = tree.xpath("//*[@role='contentinfo']//td[contains(@class, 'footer')]/div")
    meta = tree.xpath("//td[contains(@class, 'meta')]/div")

    assert footer and all(int(style_of(d)["font-size"].rstrip("px")) >= 14 for d in footer)
    assert meta and all(style_of(d)["color"] == "#5b636e" for d in meta)
    assert any("متابعة" in d.text_content() for d in meta)  # story 2 continues an earlier one


def test_links_are_tap_targets_and_text_is_readable_in_light_mode(pictured):
    tree = lxml.html.document_fromstring(pictured.html)

    for a in tree.iter("a"):
        style = style_of(a)
        if a.xpath(".//img") or "padding" in style:
            continue  # pictures and the button are large
        assert style.get("display") == "inline-block" and style.get("min-height") == "24px", lxml.html.tostring(a)
    for div in tree.xpath("//*[contains(@class, 'card')]//div[contains(@style, 'color')]"):
        assert contrast(style_of(div)["color"], "#ffffff") >= 4.5, lxml.html.tostring(div)[:200]


def test_mjml_reset_is_not_copied_onto_every_cell(pictured):
    # premailer used to inline `table, td { border-collapse; mso-table-* }` onto ~120 elements
    assert pictured.html.count("mso-table-lspace") == 1  # the <style> in <head> only


# --- untrusted text --------------------------------------------------------


def test_hostile_headline_is_escaped_text_in_html_and_verbatim_in_plain_text():
    hostile = story(
        1,
        title=HOSTILE_HEADLINE,
        summary=f"الملخص: {HOSTILE_HEADLINE}",
        image="https://img.example/1.jpg",
        image_alt=HOSTILE_HEADLINE,
    )
    rendered = render_stories(hostile, story(2, title=HOSTILE_HEADLINE, url="https://news.example/2"))
    tree = parse_html(rendered)

    assert tree.xpath("//script") == []
    assert tree.xpath("//b") == []  # no markup from the feed made it in
    headline_texts = [a.text_content() for a in links_to(tree, hostile.url)]
    assert HOSTILE_HEADLINE in headline_texts
    assert [img.get("alt") for img in tree.iter("img")] == [HOSTILE_HEADLINE]
    assert f"الملخص: {HOSTILE_HEADLINE}" in tree.text_content()
    assert f"{RLM}1. {HOSTILE_HEADLINE}{RLM}\n" in rendered.text
    assert f"{RLM}2. {HOSTILE_HEADLINE}{RLM}\n" in rendered.text
    assert rendered.subject == 'بيان "عاجل" من الوزارة &…', "cut within a phone's line, verbatim"
    assert rendered.preheader.startswith("…<script>alert(1)</script> ردود <b>غاضبة</b> it's"), "the rest, verbatim"


@pytest.mark.parametrize(
    "url",
    [
        'https://news.example/world/x"onmouseover="alert(1)',
        'https://news.example/q?a=1&b="><script>alert(1)</script>',
        "https://news.example/it's\"both' onclick='alert(1)",
    ],
)
def test_url_with_a_quote_cannot_break_out_of_the_href(url):
    rendered = render_stories(story(1, url=url, image="https://img.example/1.jpg"), story(2, url=url))
    tree = parse_html(rendered)

    assert tree.xpath("//script") == []
    assert tree.xpath("//*[@onmouseover or @onclick]") == []
    story_links = [a for a in tree.iter("a") if not any(p in a.get("href") for p in ("/archive/", "/unsubscribe/", "/manage/"))]
    assert len(story_links) == 5  # lead: picture, headline, button; second story: headline, «اقرأ المزيد»
    for a in story_links:
        assert same_url(a.get("href"), url), a.get("href")


# --- size ------------------------------------------------------------------


def long_story(n: int) -> IssueStory:
    title = (
        "التحالف الدولي يجتمع في كوبنهاغن لبحث المرحلة المقبلة من الحرب على تنظيم الدولة الإسلامية "
        "بعد خسارته معظم مدينة الموصل وتضييق الخناق عليه في الرقة"
    )
    summary = (
        "يلتقي وزراء ومسؤولون عسكريون من 15 دولة في التحالف الدولي بقيادة الولايات المتحدة اليوم الثلاثاء "
        "في العاصمة الدنماركية، لتقييم سير العمليات ضد تنظيم الدولة الإسلامية بعد خسارته معظم الموصل. "
    ) * 6
    return story(
        n,
        url=f"https://news.example/world/middle-east/2017/05/09/{n:05d}-coalition-copenhagen-meeting-islamic-state",
        title=f"{n}. {title}",
        summary=summary,
        sources=["فرانس 24 - دولي", "الصباح الدولي", "صوت العالم", "المرصد - أخبار العالم"],
        image=f"https://news.example/media/2017/05/09/{n:05d}-mattis-copenhagen-arrival.jpg",
        image_alt=f"الصورة {n}: {title}",
    )


def test_the_most_stories_settings_allow_stay_under_gmails_clipping_limit():
    intro = "صباح الخير. " * 40  # an editor's intro of ~500 characters
    stories = [long_story(n) for n in range(1, MAX_STORIES_LIMIT + 1)]

    rendered = renderer().render(Issue(SAMPLE_DATE, stories, intro))

    assert len(list(parse_html(rendered).iter("img"))) == MAX_STORIES_LIMIT
    assert rendered.html_bytes < render.GMAIL_CLIP_BYTES, rendered.size_label
    rendered.check_size()
    with pytest.raises(ValueError):
        Settings(_env_file=None, max_stories=MAX_STORIES_LIMIT + 1)


def test_an_issue_over_the_limit_is_refused_with_its_size_and_the_limit():
    rendered = render_stories(*(long_story(n) for n in range(1, 16)))

    with pytest.raises(EmailTooLargeError) as caught:
        rendered.check_size()

    message = str(caught.value)
    assert f"{rendered.html_bytes / 1024:.1f} KB" in message and "102 KB" in message and "\n" not in message
    assert caught.value.exit_code == 65


# --- the plain-text part ---------------------------------------------------


def test_plain_text_lists_every_title_and_url_in_order(sample_issue, sample_rendered):
    text = sample_rendered.with_outlet_links(sample_rendered.text, escape=False)

    positions = []
    for item in sample_issue.stories:
        assert item.title in flat(text), "wrapped between words, never inside one"
        assert f"{RLM}اقرأ المزيد:{RLM}\n{item.url}\n" in text, "the link on a line of its own, unbroken"
        positions += [flat(text).index(item.title), flat(text).index(item.url)]
    assert positions == sorted(positions)
    numbered = re.findall(r"^\u200f(\d+)\. ", text, flags=re.MULTILINE)
    assert numbered == [str(n) for n in range(1, len(sample_issue.stories) + 1)]


def test_plain_text_is_built_from_data_not_html(sample_issue):
    # the marsad headline with a real ampersand and quotes, shown in place of the lead's
    marsad = '"مناطق تخفيف التصعيد" في سوريا: أسئلة & أجوبة'
    issue = replace(sample_issue, stories=[replace(sample_issue.stories[0], title=marsad), *sample_issue.stories[1:]])
    rendered = renderer().render(issue)
    text = rendered.with_outlet_links(rendered.text, escape=False)

    assert re.search(r"</?[a-zA-Z!][^>]*>", text) is None
    assert not re.search(r"&(amp|quot|lt|gt|#\d+|#x[0-9a-f]+);", text)
    assert marsad in text
    assert "الثلاثاء 9 أيار/مايو 2017" in text


def test_plain_text_has_the_unsubscribe_slot_and_archive_link(sample_rendered):
    text = sample_rendered.with_outlet_links(sample_rendered.text, escape=False)

    assert f"{BASE_URL}/unsubscribe/{render.UNSUBSCRIBE_SLOT}" in text
    assert f"{BASE_URL}/archive/2017-05-09" in text


# --- template errors -------------------------------------------------------


@pytest.mark.parametrize("name", ["issue.mjml.j2", "issue.txt.j2", "subject.txt.j2", "preheader.txt.j2"])
def test_template_syntax_error_names_the_file_and_line(tmp_path, name):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    path = templates / name
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    broken_line = len(lines) // 2 + 1  # 1-based
    lines.insert(broken_line - 1, "{% if %}\n")
    path.write_text("".join(lines), encoding="utf-8")

    with pytest.raises(TemplateError) as caught:
        render_stories(story(1), templates_dir=templates)

    message = str(caught.value)
    assert name in message
    assert f"line {broken_line}" in message
    assert "\n" not in message


def test_original_templates_render_after_a_broken_copy(tmp_path):
    # breaking a copy must not affect the real templates (nothing is cached across folders)
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    (templates / "subject.txt.j2").write_text("{{ lead.title | }}", encoding="utf-8")
    with pytest.raises(TemplateError):
        render_stories(story(1), templates_dir=templates)

    assert render_stories(story(1)).subject.endswith(story(1).title)


ARABIC_MARKS = "".join(chr(c) for c in range(0x064B, 0x0660)) + "\u0670"  # tanwin … sukun, shadda, superscript alef


def test_every_arabic_mark_stays_a_character_in_every_attribute_and_part():
    headline = "المعارضة تصعّد " + "ب".join(ARABIC_MARKS) + " الكتابة \\u{41} كما هي"
    summary = "ملخّص: " + "ت".join(ARABIC_MARKS)
    rendered = renderer().render(Issue(SAMPLE_DATE, [
        story(1, title=headline, summary=summary, image="https://news.example/a.jpg"),
        story(2, title=headline, summary=summary, image="https://news.example/b.jpg")]))

    for part in (rendered.html, rendered.text, rendered.subject, rendered.preheader):
        assert "\\u{6" not in part and "\\u{5" not in part, "no mark written as escape text"
    tree = parse_html(rendered)
    assert [img.get("alt") for img in tree.iter("img")] == [headline, headline], "marks kept in alt"
    assert headline in flat(rendered.text) and headline in tree.text_content()
    assert "\\u{41}" in rendered.text, "a backslash a feed wrote is not a mark: left alone"


def test_plain_text_lines_carry_right_to_left_marks_and_links_stay_clean(sample_rendered):
    text = sample_rendered.with_outlet_links(sample_rendered.text, escape=False)
    for line in text.splitlines():
        arabic = re.search(r"[\u0600-\u06ff]", line)
        if line.startswith("http"):
            assert RLM not in line and " " not in line, "a link alone on its line, nothing glued to it"
        elif arabic:
            assert line.startswith(RLM) and line.endswith(RLM), line
        else:
            assert RLM not in line, line
        assert len(line) <= 80 or line.startswith("http") or " " not in line.strip(RLM)[76:], "wrapped for reading"


# --- the subject on a phone, and what the preheader carries on with ----------

SUBJECT_CASES = {
    # the cut the issue reported: «…لبحث المرحلة المقبلة من الحرب على…»
    "purpose clause": ("وزراء دفاع التحالف يجتمعون في كوبنهاغن لبحث المرحلة المقبلة من الحرب على تنظيم الدولة",
                       "وزراء دفاع التحالف يجتمعون في كوبنهاغن…"),
    "punctuation": ('ماكرون يعين إدوار فيليب رئيسا للوزراء: "مفاجأة" اليمين والوسط تتفاعل مع القرار',
                    "ماكرون يعين إدوار فيليب رئيسا للوزراء…"),
    "never after a preposition": ("بيان عاجل من الوزارة ردود غاضبة على القرار الجديد بشأن الضرائب والرسوم",
                                  "بيان عاجل من الوزارة ردود غاضبة…"),
    "short": ("زلزال بقوة 6.9 يضرب اليابان", "زلزال بقوة 6.9 يضرب اليابان"),
}


@pytest.mark.parametrize("case", SUBJECT_CASES)
def test_the_subject_is_cut_after_a_phrase_within_a_phones_line_and_the_preheader_goes_on(case):
    headline, subject = SUBJECT_CASES[case]
    rendered = render_stories(story(1, title=headline), story(2))

    assert rendered.subject == subject
    assert len(rendered.subject) <= SUBJECT_LIMIT
    if subject != headline:
        rest = rendered.preheader.split(" · ")[0]
        assert rest.startswith("…"), "the preheader continues the subject"
        words = lambda text: re.sub(r"[:،…]", " ", text).split()  # noqa: E731
        assert words(subject) + words(rest) == words(headline), "together they tell the whole headline"
    assert rendered.preheader.endswith(story(2).title), "then the next story"


def test_a_subject_never_ends_on_a_word_that_needs_the_next():
    for opener in ("في", "من", "على", "إلى", "عن", "التي", "أن", "و"):
        headline = "ا" * 8 + " " + " ".join(["كلمة"] * 6) + f" {opener} " + " ".join(["كلمة"] * 8)
        subject = render_stories(story(1, title=headline)).subject
        assert len(subject) <= SUBJECT_LIMIT
        assert not subject.rstrip("…").endswith(f" {opener}"), subject


def test_blocked_pictures_leave_readable_alt_text_away_from_the_cards_edge():
    rendered = render_stories(story(1, image="https://news.example/a.jpg"), story(2, image="https://news.example/b.jpg"))
    tree = parse_html(rendered)

    for img in tree.iter("img"):
        style = dict(part.split(":", 1) for part in img.get("style").replace(" ", "").split(";") if part)
        assert int(style["font-size"].rstrip("px")) >= 15, "alt text at a readable size"
        assert float(style["line-height"]) >= 1.5, "and line spacing"
        padding = img.xpath("ancestor::td[contains(@class, 'picture')]")[0].get("style")
        assert re.search(r"padding:\s*\d+px\s+24px", padding), f"inset from the card's edge: {padding}"
