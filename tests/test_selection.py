"""Choosing the day's stories: normalise_arabic, cluster_events, select_stories.

The sample-feed tests use the bundled feeds of 7-9 May 2017 (see
newsletter/sample_feeds/README.md): the 09 May issue, cut-off 07:00 Paris.
"""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest

from newsletter.config import SAMPLE_FEEDS_DIR, Settings
from newsletter.issue.feeds import Story, read_feeds
from newsletter.issue.selection import Selection, cluster_events, normalise_arabic, select_stories

UTC = dt.timezone.utc
SAMPLE_WINDOW_END = dt.datetime(2017, 5, 9, 5, 0, tzinfo=UTC)
COPENHAGEN_HEADLINE = 'اجتماع للتحالف الدولي ضد تنظيم "داعش" الثلاثاء في كوبنهاغن'

# In-window events covered by several outlets (sample_feeds/README.md), by URL.
COPENHAGEN = {
    "https://www.france24.com/ar/20170509-denmark-copenhagen-international-coalition-islamic-state-meeting-mattis",
    "https://sabah-dawli.example/world/middle-east/2017/05/09/48219-coalition-copenhagen-meeting-islamic-state",
    "https://sawt-alalam.example/world/10457",
    "https://al-marsad.example/world/europe/2017/05/09/mattis-denmark-coalition-foreign-fighters",
}
SOUTH_KOREA = {
    "https://www.france24.com/ar/20170509-south-korea-presidential-election-vote-moon-jae-in-favourite",
    "https://sabah-dawli.example/world/asia/2017/05/09/48216-south-korea-votes-new-president-moon",
    "https://al-marsad.example/world/asia/2017/05/09/south-korea-election-turnout",
}
MACRON = {
    "https://www.france24.com/ar/20170508-france-macron-en-marche-republique-en-marche-legislatives-passation",
    "https://sabah-dawli.example/world/europe/2017/05/08/48187-macron-hollande-arc-de-triomphe-handover",
    "https://sawt-alalam.example/world/10431",
}
SYRIA = {
    "https://al-marsad.example/world/syria/2017/05/08/de-escalation-zones-explainer",
    "https://sawt-alalam.example/world/10441",
}
VENEZUELA = {
    "https://sabah-dawli.example/world/americas/2017/05/08/48205-venezuela-opposition-march-tear-gas-maduro",
    "https://sawt-alalam.example/world/10452",
}
NOT_INTERNATIONAL = {
    "https://sawt-alalam.example/sport/handball/10448": "رياضة",
    "https://sawt-alalam.example/economy/local/10436": "اقتصاد محلي",
    "https://sawt-alalam.example/variety/10439": "منوعات",
}


# --- helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_stories() -> list[Story]:
    feeds = sorted(str(p) for p in SAMPLE_FEEDS_DIR.iterdir() if p.suffix in {".xml", ".atom"})
    batch = read_feeds(feeds)
    assert batch.failures == []
    return batch.stories


def default_sections() -> list[str]:
    return Settings(_env_file=None).sections


def select_sample(stories: list[Story], **options) -> Selection:
    options = {"sections": default_sections(), "max_stories": 6, **options}
    return select_stories(stories, window_end=SAMPLE_WINDOW_END, **options)


def event_urls(selection: Selection) -> list[set[str]]:
    return [{r.url for r in event.reports} for event in selection.events]


def dropped_reasons(selection: Selection) -> dict[str, str]:
    return {d.story.url: d.reason for d in selection.dropped}


_numbers = itertools.count(1)


def report(
    title: str,
    summary: str = "",
    *,
    source: str = "وكالة",
    position: int = 1,
    hours_ago: float = 1,
    image: str | None = None,
    categories: tuple[str, ...] = (),
) -> Story:
    """A synthetic report, published `hours_ago` before the sample cut-off."""
    return Story(
        url=f"https://news.example/story/{next(_numbers)}",
        title=title,
        summary=summary,
        published=SAMPLE_WINDOW_END - dt.timedelta(hours=hours_ago),
        source=source,
        position=position,
        image=image,
        image_alt=title,
        categories=categories,
    )


def groups(events) -> list[set[str]]:
    return sorted(({r.title for r in e.reports} for e in events), key=len, reverse=True)


