"""`make eval`'s held-out measure of the selection, on both labelled corpora (see docs/selection.md).

Each corpus file is measured with the tuning (same-event threshold, penalties,
place bonus, groups kept apart) fitted on all the other files, so a change that only fits
the files it was tried on fails here. The speed target is measured by `make
eval` only: CPU time on a machine shared with other work is no test's business.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from benchmarks import selection_eval
from newsletter.issue.selection import Tuning, select_stories

# What the held-out evaluation shows the selection cannot do yet (docs/selection.md, "What the held-out
# figures say"). Each is a strict expected failure: a change that mends one makes its test fail until
# the mark goes, and every other target stays asserted.
REAL_TWINS_MERGED = pytest.mark.xfail(
    strict=True,
    reason="issue 27: held out, real template twins about one place, or with reports naming both, still merge. "
           "Same place: the Security Council's resolutions 2728 and 2735 on Gaza (14 votes each), the US strike "
           "on Fordow and Israel's strikes on Iran, Israel's two strikes on Beirut's southern suburb four days "
           "apart, the first "
           "and third US-UK waves on the Houthis, two quakes off Crete eight days apart. Named in both: the ECB "
           "and the Bank of England (one report gives both), the Fed with the Gulf banks: precision about 0.85"
)
LEADS_BY_NEWS_JUDGMENT = pytest.mark.xfail(
    strict=True,
    reason="issue 27: the lead learned from the desk's other mornings (a home-region weight) gets 7 of 10 real "
           "mornings right; on the other three, merged same-place twins make one bigger event that outranks the "
           "lead (resolutions 2728 and 2735 over the US election; the two Yemen waves over al-Arouri's killing; "
           "the two Crete quakes over the end of US sanctions on Syria)",
)
# Today's held-out figures, a floor a change must not fall below (the targets themselves are above).
FLOORS = {"made-up": {"precision": 0.99, "recall": 0.98, "lead": 1.0},
          "real": {"precision": 0.85, "recall": 0.96, "lead": 0.7}}


@pytest.fixture(scope="module")
def held_out() -> selection_eval.HeldOut:
    corpora = selection_eval.load_corpora(list(selection_eval.CORPORA))
    assert set(corpora) == {"made-up", "real"}, "both corpora are measured"
    return selection_eval.cross_validate(corpora)


@pytest.mark.parametrize("corpus", ["made-up", pytest.param("real", marks=REAL_TWINS_MERGED)])
def test_held_out_distinct_events_are_never_merged(held_out, corpus):
    scores = held_out.scores[corpus]

    assert scores.ratio("precision") >= 0.99, [m for m in scores.mistakes if "merged" in m]
    assert scores.chosen_pure == scores.chosen_total, [m for m in scores.mistakes if "chosen event" in m]


@pytest.mark.parametrize("corpus", ["made-up", "real"])
def test_held_out_reports_of_one_event_are_kept_together(held_out, corpus):
    scores = held_out.scores[corpus]

    assert scores.ratio("recall") >= 0.93, [m for m in scores.mistakes if "split" in m]


@pytest.mark.parametrize("corpus", ["made-up", pytest.param("real", marks=LEADS_BY_NEWS_JUDGMENT)])
def test_held_out_leads_are_right_every_day(held_out, corpus):
    scores = held_out.scores[corpus]

    assert all(scores.leads), [m for m in scores.mistakes if "lead" in m]


@pytest.mark.parametrize("corpus", ["made-up", "real"])
def test_held_out_figures_stay_above_todays(held_out, corpus):
    scores = held_out.scores[corpus]

    for measure, floor in FLOORS[corpus].items():
        assert scores.ratio(measure) >= floor, (measure, scores.ratio(measure), dict.fromkeys(scores.mistakes))


def test_held_out_wrong_merges_are_mostly_of_twins_that_never_share_a_real_morning(held_out):
    """The real mornings put twins of other days together on purpose; what a newsroom meets is the same-day
    pairs. Those stay few: the Gulf banks with the Fed in one fold, and the ECB's report that gives the Bank of
    England's decision too in its headline (counted as the ECB's)."""
    pairs = held_out.scores["real"].pairs

    assert pairs["fp"] - pairs["fp days apart"] <= 11, dict(pairs)
    assert held_out.scores["made-up"].pairs["fp days apart"] == 0, "made-up events carry no date"


def test_the_desk_of_each_corpus_learns_its_own_lead_weight(held_out):
    """The made-up corpus's desk leads by coverage (weight 0); the real corpus's leads with Arab stories."""
    weights = {day.sequence: held_out.home_weights[day.sequence] for days in held_out.corpora.values() for day in days}

    assert all(weights[f] == 0 for f in weights if f.startswith("corpus/"))
    assert sum(weights[f] > 0 for f in weights if f.startswith("real/")) >= 6


def test_every_file_is_measured_with_a_tuning_fitted_without_it(held_out):
    files = {day.sequence for days in held_out.corpora.values() for day in days}

    assert set(held_out.folds) == files and len(files) >= 4
    for name, days in held_out.corpora.items():
        assert len(held_out.scores[name].leads) == len(days), f"{name}: every morning measured once"


def test_the_fit_counts_each_thresholds_pairs_as_the_selection_groups_them():
    """`make eval` counts every threshold's pairs from one run's joins (`Joins`), the places and measures
    reweighed on one set of vectors: the same counts as grouping the morning afresh with each tuning."""
    day = selection_eval.load_days(selection_eval.CORPUS / "real")[0]
    counts = selection_eval.tuning_counts(day)
    for tuning in [Tuning(), Tuning(0.08, 0.0, 0.0, 0.0, 0.15, 0), Tuning(0.15, 1.0, 0.4, 0.0, 0.0, 1),
                   Tuning(0.1, 0.05, 0.1, 0.0, 0.05, 3)]:
        events = select_stories(day.stories, window_end=day.window_end, max_stories=10 ** 6, tuning=tuning).events
        together = [(day.event_of(a), day.event_of(b), n == m) for n, e in enumerate(events) for a in e.reports
                    for m, f in enumerate(events) for b in f.reports if id(a) < id(b)]

        assert counts[tuning].pairs == Counter(
            tp=sum(same and one for a, b, one in together for same in [a == b]),
            fp=sum(a != b and one for a, b, one in together),
            fn=sum(a == b and not one for a, b, one in together)), tuning



def test_each_real_event_comes_on_the_morning_after_its_real_day():
    """The real mornings put events of several months together; `on_their_real_days` gives each its own day."""
    day = next(d for d in selection_eval.load_days(selection_eval.CORPUS / "real") if str(d.date) == "2025-06-02")
    mornings = {str(m.date): {m.event_of(s) for s in m.stories} for m in selection_eval.on_their_real_days(day)}

    assert mornings["2025-03-29"] == {"r10-strike-dahiyeh-a"} and mornings["2025-04-02"] == {"r10-strike-dahiyeh-b"}
    assert mornings["2025-05-15"] == {"r10-quake-crete-a"} and mornings["2025-05-23"] == {"r10-quake-crete-b"}
    for morning in selection_eval.on_their_real_days(day):
        assert all(morning.window_end - dt.timedelta(days=1) < s.published <= morning.window_end for s in morning.stories)
    assert selection_eval.on_their_real_days(selection_eval.load_days()[0]) == [], "made-up events carry no date"


def test_on_their_real_days_a_later_twin_is_told_as_new_not_as_a_follow_up(held_out):
    """A newsroom meets the real twins days apart: the later one comes while the earlier one is in the week's
    issues (al-Tawil six days after al-Arouri, the second strike on Beirut's suburb four days after the first).
    Each is told as new; only the same-day Fed and Gulf banks may still merge (one held-out fold)."""
    scores = selection_eval.real_days_scores(held_out)["real"]

    assert not [m for m in scores.mistakes if "marked follow-up" in m or ("left out" in m and "gulf-banks" not in m)]
    assert scores.follow_ups[("new", True)] >= 81, scores.mistakes
    assert scores.ratio("precision") >= 0.98 and scores.ratio("recall") >= 0.95, "today's figures, floors"
