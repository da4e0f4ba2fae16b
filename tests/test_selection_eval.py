"""`make eval`'s held-out measure of the selection, on both labelled corpora (see docs/selection.md).

Each corpus file is measured with the tuning (same-event threshold, penalties)
fitted on all the other files, so a change that only fits the files it was
tried on fails here. The speed target is measured by `make eval` only: CPU time
on a machine shared with other work is no test's business.
"""

from __future__ import annotations

import pytest

from benchmarks import selection_eval


@pytest.fixture(scope="module")
def held_out() -> selection_eval.HeldOut:
    corpora = selection_eval.load_corpora(list(selection_eval.CORPORA))
    assert set(corpora) == {"made-up", "real"}, "both corpora are measured"
    return selection_eval.cross_validate(corpora)


@pytest.mark.parametrize("corpus", ["made-up", "real"])
def test_held_out_figures_meet_the_targets(held_out, corpus):
    scores = held_out.scores[corpus]

    assert scores.ratio("precision") >= 0.99, [m for m in scores.mistakes if "merged" in m]
    assert scores.ratio("recall") >= 0.93, [m for m in scores.mistakes if "split" in m]
    assert scores.chosen_pure == scores.chosen_total, [m for m in scores.mistakes if "chosen event" in m]
    assert all(scores.leads), [m for m in scores.mistakes if "lead" in m]


def test_every_file_is_measured_with_a_tuning_fitted_without_it(held_out):
    files = {day.sequence for days in held_out.corpora.values() for day in days}

    assert set(held_out.folds) == files and len(files) >= 4
    for name, days in held_out.corpora.items():
        assert len(held_out.scores[name].leads) == len(days), f"{name}: every morning measured once"