# Two reports of one earthquake, worded differently by two outlets.
QUAKE_A = (
    "زلزال بقوة 7 درجات يضرب جنوب اليابان ويثير مخاوف من تسونامي",
    "ضرب زلزال عنيف جزيرة كيوشو في جنوب اليابان صباح اليوم وسط مخاوف من موجات مد بحري.",
)
QUAKE_B = (
    "اليابان: هزة أرضية عنيفة تضرب جزيرة كيوشو وتحذير من موجات تسونامي",
    "أعلنت هيئة الأرصاد اليابانية أن زلزالا بقوة 7 درجات ضرب كيوشو، وحذرت السكان من تسونامي.",
)
# Unrelated news of the same morning (some share generic words such as «الرئيس»).
OTHER_NEWS = [
    ("البرلمان الأوروبي يصادق على ميزانية الاتحاد للعام المقبل", "صوت النواب في ستراسبورغ على الميزانية بأغلبية واسعة."),
    ("مفاوضات التجارة بين كندا والمكسيك تتعثر مجددا", "تعثرت المحادثات التجارية في أوتاوا بسبب الرسوم الجمركية."),
    ("الرئيس البرازيلي يواجه احتجاجات واسعة في ساو باولو", "خرج آلاف المتظاهرين في ساو باولو ضد إصلاح نظام التقاعد."),
    ("الرئيس الكيني يفتتح خط سكة حديد جديدا بين مومباسا ونيروبي", "دشن الرئيس الكيني خط القطار الممول من الصين."),
]


# --- normalise_arabic ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("المُعلّم", "المعلم"),  # tashkeel
        ("أيّ", "اي"),  # shadda + hamza
        ("إِحْيَاءً", "احياء"),  # tashkeel + tanween
        ("الانتخابـــات", "الانتخابات"),  # tatweel
        ("أحمد إبراهيم آمنة", "احمد ابراهيم امنه"),  # أ إ آ -> ا, ة -> ه
        ("مستشفى الهدى", "مستشفي الهدي"),  # ى -> ي
        ("«قال»: نعم! لماذا؟ هنا، وهناك؛ (انتهى)...", "قال نعم لماذا هنا وهناك انتهي"),  # punctuation
        ('تنظيم "داعش" - مون جاي-إن', "تنظيم داعش مون جاي ان"),
    ],
)
def test_normalise_arabic(text, expected):
    assert normalise_arabic(text) == expected


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("مون جاي-إن", "مون جاي إن"),
        ("الانتخابـات", "الإنتخابات"),
        ("المُعلّم", "المعلم"),
        ("مدرسة الهدى", "مدرسه الهدي"),
    ],
)
def test_spellings_of_one_word_normalise_alike(one, other):
    assert normalise_arabic(one) == normalise_arabic(other)


# --- the bundled sample feeds ----------------------------------------------


def test_sample_cut_off_is_seven_in_the_morning_in_paris():
    assert SAMPLE_WINDOW_END == dt.datetime(2017, 5, 9, 7, 0, tzinfo=ZoneInfo("Europe/Paris"))


def test_copenhagen_meeting_is_the_lead_with_four_sources(sample_stories):
    selection = select_sample(sample_stories)

    lead = selection.events[0]
    assert lead.story.title == COPENHAGEN_HEADLINE
    assert lead.story.source == "فرانس 24 - دولي"
    assert len(lead.sources) == 4
    assert {r.url for r in lead.reports} == COPENHAGEN


def test_near_duplicate_reports_become_one_event(sample_stories):
    selection = select_sample(sample_stories)

    found = event_urls(selection)
    for expected in (COPENHAGEN, SOUTH_KOREA, MACRON, SYRIA, VENEZUELA):
        assert expected in found, f"these reports should be one event: {sorted(expected)}"
    # no outlet appears twice in one event, and no report is in two events
    for event in selection.events:
        assert len(event.sources) == len(event.reports)
    all_reports = [url for urls in found for url in urls]
    assert len(all_reports) == len(set(all_reports))


def test_events_are_ranked_by_number_of_sources(sample_stories):
    selection = select_sample(sample_stories)

    counts = [len(e.sources) for e in selection.events]
    assert counts == sorted(counts, reverse=True)
    assert event_urls(selection)[:5] == [COPENHAGEN, SOUTH_KOREA, MACRON, SYRIA, VENEZUELA]
    assert counts == [4, 3, 3, 2, 2, 1]


