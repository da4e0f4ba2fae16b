"""Editorial files steer the issue: pin, drop, lead, order, overrides, intro; broken ones stop the send."""

from __future__ import annotations

import json

import pytest

from .conftest import SAMPLE_DATE, run_cli

COPENHAGEN = "https://www.france24.com/ar/20170509-denmark-copenhagen-international-coalition-islamic-state-meeting-mattis"
KOREA = "https://www.france24.com/ar/20170509-south-korea-presidential-election-vote-moon-jae-in-favourite"
CHOLERA_TITLE = "منظمة الصحة العالمية تحذر من تفشي الكوليرا مجددا في اليمن"


@pytest.fixture
def editorial_file(env):
    def write(text: str):
        folder = env["NEWSLETTER_EDITORIAL_DIR"]
        from pathlib import Path

        path = Path(folder) / f"{SAMPLE_DATE.isoformat()}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


def rendered(env, tmp_path):
    out = tmp_path / "out"
    result = run_cli("render", "--date", SAMPLE_DATE.isoformat(), "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "issue.json").read_text(encoding="utf-8"))
    return manifest, (out / "issue.html").read_text(encoding="utf-8"), (out / "issue.txt").read_text(encoding="utf-8")


def test_pin_drop_lead_and_order_shape_the_issue(env, tmp_path, editorial_file):
    before, _, _ = rendered(env, tmp_path)
    urls = [s["url"] for s in before["stories"]]
    assert "كوبنهاغن" in before["stories"][0]["title"] and "كوريا الجنوبية" in before["stories"][1]["title"]
    assert KOREA not in urls, "by the rules, another outlet's Korea report is shown"
    cholera = "https://www.france24.com/ar/20170508-yemen-cholera-outbreak-sanaa-who-warning"
    editorial_file(f'''
lead = "{KOREA}"
order = ["{urls[4]}"]
pin = ["{cholera}"]
drop = ["{urls[2]}"]
''')
    after, html, text = rendered(env, tmp_path)
    titles = [s["title"] for s in after["stories"]]
    new_urls = [s["url"] for s in after["stories"]]
    assert new_urls[0] == KOREA, "the lead is the editor's, and so is the report shown for it"
    assert new_urls[1] == urls[4], "then the ordered ones"
    assert urls[2] not in new_urls and urls[2] not in html
    assert CHOLERA_TITLE in titles, "a pinned story is in even though it ranked below the limit"
    assert len(new_urls) == 6
    assert html.index(KOREA) < html.index(urls[0])
    assert text.index("كوريا الجنوبية") < text.index("كوبنهاغن")


def test_headline_override_and_intro(env, tmp_path, editorial_file):
    editorial_file(f'''
intro = "صباح الخير: يوم حافل & مزدحم <b>بالأخبار</b>"

[[override]]
url = "{COPENHAGEN}"
title = "التحالف يجتمع في كوبنهاغن"
summary = "ملخص كتبه المحرر."
''')
    manifest, html, text = rendered(env, tmp_path)
    assert manifest["stories"][0]["title"] == "التحالف يجتمع في كوبنهاغن"
    assert "التحالف يجتمع في كوبنهاغن" in html and "ملخص كتبه المحرر." in html
    assert "صباح الخير: يوم حافل &amp; مزدحم &lt;b&gt;بالأخبار&lt;/b&gt;" in html, "escaped like feed text"
    assert text.index("صباح الخير") < text.index("التحالف يجتمع في كوبنهاغن")
    assert manifest["subject"].endswith("التحالف يجتمع في كوبنهاغن")


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ('intro = "ok"\nlead = "https://nowhere.example/story"\n', 2, "unknown story URL"),
        ('intro = "ok"\n\npin = [ "unterminated\n', 3, "invalid TOML"),
        ('intro = "ok"\nheadline = "x"\n', 2, "unknown key `headline`"),
        (f'drop = ["{COPENHAGEN}"]\nlead = "{COPENHAGEN}"\n', 1, "both dropped and kept"),
        (f'intro = "ok"\n[[override]]\nurl = "{COPENHAGEN}"\ntitle = "  "\n', 3, "`title` must be text, not empty"),
        (f'[[override]]\nurl = "{COPENHAGEN}"\ntitle = 5\nsummary = "ملخص"\n', 2, "`title` must be text"),
    ],
    ids=["unknown-url", "bad-syntax", "unknown-key", "contradiction", "blank-headline", "headline-not-text"],
)
def test_a_broken_editorial_file_is_reported_with_file_and_line_and_send_refuses(
    env, store, smtp_server, editorial_file, content, line, message
):
    path = editorial_file(content)
    store.add_subscriber("reader@example.com")

    for command in (["render", "--out", str(path.parent / "out")], ["send"]):
        result = run_cli(*command, "--date", SAMPLE_DATE.isoformat(), env=env)
        assert result.returncode != 0
        assert f"{path}:{line}:" in result.stderr and message in result.stderr
        assert "Traceback" not in result.stderr
    assert smtp_server.handler.messages == [], "no issue goes out built from a broken editorial file"
    assert store.get_issue(SAMPLE_DATE.isoformat()) is None


