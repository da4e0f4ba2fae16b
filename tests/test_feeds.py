"""Reading the newsroom's feeds: parse_feed, read_feeds and plain_text.

Uses the bundled sample feeds (newsletter/sample_feeds) and, for remote
sources, a real HTTP server on 127.0.0.1 started by the test itself.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from newsletter.config import SAMPLE_FEEDS_DIR
from newsletter.issue.feeds import Story, link_key, parse_feed, plain_text, read_feeds, without_tracking

UTC = dt.timezone.utc
FRANCE24 = SAMPLE_FEEDS_DIR / "france24.xml"  # RSS 2.0, images as <enclosure>
SABAH = SAMPLE_FEEDS_DIR / "sabah-dawli.atom"  # Atom 1.0
SAWT = SAMPLE_FEEDS_DIR / "sawt-alalam.xml"  # RSS 2.0 with <category>
MARSAD = SAMPLE_FEEDS_DIR / "marsad.xml"  # RSS 2.0 + Media RSS, HTML descriptions
SAMPLE_FILES = [FRANCE24, SABAH, SAWT, MARSAD]


# --- helpers ---------------------------------------------------------------


def parse_file(path) -> list[Story]:
    return parse_feed(path.read_bytes(), str(path))


def story_with_url(stories: list[Story], url: str) -> Story:
    matches = [s for s in stories if s.url == url]
    assert len(matches) == 1, f"expected one story with url {url}, got {len(matches)}"
    return matches[0]


def rss(*items: str, title: str = "وكالة الاختبار") -> bytes:
    """A minimal RSS 2.0 document around the given raw <item> bodies."""
    body = "".join(f"<item>{item}</item>" for item in items)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<rss version="2.0"><channel><title>{title}</title><link>https://test.example/</link>'
        f"{body}</channel></rss>"
    ).encode("utf-8")


def item(title: str, link: str, extra: str = "") -> str:
    return (
        f"<title>{title}</title><link>{link}</link>"
        "<pubDate>Tue, 09 May 2017 03:00:00 GMT</pubDate>"
        f"<description>ملخص الخبر</description>{extra}"
    )


@contextmanager
def feed_server(routes: dict[str, bytes]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (free port); serves `routes`, 404 for anything else."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server naming)
            body = routes.get(self.path)
            status = 200 if body is not None else 404
            body = body if body is not None else b"not found"
            self.send_response(status)
            self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading (the size cap): expected

        def log_message(self, *args):
            pass

    class QuietServer(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def no_proxy(monkeypatch):
    """httpx honours *_PROXY variables; the local server must be reached directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def padded_feed(size: int) -> bytes:
    """A valid RSS feed (the France 24 sample) padded with an XML comment to `size` bytes."""
    feed = FRANCE24.read_bytes()
    head, tail = feed.split(b"<channel>", 1)
    padding = b"<!--" + b"x" * max(0, size - len(feed) - 7) + b"-->"
    return head + b"<channel>" + padding + tail


# --- RSS 2.0 and Atom ------------------------------------------------------


def test_rss_item_becomes_a_complete_story():
    stories = parse_file(FRANCE24)

    lead = stories[0]
    assert lead.url == (
        "https://www.france24.com/ar/"
        "20170509-denmark-copenhagen-international-coalition-islamic-state-meeting-mattis"
    )
    assert lead.title == 'اجتماع للتحالف الدولي ضد تنظيم "داعش" الثلاثاء في كوبنهاغن'
    assert lead.summary.startswith("يعقد مسؤولون من الدول الرئيسية في التحالف الدولي")
    assert lead.summary.endswith("ضد الجهاديين.")
    assert lead.published == dt.datetime(2017, 5, 9, 4, 0, tzinfo=UTC)  # 06:00 +0200
    assert lead.image == "https://s.france24.com/media/display/ar/20170509-coalition-copenhague-mattis.jpg"
    assert lead.source == "فرانس 24 - دولي"
    assert lead.position == 1
    assert lead.categories == ()


def test_rss_categories_and_positions_follow_the_feed():
    stories = parse_file(SAWT)

    assert [s.position for s in stories] == list(range(1, 11))
    handball = story_with_url(stories, "https://sawt-alalam.example/sport/handball/10448")
    assert handball.categories == ("رياضة",)
    copenhagen = story_with_url(stories, "https://sawt-alalam.example/world/10457")
    assert copenhagen.position == 2
    assert copenhagen.categories == ("دولي",)
    assert copenhagen.published == dt.datetime(2017, 5, 9, 3, 50, tzinfo=UTC)  # GMT date
    assert copenhagen.source == "صوت العالم"