def test_stale_items_are_dropped_with_the_window_as_reason(sample_stories):
    window_start = SAMPLE_WINDOW_END - dt.timedelta(hours=24)
    stale = {s.url for s in sample_stories if not window_start <= s.published < SAMPLE_WINDOW_END}
    assert len(stale) == 8  # two per feed (sample_feeds/README.md)

    selection = select_sample(sample_stories)

    reasons = dropped_reasons(selection)
    for url in stale:
        assert "window" in reasons[url], (url, reasons.get(url))
    chosen = {url for urls in event_urls(selection) for url in urls}
    assert not stale & chosen
    # Marsad's Moscow parade item (05:20 UTC on the 8th) is just inside the window
    moscow = "https://al-marsad.example/world/europe/2017/05/08/moscow-victory-day-parade-preparations"
    assert "window" not in reasons[moscow]


def test_non_international_sections_are_dropped_with_the_section_as_reason(sample_stories):
    selection = select_sample(sample_stories)

    reasons = dropped_reasons(selection)
    for url, section in NOT_INTERNATIONAL.items():
        assert "international" in reasons[url]
        assert section in reasons[url]
    chosen = {url for urls in event_urls(selection) for url in urls}
    assert not set(NOT_INTERNATIONAL) & chosen


def test_every_report_is_either_chosen_or_dropped_with_a_reason(sample_stories):
    selection = select_sample(sample_stories)

    chosen = [r.url for e in selection.events for r in e.reports]
    dropped = [d.story.url for d in selection.dropped]
    assert sorted(chosen + dropped) == sorted(s.url for s in sample_stories)
    assert all(d.reason.strip() for d in selection.dropped)


@pytest.mark.parametrize("max_stories", [1, 3, 6])
def test_nothing_beyond_max_stories(sample_stories, max_stories):
    selection = select_sample(sample_stories, max_stories=max_stories)

    assert len(selection.events) == max_stories
    assert len(selection.stories) == max_stories
    assert selection.stories[0].title == COPENHAGEN_HEADLINE
    over_the_limit = [d for d in selection.dropped if "limit" in d.reason]
    assert over_the_limit, "the events left out are explained"
    assert all(str(max_stories) in d.reason for d in over_the_limit)


def test_already_sent_url_drops_its_whole_event(sample_stories):
    already_sent = frozenset({"https://sawt-alalam.example/world/10457"})  # one Copenhagen report

    selection = select_sample(sample_stories, already_sent=already_sent)

    chosen = {url for urls in event_urls(selection) for url in urls}
    assert not COPENHAGEN & chosen
    reasons = dropped_reasons(selection)
    for url in COPENHAGEN:
        assert "already sent" in reasons[url]
    assert event_urls(selection)[0] == SOUTH_KOREA
    assert len(selection.events) == 6


# --- synthetic reports: clustering -----------------------------------------


def test_reports_of_one_event_in_different_words_cluster_among_other_news():
    quake_a = report(*QUAKE_A, source="وكالة أ")
    quake_b = report(*QUAKE_B, source="وكالة ب", position=2)
    others = [report(t, s, source=f"مصدر {i}") for i, (t, s) in enumerate(OTHER_NEWS)]

    events = cluster_events([quake_a, *others, quake_b])

    assert groups(events)[0] == {quake_a.title, quake_b.title}
    assert len(events) == 1 + len(others)


@pytest.mark.parametrize("unrelated", [0, 1], ids=["only-the-two-reports", "plus-one-unrelated"])
def test_two_reports_of_one_event_cluster_on_a_quiet_morning(unrelated):
    # The same pair as above; whether it is one event must not depend on how
    # many unrelated reports happen to be in the list.
    quake_a = report(*QUAKE_A, source="وكالة أ")
    quake_b = report(*QUAKE_B, source="وكالة ب", position=2)
    others = [report(t, s, source=f"مصدر {i}") for i, (t, s) in enumerate(OTHER_NEWS[:unrelated])]

    events = cluster_events([quake_a, quake_b, *others])

    assert groups(events)[0] == {quake_a.title, quake_b.title}


