"""The lead: coverage decides, unless the desk's own leads show it opens with its region's stories."""

from __future__ import annotations

import datetime as dt

from newsletter.edition import desk_ranking, draft_edition
from newsletter.issue.feeds import FeedBatch, Story
from newsletter.issue.ranking import Ranking, Standing, learn_home_weight
from newsletter.issue.selection import select_stories

END = dt.datetime(2025, 9, 10, 5, 0, tzinfo=dt.timezone.utc)
HOME = frozenset({"qatar", "egypt"})

# Four events told in words of their own, each by its own number of outlets.
QUAKE = ("زلزال بقوة 6 درجات يضرب شرق أفغانستان ويقتل المئات في كونار",
         "فرق الإنقاذ تبحث عن ناجين تحت أنقاض القرى الجبلية في ولاية كونار الأفغانية")
DOHA = ("غارة إسرائيلية تستهدف قادة حماس في الدوحة وقطر تدين الهجوم",
        "استهدفت طائرات إسرائيلية مبنى في حي كتارا بالدوحة كان يجتمع فيه قادة من الحركة لبحث مقترح الهدنة")
SUMMIT = ("قمة شنغهاي للتعاون تفتتح في تيانجين بحضور بوتين ومودي",
          "يستضيف الرئيس الصيني شي جين بينغ نحو عشرين زعيما في مدينة تيانجين الساحلية")
FUEL = ("مصر ترفع أسعار البنزين والسولار بنسبة تصل إلى 13 في المئة",
        "قررت لجنة التسعير التلقائي للمنتجات البترولية في القاهرة زيادة أسعار الوقود اعتبارا من صباح الجمعة")


def reports(event: tuple[str, str], outlets: int, slug: str) -> list[Story]:
    title, summary = event
    return [Story(f"https://outlet{n}.example/{slug}", title, summary, END - dt.timedelta(hours=2 + n),
                  f"outlet{n}", position=1, outlet=f"outlet{n}.example") for n in range(outlets)]


def morning() -> list[Story]:
    return [*reports(QUAKE, 5, "quake"), *reports(DOHA, 4, "doha"), *reports(SUMMIT, 3, "summit"),
            *reports(FUEL, 1, "fuel")]


def standing(outlets: int, about: str) -> Standing:
    return Standing(outlets, 1, END, frozenset({about}))


def test_a_desk_that_leads_by_coverage_keeps_weight_0():
    issues = [[standing(5, "afghanistan"), standing(4, "qatar")], [standing(6, "iran"), standing(2, "egypt")]]

    assert learn_home_weight(issues, HOME) == 0.0
    assert learn_home_weight([], HOME) == 0.0


def test_the_weight_is_the_middle_of_what_the_desks_leads_allow():
    # The desk led with Doha (4 outlets) over a 5-outlet quake: a home story is worth at least 1 more outlet;
    # it led with a 6-outlet vote on Iran over a 4-outlet Egyptian story: at most 2 more.
    issues = [[standing(4, "qatar"), standing(5, "afghanistan")], [standing(6, "iran"), standing(4, "egypt")]]

    assert learn_home_weight(issues, HOME) == 1.5
    # The same leads with a region that does not hold Qatar teach nothing.
    assert learn_home_weight(issues, frozenset({"morocco"})) == 0.0


def test_the_weight_chooses_the_lead_not_the_issue():
    selection = select_stories(morning(), window_end=END, max_stories=3, ranking=Ranking(HOME, 1.5))

    titles = [e.story.title for e in selection.events]
    assert titles == [DOHA[0], QUAKE[0], SUMMIT[0]]  # Doha leads; the rest as coverage ranks it
    # A home story carried by one outlet does not push a three-outlet story out of the issue.
    assert FUEL[0] not in titles
    assert "counts 1.5 more for the lead (the desk's leads)" in selection.events[0].reasons()
    assert selection.events[0].score == 4 + 1.5 + 0.5

    by_coverage = select_stories(morning(), window_end=END, max_stories=3)
    assert [e.story.title for e in by_coverage.events] == [QUAKE[0], DOHA[0], SUMMIT[0]]


def test_the_next_issue_learns_from_the_lead_the_desk_sent(store, settings):
    """Issues keep their stories' standing; tomorrow's draft ranks with what the desk's leads taught."""
    yesterday = dt.date(2025, 9, 9)
    sent_in_desk_order = [
        {"url": "https://a.example/1", "title": "خبر أمس الأول", "summary": "", "source": "أ",
         "standing": standing(4, "qatar").as_json()},
        {"url": "https://a.example/2", "title": "خبر أمس الثاني", "summary": "", "source": "ب",
         "standing": standing(5, "afghanistan").as_json()},
    ]
    store.save_issue(yesterday.isoformat(), "عدد الأمس", "", "<p>x</p>", "x", sent_in_desk_order)
    # An issue from before stories kept their standing teaches nothing (and breaks nothing).
    store.save_issue("2025-09-08", "عدد قديم", "", "<p>x</p>", "x",
                     [{"url": "https://a.example/0", "title": "قديم", "summary": "", "source": "أ"}])

    ranking = desk_ranking(settings, store, dt.date(2025, 9, 10))
    # Any weight from 1 up explains that lead, and no lead bounds it from above: the smallest, and half a step.
    assert ranking.home_weight == 1.125

    batch = FeedBatch(morning(), [])
    settings = settings.model_copy(update={"max_stories": 3})  # the cut-off, 07:00 in Paris, is END
    draft = draft_edition(settings, store, dt.date(2025, 9, 10), batch)
    assert [s.title for s in draft.issue.stories][0] == DOHA[0]
    # Hamas stands for Palestine in the gazetteer: a strike on its leaders in Doha is about it too.
    about = frozenset({"israel", "qatar", "palestine"})
    assert draft.issue.stories[0].standing == Standing(4, 1, END - dt.timedelta(hours=2), about)