def test_atom_entry_becomes_a_complete_story():
    stories = parse_file(SABAH)

    venezuela = story_with_url(
        stories,
        "https://sabah-dawli.example/world/americas/2017/05/08/48205-venezuela-opposition-march-tear-gas-maduro",
    )
    assert venezuela.title == "فنزويلا: الغاز المسيل للدموع في مواجهة مسيرات المعارضة ضد مادورو"
    assert venezuela.published == dt.datetime(2017, 5, 8, 20, 15, tzinfo=UTC)
    assert venezuela.image == "https://sabah-dawli.example/media/2017/05/08/caracas-protest-tear-gas.jpg"
    assert venezuela.source == "الصباح الدولي"
    assert venezuela.position == 2
    # summary type="html": two <p> and an escaped &amp;quot; -> plain text, one space between paragraphs
    assert "<" not in venezuela.summary and "&" not in venezuela.summary
    assert "منذ أكثر من خمسة أسابيع. ويرفض المعارضون" in venezuela.summary
    assert 'خطة الرئيس لتشكيل "جمعية تأسيسية" لصياغة' in venezuela.summary


def test_atom_entry_without_image_has_none_and_uses_published_date():
    iran = parse_file(SABAH)[0]

    assert iran.image is None
    # <published> 01:10, <updated> 01:25: the publication date is what counts
    assert iran.published == dt.datetime(2017, 5, 9, 1, 10, tzinfo=UTC)


def test_an_item_dated_past_year_9999_is_undated_and_the_rest_of_the_feed_is_read():
    atom = SABAH.read_bytes().replace(b"<published>2017-05-09T01:10:00Z</published>",
                                      b"<published>9999-12-31T23:59:59-14:00</published>", 1)
    assert atom != SABAH.read_bytes()

    stories = parse_feed(atom, str(SABAH))

    assert len(stories) == len(parse_file(SABAH)), "one bad date loses no story"
    assert stories[0].published is None and all(s.published for s in stories[1:])


def test_html_descriptions_become_plain_text_and_images_are_found_everywhere():
    stories = parse_file(MARSAD)
    syria, mattis, korea, pentagon, moscow = stories[:5]

    assert syria.title == '"مناطق تخفيف التصعيد" في سوريا: أسئلة & أجوبة'
    assert syria.summary.startswith('دخلت مذكرة "مناطق تخفيف التصعيد" التي')
    assert "جنوب البلاد. وأعلنت دمشق" in syria.summary  # </p><p> -> one space
    assert syria.summary.endswith("الخرائط & نص المذكرة")  # the link's text stays, the tag goes
    assert moscow.summary.endswith("ومئات الآليات & الطائرات. ملف: عيد النصر في روسيا")

    assert syria.image == "https://al-marsad.example/media/2017/05/syria-de-escalation-zones-map.jpg"  # media:content
    assert korea.image == "https://al-marsad.example/media/2017/05/seoul-polling-station.jpg"  # <img> in HTML
    assert pentagon.image == "https://al-marsad.example/media/2017/05/us-troops-afghanistan.jpg"  # <enclosure>
    assert "<img" not in korea.summary and korea.summary.startswith("توافد الناخبون")
    assert mattis.published == dt.datetime(2017, 5, 9, 3, 30, tzinfo=UTC)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_sample_item_is_clean_plain_text_with_an_aware_utc_date(path):
    stories = parse_file(path)

    assert stories, "each sample feed has items"
    assert [s.position for s in stories] == list(range(1, len(stories) + 1))
    assert len({s.source for s in stories}) == 1
    for story in stories:
        assert story.url.startswith("https://")
        for text in (story.title, story.summary):
            assert text and text == text.strip()
            assert "<" not in text and ">" not in text
            assert "&amp;" not in text and "&quot;" not in text and "&lt;" not in text
            assert "  " not in text and "\n" not in text
        assert story.published.tzinfo is not None
        assert story.published.utcoffset() == dt.timedelta(0)
        assert story.image is None or story.image.startswith("https://")


