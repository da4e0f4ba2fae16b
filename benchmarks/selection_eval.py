"""`make eval`: how well the selection clusters, ranks and follows up, on labelled Arabic corpora, held out.

    python -m benchmarks.selection_eval [--corpus DIR ...] [--mistakes] [--write-docs] [--speed N]

Two corpora: benchmarks/corpus/ (consecutive mornings of made-up outlets'
feeds, with stories that continue from one day to the next labelled follow-up
or rehash) and benchmarks/corpus/real/ (mornings of real events told by real
outlets). Every report is labelled with its event, every day with its lead and
main events. Each morning's feeds are written out as RSS and read back through
`parse_feed`, as a real run reads them; the days of a file run in order, each
seeing what the day before sent.

The figures are held out: what makes reports one event (`Tuning`: the
same-event threshold, the measure and conflict penalties, the place
bonus, the size of groups kept apart) is chosen by leave-one-file-out
cross-validation over the files of both corpora. For each file, the tuning with
the best pairwise F1 on all the other files is chosen, then that file is
measured with it; a corpus's figures add up its files' held-out measures.
The ranking's home weight is the desk's own (`learn_home_weight`): for each
file, it is learned from the leads of the corpus's other files, as a desk's
is from the issues it sent before; the made-up corpus's desk and the real
corpus's are two desks.

Measured:
- clustering: pairwise and B-cubed precision, recall and F1 over distinct articles;
- purity: chosen events (the issue's) holding reports of one labelled event only;
- outlets: events whose outlet count is right (duplicates and syndication removed);
- lead: days whose first story is the labelled lead;
- main: labelled main events in the issue (all of them, on days with at most
  NEWSLETTER_MAX_STORIES of them);
- follow-ups: continuing stories marked follow-up, rehashes left out, and no new
  event mistaken for either;
- real days: each real event on the morning after the day it happened, those mornings one after
  another (twins days apart must stay apart, the later one told as new);
- bigger mornings: the clustering of each morning among the other files' reports
  (both corpora's, about 540 items), and among N synthetic items (`--speed`);
- speed: the selection over N synthetic items (`--speed 3000`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import json
import math
import random
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from itertools import combinations, takewhile
from pathlib import Path
from xml.sax.saxutils import escape

PROJECT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(PROJECT))

from newsletter.issue.feeds import Story, parse_feed, site_of  # noqa: E402
from newsletter.issue.ranking import Ranking, Standing, learn_home_weight  # noqa: E402
from newsletter.edition import FOLLOW_UP_DAYS  # noqa: E402
from newsletter.issue.selection import Event, SentStory, Tuning, joins_by_tuning, select_stories  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"
CORPORA = (CORPUS, CORPUS / "real")
DOCS_PAGE = PROJECT / "docs" / "selection.md"  # its "How well it works" section holds the table
MAX_STORIES = 6
TARGETS = {"precision": 0.99, "recall": 0.93, "purity": 1.0, "lead": 1.0}
SPEED_TARGET = 2.0  # CPU seconds for a 3,000-item morning
# The tunings cross-validation chooses among.
SAME_EVENT_THRESHOLDS = tuple(round(0.06 + 0.005 * n, 3) for n in range(49))
MEASURE_PENALTIES = (0.0, 0.05, 0.1, 0.2, 0.4, 1.0)
CONFLICT_PENALTIES = (0.0, 0.1, 0.2, 0.4)
TEMPLATE_DISCOUNTS = (0.0,)
PLACE_BONUSES = (0.0, 0.05, 0.1, 0.15)
APART_FROM = (0, 1, 2, 3, 4, 5)
TABLE_BEGIN = "<!-- selection-eval:begin -->"
TABLE_END = "<!-- selection-eval:end -->"


@dataclass
class Day:
    date: dt.date
    window_end: dt.datetime
    lead: str
    events: dict[str, dict]
    stories: list[Story]
    label: dict[int, str]  # id(story) -> event id
    repeats: set[int]  # id(story) of reports that only repeat what the day before told
    sequence: str  # the corpus file ("real/days-….json"): its days follow one another; another file's do not

    def event_of(self, story: Story) -> str:
        return self.label[id(story)]


def _rss(feed: dict, reports: list[dict]) -> bytes:
    items = []
    for report in sorted(reports, key=lambda r: r["position"]):
        published = dt.datetime.fromisoformat(report["published"].replace("Z", "+00:00"))
        image = f'<enclosure url="{escape(report["image"])}" type="image/jpeg" length="0"/>' if report.get("image") else ""
        items.append(
            f"<item><title>{escape(report['title'])}</title><link>{escape(report['url'])}</link>"
            f"<description>{escape(report['summary'])}</description>"
            f"<pubDate>{email.utils.format_datetime(published)}</pubDate>{image}</item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{escape(feed['title'])}</title><link>{escape(feed['site'])}</link>"
        f"<description>{escape(feed['title'])}</description>{''.join(items)}</channel></rss>"
    ).encode("utf-8")


def load_days(corpus: Path = CORPUS) -> list[Day]:
    """Every labelled morning, its feeds read through parse_feed."""
    feeds = json.loads((corpus / "feeds.json").read_text(encoding="utf-8"))["feeds"]
    days = []
    for path in sorted(corpus.glob("days-*.json")):
        for data in json.loads(path.read_text(encoding="utf-8"))["days"]:
            by_feed: dict[str, list[dict]] = defaultdict(list)
            for report in data["reports"]:
                by_feed[report["feed"]].append(report)
            stories, label, repeats = [], {}, set()
            for name, reports in sorted(by_feed.items()):
                parsed = parse_feed(_rss(feeds[name], reports), feeds[name]["url"])
                ordered = sorted(reports, key=lambda r: r["position"])
                if len(parsed) != len(ordered):
                    raise SystemExit(f"{path}: {name} on {data['date']}: {len(ordered)} reports, {len(parsed)} read")
                for story, report in zip(parsed, ordered, strict=True):
                    stories.append(story)
                    label[id(story)] = report["event"]
                    if report.get("repeats_sent"):
                        repeats.add(id(story))
            days.append(Day(
                dt.date.fromisoformat(data["date"]),
                dt.datetime.fromisoformat(data["window_end"].replace("Z", "+00:00")),
                data["lead"], {e["id"]: e for e in data["events"]}, stories, label, repeats,
                f"{path.parent.name}/{path.name}",
            ))
    return sorted(days, key=lambda d: d.date)


@dataclass
class Scores:
    pairs: Counter = field(default_factory=Counter)  # tp, fp, fn
    bcubed: list[tuple[float, float]] = field(default_factory=list)
    outlets_right: int = 0
    outlets_total: int = 0
    leads: list[bool] = field(default_factory=list)
    main_found: int = 0
    main_total: int = 0
    days_missing_main: list[str] = field(default_factory=list)
    chosen_pure: int = 0
    chosen_total: int = 0
    follow_ups: Counter = field(default_factory=Counter)
    mistakes: list[str] = field(default_factory=list)

    def ratio(self, name: str) -> float:
        tp, fp, fn = self.pairs["tp"], self.pairs["fp"], self.pairs["fn"]
        if name == "precision":
            return tp / (tp + fp) if tp + fp else 1.0
        if name == "precision with the crowd":  # the day's reports grouped with other mornings' count too
            wrong = fp + self.pairs["crowd"]
            return tp / (tp + wrong) if tp + wrong else 1.0
        if name == "recall":
            return tp / (tp + fn) if tp + fn else 1.0
        if name == "f1":
            p, r = self.ratio("precision"), self.ratio("recall")
            return 2 * p * r / (p + r) if p + r else 0.0
        if name == "lead":
            return sum(self.leads) / len(self.leads) if self.leads else 0.0
        if name == "purity":
            return self.chosen_pure / self.chosen_total if self.chosen_total else 1.0
        raise KeyError(name)

    def bcubed_scores(self) -> tuple[float, float, float]:
        p = sum(x for x, _ in self.bcubed) / len(self.bcubed)
        r = sum(y for _, y in self.bcubed) / len(self.bcubed)
        return p, r, 2 * p * r / (p + r)


def _real_outlet(story: Story, sites: set[str]) -> str:
    """The outlet that wrote an article: an aggregator's link names it by its site."""
    site = site_of(story.url)
    return site if site in sites else story.outlet_key


