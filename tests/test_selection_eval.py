"""`make eval`'s held-out measure of the selection, on both labelled corpora (see docs/selection.md).

Each corpus file is measured with the tuning (same-event threshold, penalties,
template discount) fitted on all the other files, so a change that only fits
the files it was tried on fails here. The speed target is measured by `make
eval` only: CPU time on a machine shared with other work is no test's business.
"""

from __future__ import annotations

import pytest

from benchmarks import selection_eval

# The selection ranks events by coverage (outlets, then feed position, then recency). The label audit
# (benchmarks/corpus/real/SOURCES.md) leads two real mornings by news judgment with an event fewer
# outlets covered: no signal the items carry tells that apart (docs/selection.md, "The lead").
LEADS_BY_NEWS_JUDGMENT = pytest.mark.xfail(
    strict=True,
    reason="issue 27: on 2025-09-01 an editor leads with Israel's strike on Hamas's negotiators in Doha "
           "(4 outlets), not the Kunar earthquake (5), and on 2025-12-12 with the Security Council's Syria "
           "sanctions vote (4), not the Bulgarian government's resignation (5); ranking by coverage cannot "
           "see news judgment, and no held-out signal in the items (position, time, outlet, place) does",
)

# The label audit made the Gulf central banks' cuts (2025-09-19) an event of their own again. Held out,
# that morning's fold fits no template discount (its training files tie on F1, and the widest margin
# has none), and at that tuning the Fed's cut and the Gulf banks' cuts, which name the Fed, merge.
FED_AND_GULF_BANKS_MERGED = pytest.mark.xfail(
    strict=True,
    reason="issue 27: held out, 2025-09-19 merges the Fed's rate cut with the Gulf central banks' cuts that "
           "follow it (precision 0.965, purity 29/30); the template discount that keeps them apart is not "
           "chosen by cross-validation on the other files, which have no such pair to learn it from",
)


@pytest.fixture(scope="module")
def held_out() -> selection_eval.HeldOut:
    corpora = selection_eval.load_corpora(list(selection_eval.CORPORA))
    assert set(corpora) == {"made-up", "real"}, "both corpora are measured"
    return selection_eval.cross_validate(corpora)


@pytest.mark.parametrize("corpus", ["made-up", pytest.param("real", marks=FED_AND_GULF_BANKS_MERGED)])
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


def test_every_file_is_measured_with_a_tuning_fitted_without_it(held_out):
    files = {day.sequence for days in held_out.corpora.values() for day in days}

    assert set(held_out.folds) == files and len(files) >= 4
    for name, days in held_out.corpora.items():
        assert len(held_out.scores[name].leads) == len(days), f"{name}: every morning measured once"
