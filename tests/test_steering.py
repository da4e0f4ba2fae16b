"""Steering by clicking: each change writes the editorial file, keeps its comments, and can be undone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from newsletter.issue.editorial import EditorialError, load_editorial
from newsletter.issue.steering import NO_FILE, Change, StaleVersion, can_undo, current_version, steer, undo

DAY = dt.date(2017, 5, 9)
A, B, C, D = (f"https://outlet.example/world/{n}" for n in "abcd")
OFFERED = {A, B, C, D}
SHOWN = [A, B, C]
HAND_WRITTEN = '''# The night desk's notes for the morning
intro = "صباح الخير"  # keep it short

drop = ["https://outlet.example/world/d"]  # a rumour
'''


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path / "editorial"


def _file(folder: Path) -> str:
    return (folder / f"{DAY.isoformat()}.toml").read_text(encoding="utf-8")


def test_each_change_writes_the_file_the_cli_reads_keeping_the_editors_comments(folder):
    folder.mkdir()
    (folder / f"{DAY.isoformat()}.toml").write_text(HAND_WRITTEN, encoding="utf-8")
    version = current_version(folder, DAY)

    version = steer(folder, DAY, Change("lead", C), version, SHOWN, OFFERED)
    version = steer(folder, DAY, Change("down", C), version, [C, A, B], OFFERED)
    version = steer(folder, DAY, Change("edit", B, title='عنوان "جديد" <b>', summary="ملخص"), version, [A, C, B],
                    OFFERED)
    version = steer(folder, DAY, Change("pin", D), version, [A, C, B], OFFERED)
    version = steer(folder, DAY, Change("intro", intro="افتتاحية اليوم"), version, [A, C, B, D], OFFERED)

    text = _file(folder)
    assert "# The night desk's notes for the morning" in text and "# keep it short" in text
    editorial = load_editorial(folder, DAY)
    assert (editorial.lead, editorial.order) == (A, [C, B])
    assert editorial.pin == [D] and editorial.drop == [], "pinning a dropped story takes it out of drop"
    assert editorial.overrides[B].title == 'عنوان "جديد" <b>', "kept verbatim: the email escapes it"
    assert editorial.intro == "افتتاحية اليوم"
    assert version == current_version(folder, DAY)


def test_a_change_made_on_an_older_version_is_refused_with_the_fresh_one(folder):
    first = current_version(folder, DAY)
    assert first == NO_FILE
    mine = steer(folder, DAY, Change("drop", B), first, SHOWN, OFFERED)
    before = _file(folder)

    with pytest.raises(StaleVersion) as stale:
        steer(folder, DAY, Change("lead", C), first, SHOWN, OFFERED)  # the second editor's page was older

    assert stale.value.current == mine and _file(folder) == before, "nothing overwritten"


def test_changes_are_undone_one_by_one_back_to_no_file(folder):
    v0 = current_version(folder, DAY)
    v1 = steer(folder, DAY, Change("drop", B), v0, SHOWN, OFFERED)
    v2 = steer(folder, DAY, Change("edit", A, title="عنوان"), v1, [A, C], OFFERED)
    assert can_undo(folder, DAY)

    assert undo(folder, DAY, v2) == v1
    assert load_editorial(folder, DAY).overrides == {}
    assert undo(folder, DAY, v1) == NO_FILE
    assert load_editorial(folder, DAY) is None and not can_undo(folder, DAY)
    with pytest.raises(EditorialError, match="nothing to undo"):
        undo(folder, DAY, NO_FILE)


@pytest.mark.parametrize("change, message", [
    (Change("pin", "https://elsewhere.example/x"), "unknown story URL https://elsewhere.example/x: no feed offers"),
    (Change("edit", A, title="ع" * 1_000_000), "the headline is 1,000,000 characters long"),
    (Change("intro", intro="ص" * 5000), "the intro is 5,000 characters long"),
    (Change("explode", A), "unknown change 'explode'"),
    (Change("up", D), "is not in the issue"),
])
def test_a_change_the_file_would_reject_is_refused_and_nothing_is_written(folder, change, message):
    version = steer(folder, DAY, Change("drop", B), NO_FILE, SHOWN, OFFERED)
    before = _file(folder)
    with pytest.raises(EditorialError, match=message):
        steer(folder, DAY, change, version, SHOWN, OFFERED)
    assert _file(folder) == before


def test_a_broken_hand_edit_is_reported_and_the_buttons_wait(folder):
    folder.mkdir()
    (folder / f"{DAY.isoformat()}.toml").write_text('lead = "unterminated\n', encoding="utf-8")
    with pytest.raises(EditorialError, match="fix the file first"):
        steer(folder, DAY, Change("drop", B), current_version(folder, DAY), SHOWN, OFFERED)


def test_an_editorial_folder_that_cannot_be_written_is_one_clear_line(folder):
    folder.mkdir()
    (folder / ".history").write_text("a file where the history folder should be", encoding="utf-8")
    with pytest.raises(EditorialError, match="cannot write the editorial folder"):
        steer(folder, DAY, Change("drop", B), NO_FILE, SHOWN, OFFERED)
    assert load_editorial(folder, DAY) is None, "nothing written"


def test_pinning_more_stories_than_the_issue_holds_is_refused_as_the_file_would_be(folder):
    version = steer(folder, DAY, Change("pin", A), NO_FILE, SHOWN, OFFERED, max_stories=2)
    version = steer(folder, DAY, Change("pin", B), version, SHOWN, OFFERED, max_stories=2)
    with pytest.raises(EditorialError, match="3 stories pinned, more than NEWSLETTER_MAX_STORIES=2"):
        steer(folder, DAY, Change("pin", C), version, SHOWN, OFFERED, max_stories=2)
    assert load_editorial(folder, DAY).pin == [A, B]


def test_telling_reports_apart_gathers_them_in_the_file_and_together_puts_one_back(folder):
    version = steer(folder, DAY, Change("apart", B), NO_FILE, SHOWN, OFFERED)
    version = steer(folder, DAY, Change("apart", C), version, SHOWN, OFFERED)
    history = sorted((folder / ".history").rglob("*"))

    again = steer(folder, DAY, Change("apart", B), version, SHOWN, OFFERED)

    assert again == version and sorted((folder / ".history").rglob("*")) == history, "no change, no undo step"
    assert load_editorial(folder, DAY).apart == [B, C], "each report named once: together, another story"
    steer(folder, DAY, Change("together", B), version, SHOWN, OFFERED)
    assert load_editorial(folder, DAY).apart == [C]