def _score_clustering(day: Day, scores: Scores, tuning: Tuning, crowd: list[Story] = ()) -> None:
    """All events, no limit, nothing sent before: how the day's reports were grouped (among `crowd`, other
    mornings' reports: a day's report grouped with one of them is a pair of different events too, counted
    apart as "crowd")."""
    everything = select_stories([*day.stories, *crowd], window_end=day.window_end, max_stories=10 ** 6, tuning=tuning)
    labelled = {id(s) for s in day.stories}
    for event in everything.events:
        ours = [r for r in event.reports if id(r) in labelled]
        if ours and len(ours) < len(event.reports):
            scores.pairs["crowd"] += len(ours) * (len(event.reports) - len(ours))
            scores.mistakes.extend(f"{day.date}: merged {day.event_of(r)} with another morning's report"
                                   for r in ours)
    events = [[r for r in e.reports if id(r) in labelled] for e in everything.events]
    events = [group for group in events if group]
    articles = [r for group in events for r in group]
    predicted = {id(r): n for n, group in enumerate(events) for r in group}
    for a, b in combinations(articles, 2):
        same_gold, same_predicted = day.event_of(a) == day.event_of(b), predicted[id(a)] == predicted[id(b)]
        if same_gold and same_predicted:
            scores.pairs["tp"] += 1
        elif same_predicted:
            scores.pairs["fp"] += 1
            scores.pairs["fp days apart"] += _days_apart(day, a, b)
            scores.mistakes.append(f"{day.date}: merged {day.event_of(a)} with {day.event_of(b)}")
        elif same_gold:
            scores.pairs["fn"] += 1
            scores.mistakes.append(f"{day.date}: split {day.event_of(a)}: «{a.title}» / «{b.title}»")
    gold_sizes = Counter(day.event_of(r) for r in articles)
    for group in events:
        labels = Counter(day.event_of(r) for r in group)
        for report in group:
            label = day.event_of(report)
            scores.bcubed.append((labels[label] / len(group), labels[label] / gold_sizes[label]))
    if crowd:
        return
    sites = {site_of(r.url) for r in day.stories if site_of(r.url) == r.outlet_key}
    for group in events:
        labels = {day.event_of(r) for r in group}
        if len(labels) == 1 and len(group) == gold_sizes[labels.pop()]:
            scores.outlets_total += 1
            real = {_real_outlet(r, sites) for r in group}
            shown = {r.outlet_key for r in group}
            scores.outlets_right += len(real) == len(shown)