def test_send_test_reaches_only_the_given_addresses_and_leaves_the_log_empty(env, store, smtp_server, editorial_file):
    store.add_subscriber("reader@example.com")
    result = run_cli("send", "--date", SAMPLE_DATE.isoformat(), "--test", "editor@example.com",
                     "--test", "chief@example.com", env=env)

    assert result.returncode == 0, result.stderr
    assert sorted(smtp_server.handler.recipients()) == ["chief@example.com", "editor@example.com"]
    assert all(m.parsed()["Subject"].startswith("[تجربة] ") for m in smtp_server.handler.messages)
    assert store.get_issue(SAMPLE_DATE.isoformat()) is None, "a test does not freeze the issue"
    editorial_file(f'lead = "{KOREA}"\n')
    real = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env=env)
    assert real.returncode == 0 and "Sent 1," in real.stdout, "the reader still gets the issue, once"
    issue = store.get_issue(SAMPLE_DATE.isoformat())
    assert issue.stories[0]["url"] == KOREA, "edits made after a test send count"


def _real_morning_and_quakes():
    from benchmarks.selection_eval import CORPUS, load_days
    from newsletter.issue.selection import select_stories

    day = next(d for d in load_days(CORPUS / "real") if str(d.date) == "2025-06-02")
    selection = select_stories(day.stories, window_end=day.window_end, max_stories=6)
    merged = [e for e in selection.events if {day.event_of(r) for r in e.reports} >= {"r10-quake-crete-a",
                                                                                        "r10-quake-crete-b"}]
    assert merged, "the words alone merge them (issue 27): otherwise these tests have nothing to show"
    second = [r.url for r in merged[0].reports if day.event_of(r) == "r10-quake-crete-b"]
    return day, selection, second


def _apply(tmp_path, selection, day, text: str, max_stories: int):
    from newsletter.issue.editorial import apply_editorial, parse_editorial

    issue = apply_editorial(selection, day.stories, parse_editorial(tmp_path / "2025-06-02.toml", text), max_stories)
    return issue, [{day.event_of(r) for r in e.reports} for e in issue.events]


def test_an_editor_tells_apart_two_real_quakes_the_words_merged(tmp_path):
    """Two quakes off Crete eight days apart (real coverage, benchmarks/corpus/real): the selection makes them
    one story; the editor names the second quake's reports and the issue tells both."""
    day, selection, second = _real_morning_and_quakes()
    apart = "apart = [%s]\n" % ", ".join(map(json.dumps, second))

    issue, labels = _apply(tmp_path, selection, day, apart, max_stories=7)

    assert not [found for found in labels if {"r10-quake-crete-a", "r10-quake-crete-b"} <= found], labels
    at = labels.index({"r10-quake-crete-b"})
    assert labels[at - 1] == {"r10-quake-crete-a"}, "told apart right after the story it was taken from"
    assert issue.events[at].reasons().startswith("told apart by the editor")

    # The issue was full: the least covered story goes, not the lead, a story the editor placed, or the one
    # told apart.
    lead = selection.events[0]
    last = selection.events[-1]
    ordered = 'lead = %s\norder = [%s]\n' % (json.dumps(lead.story.url), json.dumps(last.story.url))
    issue, labels = _apply(tmp_path, selection, day, apart + ordered, max_stories=6)
    assert len(issue.events) == 6 and issue.events[0] is lead and issue.events[1] is last
    gone = [d for d in issue.dropped if "after the editor's changes" in d.reason]
    assert gone, "one story over the limit"
    assert {"r10-quake-crete-b"} in labels
    others = [e for e in issue.events[2:] if e.editor_note != "told apart by the editor"]
    assert all(e.outlets >= len({d.story.outlet_key for d in gone}) for e in others), "the least covered goes"