def test_unrelated_reports_do_not_cluster():
    reports = [report(t, s, source=f"مصدر {i}") for i, (t, s) in enumerate(OTHER_NEWS)]

    events = cluster_events(reports)

    assert len(events) == len(reports)
    assert all(len(e.reports) == 1 for e in events)


def test_identical_wire_copy_from_two_outlets_is_one_event():
    wire = ("الأمم المتحدة تحذر من مجاعة وشيكة في جنوب السودان", "حذر برنامج الأغذية العالمي من مجاعة تهدد الملايين.")
    one = report(*wire, source="وكالة أ")
    two = report(*wire, source="وكالة ب", position=3)

    events = cluster_events([one, two, report(*OTHER_NEWS[0], source="مصدر")])

    assert groups(events)[0] == {wire[0]}
    assert len(events) == 2


# --- synthetic reports: ranking and the lead --------------------------------


def test_more_sources_outrank_a_better_feed_position():
    wire = ("الأمم المتحدة تحذر من مجاعة وشيكة في جنوب السودان", "حذر برنامج الأغذية العالمي من مجاعة تهدد الملايين.")
    single_top = report(*OTHER_NEWS[0], source="مصدر", position=1)
    covered_a = report(*wire, source="وكالة أ", position=7)
    covered_b = report(*wire, source="وكالة ب", position=9)

    selection = select_stories([single_top, covered_a, covered_b], window_end=SAMPLE_WINDOW_END)

    assert [len(e.sources) for e in selection.events] == [2, 1]
    assert selection.stories[0].title == wire[0]


def test_ties_are_broken_by_feed_position_then_recency():
    top_but_old = report(*OTHER_NEWS[0], source="أ", position=1, hours_ago=20)
    second_and_new = report(*OTHER_NEWS[1], source="ب", position=2, hours_ago=1)
    second_and_old = report(*OTHER_NEWS[2], source="ج", position=2, hours_ago=8)
    third_and_newest = report(*OTHER_NEWS[3], source="د", position=3, hours_ago=0.5)

    selection = select_stories(
        [third_and_newest, second_and_old, second_and_new, top_but_old], window_end=SAMPLE_WINDOW_END
    )

    assert selection.stories == [top_but_old, second_and_new, second_and_old, third_and_newest]


def test_lead_prefers_a_report_with_an_image():
    wire = ("الأمم المتحدة تحذر من مجاعة وشيكة في جنوب السودان", "حذر برنامج الأغذية العالمي من مجاعة تهدد الملايين.")
    top_without_image = report(*wire, source="وكالة أ", position=1)
    lower_with_image = report(*wire, source="وكالة ب", position=4, image="https://img.example/famine.jpg")
    other = report(*OTHER_NEWS[0], source="مصدر", position=1)

    selection = select_stories([top_without_image, lower_with_image, other], window_end=SAMPLE_WINDOW_END)

    assert selection.stories[0] is lower_with_image
    assert top_without_image in selection.events[0].merged


def test_lead_without_any_image_keeps_the_best_positioned_report():
    wire = ("الأمم المتحدة تحذر من مجاعة وشيكة في جنوب السودان", "حذر برنامج الأغذية العالمي من مجاعة تهدد الملايين.")
    top = report(*wire, source="وكالة أ", position=1)
    lower = report(*wire, source="وكالة ب", position=4)

    selection = select_stories([lower, top, report(*OTHER_NEWS[0], source="مصدر")], window_end=SAMPLE_WINDOW_END)

    assert selection.stories[0] is top


def test_synthetic_window_and_sections():
    fresh = report(*OTHER_NEWS[0], source="أ", hours_ago=2, categories=("دولي",))
    stale = report(*OTHER_NEWS[1], source="ب", hours_ago=30)
    future = report(*OTHER_NEWS[2], source="ج", hours_ago=-1)  # after the cut-off
    local = report(*OTHER_NEWS[3], source="د", hours_ago=2, categories=("محليات",))

    selection = select_stories(
        [fresh, stale, future, local], window_end=SAMPLE_WINDOW_END, sections=default_sections()
    )

    assert selection.stories == [fresh]
    reasons = dropped_reasons(selection)
    assert "window" in reasons[stale.url] and "window" in reasons[future.url]
    assert "international" in reasons[local.url] and "محليات" in reasons[local.url]