def _days_apart(day: Day, a: Story, b: Story) -> bool:
    """Whether the labelled events of two reports happened on different days (no real morning's window
    holds both: the corpus's morning put them together)."""
    dates = {day.events[day.event_of(r)].get("happened") for r in (a, b)}
    return None not in dates and len(dates) == 2


def _score_issue(day: Day, sent: list[SentStory], scores: Scores, tuning: Tuning,
                 ranking: Ranking = Ranking()) -> list[SentStory]:
    """The issue as it would go out, after the days before it; returns what it sent."""
    issue = select_stories(day.stories, window_end=day.window_end, max_stories=MAX_STORIES, sent=sent, tuning=tuning,
                           ranking=ranking)
    shown = [day.event_of(e.story) for e in issue.events]
    for event in issue.events:
        labels = Counter(day.event_of(r) for r in event.reports)
        scores.chosen_total += 1
        scores.chosen_pure += len(labels) == 1
        if len(labels) > 1:
            scores.mistakes.append(f"{day.date}: a chosen event holds reports of {', '.join(sorted(labels))}")
    scores.leads.append(bool(shown) and shown[0] == day.lead)
    if shown and shown[0] != day.lead:
        scores.mistakes.append(f"{day.date}: lead is {shown[0]}, labelled {day.lead}")
    main = [i for i, e in day.events.items() if e.get("main")]
    found = [i for i in main if i in shown]
    scores.main_found += len(found)
    scores.main_total += len(main)
    if len(main) <= MAX_STORIES and len(found) < len(main):
        scores.days_missing_main.append(f"{day.date}: {', '.join(sorted(set(main) - set(found)))}")
    _score_follow_ups(day, sent, scores, tuning)
    return [SentStory(e.story.url, e.story.title, e.story.summary, day.date.isoformat()) for e in issue.events]


def _score_follow_ups(day: Day, sent: list[SentStory], scores: Scores, tuning: Tuning,
                      crowd: list[Story] = ()) -> list[Event]:
    """Whether each labelled event is told as new, marked a follow-up or left out as a rehash, as labelled (among
    `crowd`, whose reports are not judged); returns the events told that hold the day's labelled reports."""
    everything = select_stories([*day.stories, *crowd], window_end=day.window_end, max_stories=10 ** 6, sent=sent,
                                tuning=tuning)
    kept: dict[str, Event] = {}
    held: Counter = Counter()  # how many of its reports the event kept for each label holds
    for event in everything.events:
        labels = Counter(day.label[id(r)] for r in event.reports if id(r) in day.label)
        if not labels:
            continue
        # An event is judged as the labelled event of the report it shows (of its biggest labelled part, if
        # that report is another morning's), and a labelled event split in parts by its biggest: of two
        # labelled events merged, the one not shown counts as not told.
        label = day.label.get(id(event.story)) or labels.most_common(1)[0][0]
        if labels[label] > held[label]:
            kept[label], held[label] = event, labels[label]
    for event_id, labels in day.events.items():
        kind = labels.get("kind", "new")
        event = kept.get(event_id)
        if kind == "rehash":
            right = event is None
        elif kind == "follow-up":
            right = event is not None and event.follow_up_of is not None
        else:
            right = event is not None and event.follow_up_of is None
        scores.follow_ups[(kind, right)] += 1
        if not right:
            what = "left out" if event is None else ("marked follow-up" if event.follow_up_of else "kept as new")
            scores.mistakes.append(f"{day.date}: {event_id} ({kind}) was {what}")
    return list(kept.values())


def evaluate(days: list[Day], tuning: Tuning = Tuning(), scores: Scores | None = None,
             ranking: Ranking = Ranking()) -> Scores:
    """The measures of these days with this tuning and ranking (added to `scores` if given)."""
    scores = scores or Scores()
    sent: list[SentStory] = []
    for number, day in enumerate(days):
        if number and days[number - 1].sequence != day.sequence:
            sent = []  # another file's mornings: they do not continue these
        _score_clustering(day, scores, tuning)
        sent = sent + _score_issue(day, sent, scores, tuning, ranking)
    return scores


def desk_issue(day: Day, tuning: Tuning) -> list[Standing]:
    """What the store keeps of the issue the desk sent that morning, for its leads to be learned from:
    the labelled lead first (where the selection did not rank it first, the desk put it there), then
    the rest of the issue as ranked by coverage; [] when no event is labelled the lead."""
    events = select_stories(day.stories, window_end=day.window_end, max_stories=10 ** 6, tuning=tuning).events
    leads = [e for e in events if Counter(map(day.event_of, e.reports)).most_common(1)[0][0] == day.lead]
    if not leads:
        return []
    lead = max(leads, key=lambda e: len(e.reports))
    return [lead.standing, *(e.standing for e in events if e is not lead)][:MAX_STORIES]