def test_a_story_told_apart_follows_its_origin_when_the_editor_ordered_the_issue(tmp_path):
    """Clicking a lead or an arrow writes every shown story into `order`: a story told apart afterwards still
    comes right after the one it left, not at the bottom."""
    day, selection, second = _real_morning_and_quakes()
    urls = [e.story.url for e in selection.events]
    text = "lead = %s\norder = [%s]\napart = [%s]\n" % (json.dumps(urls[-1]), ", ".join(map(json.dumps, urls[:-1])),
                                                         ", ".join(map(json.dumps, second)))

    issue, labels = _apply(tmp_path, selection, day, text, max_stories=7)

    at = labels.index({"r10-quake-crete-b"})
    assert labels[at - 1] == {"r10-quake-crete-a"} and issue.events[0].story.url == urls[-1]


def test_select_gives_each_merged_reports_url_and_apart_makes_it_a_story(env, editorial_file):
    before = run_cli("select", "--date", SAMPLE_DATE.isoformat(), env=env).stdout.split("Left out")[0]
    lines = before.splitlines()
    merged = [lines[n + 1].strip() for n, line in enumerate(lines) if line.strip().startswith("+ same event:")]
    assert merged and all(url.startswith("https://") for url in merged), "each merged report with its URL"
    editorial_file(f'apart = ["{merged[0]}"]\n')

    after = run_cli("select", "--date", SAMPLE_DATE.isoformat(), env=env)

    assert after.returncode == 0, after.stderr
    chosen = after.stdout.split("Left out")[0].splitlines()
    story = next(n for n, line in enumerate(chosen) if line.strip() == merged[0])
    assert chosen[story - 1].lstrip()[:2].rstrip(".").isdigit(), "a story of its own, not a merged line"
    assert "told apart by the editor" in chosen[story + 1]


def test_each_part_told_apart_is_judged_against_the_issues_sent_before(tmp_path):
    """Yesterday's issue told Israel's first strike on Beirut's suburb; today's reports of the second strike
    merge with that strike's late reports, and the story is marked a follow-up. Told apart, the late reports
    are the follow-up, and the second strike is news again (real coverage, four days apart)."""
    from benchmarks.selection_eval import CORPUS, load_days
    from newsletter.issue.selection import SentStory, select_stories

    day = next(d for d in load_days(CORPUS / "real") if str(d.date) == "2025-06-02")
    strikes = {"r10-strike-dahiyeh-a", "r10-strike-dahiyeh-b"}

    def merged_strikes(selection):
        return next(e for e in selection.events if {day.event_of(r) for r in e.reports} == strikes)

    # Yesterday's issue showed the first strike's most central report, as the issue shows every story.
    alone = merged_strikes(select_stories(day.stories, window_end=day.window_end, max_stories=6))
    first = next(r for r in alone.central if day.event_of(r) == "r10-strike-dahiyeh-a")
    sent = [SentStory(first.url, first.title, first.summary, "2025-03-29")]
    selection = select_stories(day.stories, window_end=day.window_end, max_stories=6, sent=sent)
    merged = merged_strikes(selection)
    assert merged.follow_up_of == sent[0], "the words merge the two strikes and the first was sent (issue 27)"
    late = [r.url for r in merged.reports if day.event_of(r) == "r10-strike-dahiyeh-a"]

    issue, labels = _apply(tmp_path, selection, day, "apart = [%s]\n" % ", ".join(map(json.dumps, late)), 7)

    second = issue.events[labels.index({"r10-strike-dahiyeh-b"})]
    told_apart = issue.events[labels.index({"r10-strike-dahiyeh-a"})]
    assert second.follow_up_of is None and not second.repeats, "the second strike is news"
    assert told_apart.follow_up_of == sent[0] and "follow-up of" in told_apart.reasons()