# --- plain_text ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("<p>الفقرة الأولى.</p><p>الفقرة الثانية.</p>", "الفقرة الأولى. الفقرة الثانية."),
        ("<p>أولى</p>\n\n<p>ثانية</p>", "أولى ثانية"),
        ("سطر<br>سطر آخر", "سطر سطر آخر"),
        ("<ul><li>بند</li><li>بند آخر</li></ul>", "بند بند آخر"),
        ("<h2>عنوان</h2>نص", "عنوان نص"),
        ('تنظيم &quot;داعش&quot; &amp; الجهاديون', 'تنظيم "داعش" & الجهاديون'),
        ("&#1583;&#1608;&#1604;&#1610; و&nbsp;عالمي", "دولي و عالمي"),
        ('<p>نص <a href="https://x.example/">رابط</a> <b>مهم</b></p>', "نص رابط مهم"),
        ("  مسافات \n\n\t كثيرة  ", "مسافات كثيرة"),
        ("5 < 6 و 7 > 3", "5 < 6 و 7 > 3"),
        ("", ""),
    ],
)
def test_plain_text_strips_tags_decodes_entities_and_separates_paragraphs(fragment, expected):
    assert plain_text(fragment) == expected


def test_plain_text_separates_text_that_precedes_a_paragraph():
    # A summary that opens with a bare sentence and continues in <p> (common in
    # CMS output): the two must not run together into one word.
    assert plain_text("تمهيد قصير.<p>الفقرة التالية.</p>") == "تمهيد قصير. الفقرة التالية."
    assert plain_text("<div>مقدمة<p>متن</p></div>") == "مقدمة متن"


# --- untrusted text --------------------------------------------------------


@pytest.mark.parametrize(
    "raw_title",
    [
        # entity-escaped in the XML: the element's text is `"…" &amp; <script>…</script>`
        "&quot;عاجل&quot; تنظيم &amp;amp; &lt;script&gt;alert(1)&lt;/script&gt; الدولة",
        # the same text in a CDATA section
        '<![CDATA["عاجل" تنظيم &amp; <script>alert(1)</script> الدولة]]>',
    ],
    ids=["escaped", "cdata"],
)
def test_hostile_title_comes_out_as_plain_text(raw_title):
    [story] = parse_feed(rss(item(raw_title, "https://test.example/1")), "hostile.xml")

    # An RSS title is plain text: what looks like markup is part of the headline
    # (it is escaped when rendered), and entities are decoded.
    assert story.title == '"عاجل" تنظيم & <script>alert(1)</script> الدولة'
    assert story.image_alt == story.title


@pytest.mark.parametrize(
    "link",
    ["javascript:alert(1)", "  JavaScript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>"],
)
def test_link_with_an_unsafe_scheme_is_not_kept(link):
    content = rss(
        item("خبر سليم", "https://test.example/good"),
        item("خبر برابط خطر", link.replace("<", "&lt;").replace(">", "&gt;")),
    )

    stories = parse_feed(content, "links.xml")

    assert [s.url for s in stories] == ["https://test.example/good"]
    assert all(not s.url.lower().lstrip().startswith(("javascript:", "data:")) for s in stories)


def test_image_with_an_unsafe_scheme_is_not_kept():
    enclosure = '<enclosure url="javascript:alert(1)" length="1" type="image/jpeg"/>'
    [story] = parse_feed(rss(item("خبر بصورة", "https://test.example/img", enclosure)), "img.xml")

    assert story.image is None


# --- broken sources --------------------------------------------------------


def assert_one_line_failure(failure, source: str, *words: str) -> None:
    message = str(failure)
    assert failure.source == source
    assert message.startswith(source)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def urls_of(path) -> set[str]:
    return {s.url for s in parse_file(path)}


def test_missing_file_is_reported_and_the_other_feeds_still_count(tmp_path):
    missing = str(tmp_path / "no-such-feed.xml")

    batch = read_feeds([str(FRANCE24), missing, str(SABAH)])

    assert len(batch.failures) == 1
    assert_one_line_failure(batch.failures[0], missing, "No such file")
    assert {s.url for s in batch.stories} == urls_of(FRANCE24) | urls_of(SABAH)


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01 this is not a feed <<< &&& >>>",
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title><item><title>bad',
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>empty</title></channel></rss>',
        b"",
    ],
    ids=["garbage", "truncated-xml", "no-items", "empty-file"],
)
def test_unreadable_file_is_reported_and_the_other_feeds_still_count(tmp_path, content):
    broken = tmp_path / "broken.xml"
    broken.write_bytes(content)

    batch = read_feeds([str(broken), str(SAWT)])

    assert len(batch.failures) == 1
    assert_one_line_failure(batch.failures[0], str(broken))
    assert batch.failures[0].reason.strip()
    assert {s.url for s in batch.stories} == urls_of(SAWT)