def learned_ranking(days: list[Day], tuning: Tuning) -> Ranking:
    """The ranking a desk learns from the issues it sent on these mornings."""
    return Ranking(home_weight=learn_home_weight(desk_issue(day, tuning) for day in days))


def evaluate_in_crowd(days: list[Day], size: int, tuning: Tuning = Tuning(), scores: Scores | None = None,
                      crowd_from: list[Day] | None = None) -> Scores:
    """The clustering again, each morning's reports mixed into `size` synthetic items (a big morning)."""
    scores = scores or Scores()
    crowd_from = crowd_from or days
    synthetic = synthetic_morning(crowd_from, size)
    for day in days:
        crowd = _retimed(synthetic[:size - len(day.stories)], crowd_from[0].window_end, day.window_end)
        _score_clustering(day, scores, tuning, crowd)
    return scores


def on_their_real_days(day: Day) -> list[Day]:
    """The morning's events each on the morning after the day it happened (its label's `happened`), as a
    newsroom's feeds would have brought them: twins weeks apart no longer meet, and the later one comes
    while the earlier one is in the last week's issues. [] when the events carry no date (the made-up
    corpus's mornings are already consecutive)."""
    happened = {event: labels.get("happened") for event, labels in day.events.items()}
    if None in happened.values():
        return []
    by_date: dict[str, list[Story]] = defaultdict(list)
    for story in day.stories:
        by_date[happened[day.event_of(story)]].append(story)
    mornings = []
    for date, stories in sorted(by_date.items()):
        morning = dt.date.fromisoformat(date) + dt.timedelta(days=1)
        window_end = dt.datetime.combine(morning, day.window_end.timetz())
        moved = _retimed(stories, day.window_end, window_end)
        label = {id(new): day.event_of(old) for new, old in zip(moved, stories)}
        repeats = {id(new) for new, old in zip(moved, stories) if id(old) in day.repeats}
        events = {event: labels for event, labels in day.events.items() if happened[event] == date}
        mornings.append(Day(morning, window_end, day.lead if day.lead in events else "", events, moved, label,
                            repeats, day.sequence))
    return mornings


def evaluate_on_real_days(days: list[Day], tuning: Tuning = Tuning(), scores: Scores | None = None,
                          crowd_from: list[Day] = ()) -> Scores:
    """Each morning's clustering and follow-ups with its events on their real days (`on_their_real_days`), in
    order, each of those mornings seeing the week before it: its events were all sent, each with its most
    central labelled report (the harder case for telling a new event from one told before). Each such
    morning is among the reports of another file's morning of `crowd_from`, a different one each day:
    other news, as a newsroom's morning has (the same crowd every day would come back as repeats of what
    was sent with it)."""
    scores = scores or Scores()
    for day in days:
        sent: list[SentStory] = []
        others = [other for other in crowd_from if other.sequence != day.sequence]
        for number, morning in enumerate(on_their_real_days(day)):
            crowd = _moved(others[number % len(others)], morning) if others else []
            recent = [s for s in sent if (morning.date - dt.date.fromisoformat(s.issue_date)).days <= FOLLOW_UP_DAYS]
            _score_clustering(morning, scores, tuning, crowd)
            for event in _score_follow_ups(morning, recent, scores, tuning, crowd):
                shown = next(r for r in event.central if id(r) in morning.label)
                sent.append(SentStory(shown.url, shown.title, shown.summary, morning.date.isoformat()))
    return scores


def crowd_of_other_files(day: Day, days: list[Day]) -> list[Story]:
    """The reports of the files other than `day`'s among `days`, moved into its window: a bigger morning of
    real news in Arabic, whose template words are common, as they are in a newsroom's feeds."""
    return [s for other in days if other.sequence != day.sequence for s in _moved(other, day)]


def _moved(other: Day, day: Day) -> list[Story]:
    """Another morning's reports moved into `day`'s window; reports without a time are left out."""
    return _retimed([s for s in other.stories if s.published], other.window_end, day.window_end)


def _retimed(stories: list[Story], source_end: dt.datetime, target_end: dt.datetime) -> list[Story]:
    """Reports moved from a window ending at `source_end` into one ending at `target_end`, each as long before
    its end as it was; reports without a time as they are."""
    return [replace(s, published=target_end - (source_end - s.published)) if s.published else s for s in stories]


# --- cross-validation ----------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one tuning made of one day's reports."""

    pairs: Counter  # pairwise tp, fp, fn
    # The margin between labelled different events: how far the threshold is from the closest join it
    # decides right, on either side: below it, the closest join kept out that would have put different
    # events together (down to the lowest threshold tried); above it, the closest join made of one event's
    # reports only. Joins it decides wrong (errors the pairs count already) are left out, as in a soft margin.
    margin: float


@dataclass
class Joins:
    """What each of a tuning's joins (in order, `joins_by_tuning`) did, with the pairs made so far."""

    averages: list[float] = field(default_factory=list)
    one_event: list[bool] = field(default_factory=list)  # whether each join is of one event's reports only
    together: list[int] = field(default_factory=lambda: [0])  # pairs in one group after each join (0: none yet)
    same_event: list[int] = field(default_factory=lambda: [0])  # ... of which labelled one event

    def outcome(self, threshold: float, gold_pairs: int, lowest: float) -> Outcome:
        """The day's pairs and margin at `threshold`: the joins before the first one below it made the
        groups (a join below it stops average linkage there; a rule that keeps two groups apart may let a
        later join come out above it, never made at this threshold)."""
        made = sum(1 for _ in takewhile(lambda a: a >= threshold, self.averages))
        tp, together = self.same_event[made], self.together[made]
        joined, left = zip(self.averages, self.one_event), zip(self.averages[made:], self.one_event[made:])
        kept_out = max((a for a, one in left if not one and a < threshold), default=lowest)
        closest = min((a for a, one in list(joined)[:made] if one), default=math.inf)
        return Outcome(Counter(tp=tp, fp=together - tp, fn=gold_pairs - tp),
                       min(threshold - kept_out, closest - threshold))


def _joins(articles: list[Story], merges: list[tuple[float, int, int]], day: Day) -> Joins:
    """Which joins put reports of labelled different events together, and the pairs each made. Which
    joins those are does not depend on the threshold: it only cuts the list."""
    parent = list(range(len(articles)))
    labels = [Counter([day.event_of(a)]) for a in articles]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    joins = Joins()
    for average, i, j in merges:
        a, b = root(i), root(j)
        joins.one_event.append(len(labels[a]) == 1 and labels[a].keys() == labels[b].keys())
        joins.averages.append(average)
        joins.together.append(joins.together[-1] + labels[a].total() * labels[b].total())
        joins.same_event.append(joins.same_event[-1] + sum(n * labels[b][event] for event, n in labels[a].items()))
        parent[a] = b
        labels[b] += labels[a]
    return joins