def test_remote_sources_good_404_and_too_large(tmp_path, no_proxy):
    cap = 64_000
    good_body = FRANCE24.read_bytes()
    assert len(good_body) < cap
    routes = {"/good.xml": good_body, "/huge.xml": padded_feed(cap * 4)}
    missing_file = str(tmp_path / "gone.xml")

    with feed_server(routes) as base:
        good, gone, huge = f"{base}/good.xml", f"{base}/gone.xml", f"{base}/huge.xml"
        batch = read_feeds([good, gone, huge, missing_file, str(SABAH)], timeout=10, max_bytes=cap)

    failures = {f.source: f for f in batch.failures}
    assert set(failures) == {gone, huge, missing_file}
    assert_one_line_failure(failures[gone], gone, "404")
    assert_one_line_failure(failures[huge], huge, str(cap))
    assert_one_line_failure(failures[missing_file], missing_file)
    assert {s.url for s in batch.stories} == urls_of(FRANCE24) | urls_of(SABAH)
    remote = [s for s in batch.stories if s.source == "فرانس 24 - دولي"]
    assert [s.position for s in remote] == list(range(1, 9))


def test_large_remote_feed_is_read_when_under_the_cap(no_proxy):
    body = padded_feed(200_000)

    with feed_server({"/big.xml": body}) as base:
        under = read_feeds([f"{base}/big.xml"], timeout=10, max_bytes=len(body) + 1)
        over = read_feeds([f"{base}/big.xml"], timeout=10, max_bytes=len(body) - 1)

    assert not under.failures
    assert {s.url for s in under.stories} == urls_of(FRANCE24)
    assert [f.source for f in over.failures] == [f"{base}/big.xml"]
    assert over.stories == []


def test_unreachable_remote_source_is_reported(no_proxy):
    with feed_server({}) as base:
        pass  # the server is closed again: nothing listens on that port now
    dead = f"{base}/feed.xml"

    batch = read_feeds([dead, str(MARSAD)], timeout=5, max_bytes=1_000_000)

    assert [f.source for f in batch.failures] == [dead]
    assert_one_line_failure(batch.failures[0], dead)
    assert {s.url for s in batch.stories} == urls_of(MARSAD)


# --- one article, one outlet ------------------------------------------------


@pytest.mark.parametrize("variant", [
    "https://al-ufuq.example/world/2026/03/09/778?utm_source=nabd&utm_medium=rss&utm_campaign=top",
    "http://www.al-ufuq.example/world/2026/03/09/778/",
    "https://al-ufuq.example/amp/world/2026/03/09/778",
    "https://al-ufuq.example/world/2026/03/09/778/amp",
    "https://al-ufuq.example/world/2026/03/09/778#comments",
    "https://al-ufuq.example/world/2026/03/09/778?fbclid=IwAR0xyz&amp=1",
])
def test_copies_of_one_article_share_one_key(variant):
    assert link_key(variant) == link_key("https://al-ufuq.example/world/2026/03/09/778")


def test_different_articles_keep_different_keys():
    keys = {link_key(u) for u in [
        "https://al-ufuq.example/world/2026/03/09/778",
        "https://al-ufuq.example/world/2026/03/09/779",
        "https://al-ufuq.example/news?id=778",
        "https://al-ufuq.example/news?id=779&utm_source=x",
        "https://other.example/world/2026/03/09/778",
    ]}
    assert len(keys) == 5


def test_readers_get_links_without_tracking_parameters():
    [story] = parse_feed(rss(item("خبر", "https://test.example/news?id=5&utm_source=nabd&utm_medium=rss#top")), "t.xml")
    assert story.url == "https://test.example/news?id=5"
    assert without_tracking("https://test.example/a?b=1&gclid=x") == "https://test.example/a?b=1"


def test_two_feeds_of_one_site_are_one_outlet_and_keep_their_names():
    world = parse_feed(rss(item("خبر", "https://test.example/1"), title="الوكالة - دولي"), "https://feeds.test.example/world")
    latest = parse_feed(rss(item("خبر", "https://test.example/2"), title="الوكالة - عاجل"), "https://feeds.test.example/all")
    assert world[0].outlet == latest[0].outlet == "test.example"
    assert (world[0].source, latest[0].source) == ("الوكالة - دولي", "الوكالة - عاجل")


def test_an_outlet_named_in_settings_wins_for_its_feed_or_its_site():
    by_feed = parse_feed(rss(item("خبر", "https://test.example/1")), "https://cdn.example/x.xml",
                         outlets={"https://cdn.example/x.xml": "وكالة الأنباء"})
    by_site = parse_feed(rss(item("خبر", "https://test.example/1")), "https://cdn.example/y.xml",
                         outlets={"test.example": "الوكالة"})
    assert (by_feed[0].outlet, by_feed[0].source) == ("وكالة الأنباء", "وكالة الأنباء")
    assert (by_site[0].outlet, by_site[0].source) == ("الوكالة", "الوكالة")