def tuning_counts(day: Day) -> dict[Tuning, Outcome]:
    """The day's pairwise counts and margin under every tuning cross-validation chooses among."""
    articles = [r for e in select_stories(day.stories, window_end=day.window_end, max_stories=10 ** 6).events
                for r in e.reports]  # the reports that reach clustering: in the window, one per article
    gold_pairs = sum(n * (n - 1) // 2 for n in Counter(map(day.event_of, articles)).values())
    lowest = min(SAME_EVENT_THRESHOLDS)
    grid = [Tuning(measure_penalty=measure, conflict_penalty=conflict, template_discount=template, place_bonus=bonus,
                   apart_from=apart)
            for template in TEMPLATE_DISCOUNTS for measure in MEASURE_PENALTIES
            for conflict in CONFLICT_PENALTIES for bonus in PLACE_BONUSES for apart in APART_FROM]
    counts = {}
    for weights, merges in joins_by_tuning(articles, grid, lowest):
        joins = _joins(articles, merges, day)
        for threshold in SAME_EVENT_THRESHOLDS:
            counts[replace(weights, same_event=threshold)] = joins.outcome(threshold, gold_pairs, lowest)
    return counts


def _f1(pairs: Counter) -> float:
    tp, fp, fn = pairs["tp"], pairs["fp"], pairs["fn"]
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def fit(counts: list[dict[Tuning, Outcome]]) -> Tuning:
    """The tuning with the best pairwise F1 over these days.

    Ties are common (the F1 is flat over a range of values). Among the tied
    tunings, whatever parameter they differ in, the one with the widest margin
    between labelled different events is taken (max margin): the smallest, over
    the days, of `Outcome.margin`, the distance from its threshold to the
    closest join it decides right. This rule was chosen after seeing the ties
    (docs/selection.md says so). Exact ties left (tunings that group the same
    way) go to the smallest conflict penalty, then the smallest template
    discount (the weighting closest to plain TF-IDF), the groups-apart rule off, else
    its weakest (the biggest groups), then the middle (lower middle) of the place
    bonuses, of the measure penalties and of the thresholds.
    """
    totals: dict[Tuning, Counter] = defaultdict(Counter)
    margins: dict[Tuning, float] = {}
    for day in counts:
        for tuning, outcome in day.items():
            totals[tuning] += outcome.pairs
            margins[tuning] = min(margins.get(tuning, math.inf), outcome.margin)
    best = max(round(_f1(pairs), 6) for pairs in totals.values())
    winners = [t for t, pairs in totals.items() if round(_f1(pairs), 6) == best]
    widest = max(round(margins[t], 6) for t in winners)
    winners = [t for t in winners if round(margins[t], 6) == widest]
    conflict = min(t.conflict_penalty for t in winners)
    template = min(t.template_discount for t in winners if t.conflict_penalty == conflict)
    winners = [t for t in winners if (t.conflict_penalty, t.template_discount) == (conflict, template)]
    apart = min((t.apart_from for t in winners), key=lambda n: (n != 0, -n))  # off, else the weakest rule
    winners = [t for t in winners if t.apart_from == apart]
    bonus = _middle([t.place_bonus for t in winners])
    measure = _middle([t.measure_penalty for t in winners if t.place_bonus == bonus])
    threshold = _middle([t.same_event for t in winners if (t.place_bonus, t.measure_penalty) == (bonus, measure)])
    return Tuning(threshold, measure, conflict, template, bonus, apart)


def _middle(values: list[float]) -> float:
    ordered = sorted(set(values))
    return ordered[(len(ordered) - 1) // 2]


@dataclass
class HeldOut:
    """Each corpus's measures, every file measured with the tuning fitted on all the other files."""

    corpora: dict[str, list[Day]]
    scores: dict[str, Scores]
    folds: dict[str, Tuning]  # file -> the tuning it was measured with
    everything: Tuning  # fitted on every file: the one to ship
    home_weights: dict[str, float] = field(default_factory=dict)  # file -> the weight its desk learned without it
    # corpus -> the best pairwise precision and its recall any tuning reaches on the corpus itself (recall at
    # least the target): not held out, what the features allow at best
    ceilings: dict[str, tuple[float, float]] = field(default_factory=dict)


def cross_validate(corpora: dict[str, list[Day]]) -> HeldOut:
    days = [day for corpus in corpora.values() for day in corpus]
    counts = [tuning_counts(day) for day in days]
    files = sorted({day.sequence for day in days})
    scores = {name: Scores() for name in corpora}
    folds, home_weights = {}, {}
    for held_out in files:
        folds[held_out] = tuning = fit([c for c, day in zip(counts, days) if day.sequence != held_out])
        for name, corpus in corpora.items():
            tested = [day for day in corpus if day.sequence == held_out]
            if tested:
                ranking = learned_ranking([day for day in corpus if day.sequence != held_out], tuning)
                home_weights[held_out] = ranking.home_weight
                evaluate(tested, tuning, scores[name], ranking)
    ceilings = {name: ceiling([c for c, day in zip(counts, days) if any(day is d for d in corpus)])
                for name, corpus in corpora.items()}
    return HeldOut(corpora, scores, folds, fit(counts), home_weights, ceilings)


def ceiling(counts: list[dict[Tuning, Outcome]]) -> tuple[float, float]:
    """The best pairwise precision, and its recall, that any tuning tried reaches on these days with recall at
    least the target's: fitted on the days measured, an upper bound of what fitting can do with these features."""
    totals: dict[Tuning, Counter] = defaultdict(Counter)
    for day in counts:
        for tuning, outcome in day.items():
            totals[tuning] += outcome.pairs
    scored = [Scores(pairs=pairs) for pairs in totals.values()]
    return max(((s.ratio("precision"), s.ratio("recall")) for s in scored if s.ratio("recall") >= TARGETS["recall"]),
               default=(0.0, 0.0))


def crowd_scores(held_out: HeldOut, size: int) -> dict[str, Scores]:
    """Each corpus's clustering among `size` synthetic items, each file with its held-out tuning (the items
    are the ones the speed is measured on: made of the first corpus's everyday words)."""
    crowd_from = next(iter(held_out.corpora.values()))
    scores = {}
    for name, corpus in held_out.corpora.items():
        scores[name] = Scores()
        for held_out_file, tuning in held_out.folds.items():
            tested = [day for day in corpus if day.sequence == held_out_file]
            if tested:
                evaluate_in_crowd(tested, size, tuning, scores[name], crowd_from=crowd_from)
    return scores


def real_days_scores(held_out: HeldOut) -> dict[str, Scores]:
    """Each corpus's mornings with their events on their real days, among other files' mornings
    (`evaluate_on_real_days`), each file with its held-out tuning; a corpus whose events carry no date is
    left out."""
    days = [day for corpus in held_out.corpora.values() for day in corpus]
    scores = {}
    for name, corpus in held_out.corpora.items():
        scores[name] = Scores()
        for day in corpus:
            evaluate_on_real_days([day], held_out.folds[day.sequence], scores[name], days)
    return {name: s for name, s in scores.items() if s.pairs or s.follow_ups}


def other_files_scores(held_out: HeldOut) -> tuple[dict[str, Scores], int]:
    """Each corpus's clustering when each morning's reports come among all the reports of the other files
    (both corpora's, `crowd_of_other_files`). Each file with its held-out tuning; only the labels of the
    morning measured are read. Returns the scores and the median size of those mornings."""
    days = [day for corpus in held_out.corpora.values() for day in corpus]
    scores, sizes = {}, []
    for name, corpus in held_out.corpora.items():
        scores[name] = Scores()
        for day in corpus:
            crowd = crowd_of_other_files(day, days)
            sizes.append(len(day.stories) + len(crowd))
            _score_clustering(day, scores[name], held_out.folds[day.sequence], crowd)
    return scores, sorted(sizes)[len(sizes) // 2]


def synthetic_morning(days: list[Day], size: int, seed: int = 7) -> list[Story]:
    """`size` items shaped like a big morning: reports of made-up events, 1–6 outlets each.

    Words come in three kinds, as in real news: the corpus's everyday words (those
    used on every one of its mornings: الرئيس, الحكومة…), a made-up vocabulary of
    20,000 words used by Zipf's law, and 6 names of each event's own. An event's
    reports share most of its words.
    """
    rng = random.Random(seed)
    counts = Counter(w for day in days for s in day.stories for w in f"{s.title} {s.summary}".split())
    mornings = [{w for s in day.stories for w in f"{s.title} {s.summary}".split()} for day in days]
    everyday = set.intersection(*mornings)
    common, common_weights = zip(*((w, counts[w]) for w in sorted(everyday)))
    letters = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"

    def made_up_word() -> str:
        return "".join(rng.choices(letters, k=rng.randint(3, 8)))

    vocabulary = [made_up_word() for _ in range(20_000)]
    zipf = [1 / rank for rank in range(1, len(vocabulary) + 1)]
    stories, end = [], days[0].window_end
    outlets = sorted({s.outlet_key for s in days[0].stories}) + [f"outlet{n}.example" for n in range(40)]
    while len(stories) < size:
        core = rng.choices(vocabulary, zipf, k=12) + [made_up_word() for _ in range(6)]
        for n in range(rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 6])):
            text = ([w for w in core if rng.random() < 0.7] + rng.choices(common, common_weights, k=8)
                    + rng.choices(vocabulary, zipf, k=3))
            rng.shuffle(text)
            outlet = rng.choice(outlets)
            stories.append(Story(
                url=f"https://{outlet}/{len(stories)}", title=" ".join(text[:12]), summary=" ".join(text[12:]),
                published=end - dt.timedelta(minutes=rng.randrange(1, 1400)), source=outlet,
                position=rng.randrange(1, 60), outlet=outlet,
            ))
    return stories[:size]


def time_selection(days: list[Day], size: int, runs: int = 5) -> float:
    """Median CPU seconds to select from `size` items (CPU time: other work on the machine does not count)."""
    stories = synthetic_morning(days, size)
    timings = []
    for _ in range(runs):
        start = time.process_time()
        select_stories(stories, window_end=days[0].window_end, max_stories=MAX_STORIES)
        timings.append(time.process_time() - start)
    return sorted(timings)[len(timings) // 2]


def _corpus_line(name: str, days: list[Day]) -> str:
    events = sum(len(d.events) for d in days)
    articles = sum(len(d.stories) for d in days)
    outlets = len({s.outlet_key for d in days for s in d.stories})
    files = len({d.sequence for d in days})
    return (f"- {name}: {len(days)} mornings in {files} file(s) ({days[0].date} to {days[-1].date}), {events} events, "
            f"{articles} feed items, {outlets} outlets.")


def _row(measure: str, values: list[str], target: str = "") -> str:
    return f"| {measure} | {' | '.join(values)} | {target} |"


def _amid(scores: Scores) -> str:
    """A crowd row's figures: among the morning's own reports, then counting their merges with the crowd."""
    return (f"{scores.ratio('precision'):.3f} / {scores.ratio('recall'):.3f} "
            f"({scores.ratio('precision with the crowd'):.3f})")


def _count(follow: Counter, kind: str) -> str:
    total = follow[(kind, True)] + follow[(kind, False)]
    return f"{follow[(kind, True)]}/{total}" if total else "–"


def report(held_out: HeldOut, speed: tuple[int, float] | None, crowd: dict[str, Scores] | None = None,
           other_files: tuple[dict[str, Scores], int] | None = None, real_days: dict[str, Scores] | None = None) -> str:
    names = list(held_out.corpora)
    scores = [held_out.scores[n] for n in names]
    bcubed = [s.bcubed_scores() for s in scores]
    lines = [
        "Corpora (each file held out in turn: its figures come from the tuning fitted on all the other files):",
        *(_corpus_line(n, held_out.corpora[n]) for n in names),
        "",
        _row("held out", names, "target"),
        "|---|" + "---:|" * len(names) + "---:|",
        _row("clustering precision (pairwise)", [f"{s.ratio('precision'):.3f}" for s in scores], f"≥ {TARGETS['precision']}"),
        _row("clustering recall (pairwise)", [f"{s.ratio('recall'):.3f}" for s in scores], f"≥ {TARGETS['recall']}"),
        _row("clustering F1 (pairwise)", [f"{s.ratio('f1'):.3f}" for s in scores]),
        _row("… wrong pairs joining events that happened on different days (no real morning holds both)",
             [f"{s.pairs['fp days apart']}/{s.pairs['fp']}" if s.pairs["fp"] else "–" for s in scores]),
        _row(f"best precision / recall any tuning reaches with recall ≥ {TARGETS['recall']}, fitted on the corpus "
             "itself (not held out: what the features allow)",
             [f"{held_out.ceilings[n][0]:.3f} / {held_out.ceilings[n][1]:.3f}" if n in held_out.ceilings else "–"
              for n in names]),
        _row("B-cubed precision / recall", [f"{p:.3f} / {r:.3f}" for p, r, _ in bcubed]),
        _row("chosen events holding one labelled event only (purity)",
             [f"{s.chosen_pure}/{s.chosen_total}" for s in scores], "all"),
        _row("right lead", [f"{sum(s.leads)}/{len(s.leads)} days" for s in scores], "every day"),
        _row(f"labelled main events in the issue (≤ {MAX_STORIES} stories)",
             [f"{s.main_found}/{s.main_total}" for s in scores], "all"),
        _row("events whose outlets are counted right", [f"{s.outlets_right}/{s.outlets_total}" for s in scores], "all"),
        _row("follow-ups marked as such", [_count(s.follow_ups, "follow-up") for s in scores]),
        _row("rehashes left out", [_count(s.follow_ups, "rehash") for s in scores]),
        _row("new events kept as new", [_count(s.follow_ups, "new") for s in scores]),
    ]
    if real_days:
        on_days = [real_days.get(n) for n in names]
        lines += [
            _row("each event on the morning after its real day, among another file's morning: precision / recall "
                 "(precision counting merges with that morning's reports)",
                 [_amid(s) if s else "–" for s in on_days]),
            _row("… events told as new (not a follow-up or repeat of the week's issues; of two merged, the one "
                 "shown)", [_count(s.follow_ups, "new") if s else "–" for s in on_days]),
        ]
    if other_files:
        lines.append(_row(f"precision / recall, each morning among the other files' reports (about {other_files[1]} "
                          "items; precision counting merges with them)", [_amid(other_files[0][n]) for n in names]))
    if speed and crowd:
        lines.append(_row(f"precision / recall, each morning among {speed[0]:,} synthetic items (precision counting "
                          "merges with them)", [_amid(crowd[n]) for n in names]))
    if speed:
        lines.append(_row(f"selection over {speed[0]:,} items (CPU, median of 5)", [f"{speed[1]:.2f} s", ""],
                          f"< {SPEED_TARGET:g} s") if len(names) == 2 else
                     _row(f"selection over {speed[0]:,} items (CPU, median of 5)", [f"{speed[1]:.2f} s"] * len(names),
                          f"< {SPEED_TARGET:g} s"))
    lines += ["", "Tuning chosen for each held-out file (same-event threshold, measure penalty, conflict penalty, "
              "template discount, place bonus, groups apart from):",
              *(f"- {name}: {_tuning(t)}" for name, t in held_out.folds.items()),
              f"- fitted on every file (shipped): {_tuning(held_out.everything)}",
              "", "Home weight each held-out file's desk learned from the leads of its corpus's other files (outlets a "
              "story about an Arab League country counts more):",
              *(f"- {name}: {weight:g}" for name, weight in held_out.home_weights.items())]
    return "\n".join(lines)


def _tuning(tuning: Tuning) -> str:
    return (f"{tuning.same_event:.3f}, {tuning.measure_penalty:.2f}, {tuning.conflict_penalty:.2f}, "
            f"{tuning.template_discount:.2f}, {tuning.place_bonus:.2f}, {tuning.apart_from}")


def missed_targets(held_out: HeldOut, speed: tuple[int, float] | None = None) -> list[str]:
    """The held-out targets a corpus misses, in words (none: all met)."""
    missed = []
    for name, scores in held_out.scores.items():
        for measure, target in TARGETS.items():
            if scores.ratio(measure) < target:
                missed.append(f"{name}: {measure} {scores.ratio(measure):.3f} < {target}")
        missed += [f"{name}: main event missing on {day}" for day in scores.days_missing_main]
    if speed and speed[1] >= SPEED_TARGET:
        missed.append(f"selection over {speed[0]:,} items took {speed[1]:.2f} s of CPU")
    return missed


def load_corpora(folders: list[Path]) -> dict[str, list[Day]]:
    """Each corpus folder's days, by its name ("made-up" for benchmarks/corpus); folders without days left out."""
    corpora = {}
    for folder in folders:
        if list(folder.glob("days-*.json")):
            corpora["made-up" if folder.resolve() == CORPUS.resolve() else folder.name] = load_days(folder)
    return corpora


def write_table(table: str, page: Path = DOCS_PAGE) -> None:
    """Replace the table between the markers of `page` (docs/selection.md) with this one."""
    text = page.read_text(encoding="utf-8")
    block = f"{TABLE_BEGIN}\n{table}\n{TABLE_END}"
    pattern = re.compile(re.escape(TABLE_BEGIN) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{page}: no {TABLE_BEGIN} … {TABLE_END} block to update")
    page.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, action="append", help="a corpus folder (default: both corpora)")
    parser.add_argument("--mistakes", action="store_true", help="list every wrong pair, lead and follow-up")
    parser.add_argument("--speed", type=int, default=3000, metavar="N", help="time the selection over N items (0: skip)")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/selection.md")
    args = parser.parse_args(argv)
    corpora = load_corpora(args.corpus or list(CORPORA))
    held_out = cross_validate(corpora)
    made_up = next(iter(corpora.values()))
    speed = (args.speed, time_selection(made_up, args.speed)) if args.speed else None
    crowd = crowd_scores(held_out, args.speed) if args.speed else None
    real_days = real_days_scores(held_out)
    table = report(held_out, speed, crowd, other_files_scores(held_out), real_days)
    print(table)
    if args.mistakes:
        for name, scores in held_out.scores.items():
            print("\n".join(["", f"Mistakes ({name}):", *dict.fromkeys(scores.mistakes)]))
        for name, scores in real_days.items():
            print("\n".join(["", f"Mistakes ({name}, each event on its real day):", *dict.fromkeys(scores.mistakes)]))
    missed = missed_targets(held_out, speed)
    for line in missed:
        print(f"target missed: {line}")
    if held_out.everything != Tuning():
        print(f"note: the shipped {Tuning()} is not the one fitted on every file, {held_out.everything}")
    if args.write_docs:
        write_table(table)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
