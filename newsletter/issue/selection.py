"""Choose the day's main international stories from everything the feeds offered.

Reports of one event by several outlets are merged: average-linkage clustering
of TF-IDF vectors (`similarity`), which does not chain distinct events through
shared template words as single linkage did; two reports about different
countries never make one pair, and count against joining their groups. Events are ranked by how many outlets (not feeds) cover
them, then by the best position any outlet gave them, then by recency; the
lead among the chosen is the desk's (`ranking`: a home-region weight learned
from the leads it sent). An event
an earlier issue told already is left out, unless today's reports bring news:
then it returns as a follow-up. What is one event (`Tuning`) is chosen by
cross-validation on the labelled corpora in benchmarks/corpus (`make eval`).
"""

from __future__ import annotations

import copy
import datetime as dt
import gc
import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from .feeds import Story, link_key, site_of
from .ranking import Ranking, Standing, countries_most_about
from .similarity import Space, describe, normalise_arabic

__all__ = ["Dropped", "Event", "Ranking", "Selection", "SentStory", "Tuning", "cluster_events",
           "joins_by_tuning", "normalise_arabic", "select_stories", "selection_json"]

# Two groups of reports are one event when their reports' average similarity reaches this.
SAME_EVENT_THRESHOLD = 0.115
# Groups of this many reports or more, mostly about different countries, stay apart (`Tuning.apart_from`).
GROUPS_APART_FROM = 0
# Pairs below this are left out (as 0) of the averages: they are most pairs, and nearly 0.
_PAIR_FLOOR = 0.05
# An event continues a story an earlier issue carried when one of its reports is this close to it
# (reports of new events came up to 0.37 in the corpus, follow-ups from 0.45).
FOLLOW_UP_THRESHOLD = 0.41
# A report this close to that story only repeats it (repeats from 0.47, reports with news up to 0.53,
# but no follow-up had all its reports above 0.45): an event of repeats alone is left out.
REPEATS_SENT_THRESHOLD = 0.45
# The weights of a shared place and of other measures those two thresholds were measured with (a
# conflict of places counts 0; the same-event weights are `Tuning`'s, fitted apart).
_FOLLOW_UP_WEIGHTS = {"place_bonus": 0.1, "measure_penalty": 0.05}


@dataclass(frozen=True)
class Tuning:
    """What makes reports one event: `make eval` chooses these on some corpus files and measures on the others."""

    same_event: float = SAME_EVENT_THRESHOLD
    # Taken off the similarity of two reports whose headlines give different measures (magnitudes, rates).
    measure_penalty: float = Space.MEASURE_PENALTY
    # The similarity (below 0) of two reports about different countries: it counts against joining their groups.
    conflict_penalty: float = Space.CONFLICT_PENALTY
    # How much less template words (shared by reports about different countries) count towards agreement.
    template_discount: float = Space.TEMPLATE_DISCOUNT
    # Added to the similarity of two reports that name a country in common.
    place_bonus: float = Space.PLACE_BONUS
    # Two groups of at least this many reports each (0: any size may join) whose reports are mostly about
    # different countries are two events, whatever their words share.
    apart_from: int = GROUPS_APART_FROM


@dataclass(frozen=True)
class SentStory:
    """A story an earlier issue carried, as its readers saw it."""

    url: str
    title: str
    summary: str
    issue_date: str
    frozen_at: dt.datetime | None = None  # when that issue was built: what came before, it had

    def had(self, report: Story) -> bool:
        """Whether the report was out before the issue was built (so it brings nothing new)."""
        return bool(self.frozen_at and report.published and report.published < self.frozen_at)


@dataclass(eq=False)
class Event:
    """One news event, possibly reported by several outlets."""

    reports: list[Story]
    lead_candidate: bool = False
    editor_note: str = ""  # set when the editorial file placed it
    # The reports in order of closeness to the event's centre (set by clustering).
    central: list[Story] = field(default_factory=list)
    follow_up_of: SentStory | None = None
    # Reports that only repeat what `follow_up_of` said: they count, but are not shown.
    repeats: list[Story] = field(default_factory=list)
    chosen: Story | None = None  # the report an editor named, shown whatever the rules say
    # The countries most of its reports are about (set by the selection; found from the reports otherwise).
    about: frozenset[str] | None = None
    home_weight: float = 0.0  # set on a lead the home weight raised above better-covered events: by how much

    @property
    def sources(self) -> list[str]:
        """One name per outlet, however many of its feeds carried the event; the shown report's first."""
        shown = self.story
        names: dict[str, str] = {}
        for report in sorted(self.reports, key=lambda r: (r is not shown, r.position)):
            names.setdefault(report.outlet_key, report.source)
        first, *others = names.values()
        return [first, *sorted(others)]

    @property
    def outlets(self) -> int:
        return len({r.outlet_key for r in self.reports})

    @property
    def best_position(self) -> int:
        return min(r.position for r in self.reports)

    @property
    def latest(self) -> dt.datetime:
        return max(r.published for r in self.reports if r.published)

    @property
    def standing(self) -> Standing:
        """What the ranking orders it by, and what an issue keeps of it for the desk's leads to be learned."""
        about = self.about
        if about is None:  # built by hand (an editor's pin)
            about = countries_most_about([describe(r.title, r.summary).subject for r in self.reports])
        return Standing(self.outlets, self.best_position,
                        self.latest if any(r.published for r in self.reports) else None, about)

    @property
    def score(self) -> float:
        """One number for people: outlets (and the home weight that made it the lead), position breaks ties."""
        return round(self.outlets + self.home_weight + 1 / (1 + self.best_position), 3)

    @property
    def story(self) -> Story:
        """The report shown: the one closest to the event's centre; the lead prefers one with an image."""
        if self.chosen is not None:
            return self.chosen
        shown = [r for r in self.central or self.reports if r not in self.repeats] or self.central or self.reports
        if not self.central:  # built by hand (an editor's pin): the best-placed report
            shown = sorted(shown, key=lambda r: (r.position, -(r.published.timestamp() if r.published else 0)))
        if self.lead_candidate:
            return next((r for r in shown if r.image), shown[0])
        return shown[0]

    @property
    def merged(self) -> list[Story]:
        chosen = self.story
        return [r for r in self.reports if r is not chosen]

    def reasons(self) -> str:
        latest = f"latest {self.latest:%Y-%m-%d %H:%M} UTC" if any(r.published for r in self.reports) else "undated"
        reasons = f"{self.outlets} outlet(s): {', '.join(self.sources)}; "
        if self.home_weight:
            reasons += (f"about {', '.join(sorted(self.about or ()))}: counts {self.home_weight:g} more for the lead "
                        "(the desk's leads); ")
        reasons += f"best feed position {self.best_position}; {latest}"
        if self.chosen is not None and len(self.reports) > 1:
            reasons += f"; shown: the report the editor named ({self.chosen.source})"
        elif len(self.reports) > 1 and self.central:
            kind = "with news " if self.repeats else ""
            if self.lead_candidate and self.story.image and not self.central[0].image:
                kind = f"{kind}with an image "
            reasons += f"; shown: the report {kind}closest to the event's centre ({self.story.source})"
        if self.follow_up_of:
            reasons += (f"; follow-up of «{self.follow_up_of.title}» ({self.follow_up_of.issue_date}): "
                        f"{len(self.reports) - len(self.repeats)} report(s) with news")
        return f"{self.editor_note}; {reasons}" if self.editor_note else reasons


@dataclass
class Dropped:
    story: Story
    reason: str


@dataclass
class Selection:
    events: list[Event]
    dropped: list[Dropped] = field(default_factory=list)
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    ranking: Ranking = Ranking()  # how the lead was chosen (the home weight the desk's leads taught)
    sent: Sequence[SentStory] = ()  # the earlier issues' stories it was chosen against (follow-ups)
    compared: Sequence[Story] = ()  # the reports it compared (in the window, one per article, not sent before)

    @property
    def stories(self) -> list[Story]:
        return [e.story for e in self.events]


def _is_international(story: Story, sections: frozenset[str]) -> bool:
    if not story.categories:
        return True  # an uncategorised item comes from a section feed
    return any(normalise_arabic(c) in sections for c in story.categories)


def average_linkage(size: int, pairs: dict[tuple[int, int], float], threshold: float,
                    merges: list[tuple[float, int, int]] | None = None,
                    apart: Callable[[list[int], list[int]], bool] | None = None) -> list[list[int]]:
    """Groups of items whose members' average pairwise similarity reaches `threshold` (UPGMA).

    Pairs missing from `pairs` count as 0. Two groups join only when they are
    close on average, so one shared phrase between two reports cannot chain
    two events together as it does under single linkage. Each join is added
    to `merges` if given: (the average, an item of each side). Two groups
    `apart` says are apart never join (their groups may, once grown).
    """
    members: dict[int, list[int]] = {i: [i] for i in range(size)}
    totals: dict[int, dict[int, float]] = {i: {} for i in range(size)}
    heap = []
    for (i, j), similarity in pairs.items():
        totals[i][j] = totals[j][i] = similarity
        if similarity >= threshold:
            heap.append((-similarity, i, j))
    heapq.heapify(heap)
    next_id = size
    while heap:
        negative_average, a, b = heapq.heappop(heap)
        if a not in members or b not in members:
            continue  # one side was merged since: its new group has its own entries
        if apart is not None and apart(members[a], members[b]):
            continue
        group, next_id = next_id, next_id + 1
        if merges is not None:
            merges.append((-negative_average, members[a][0], members[b][0]))
        members[group] = members.pop(a) + members.pop(b)
        links_a, links_b = totals.pop(a), totals.pop(b)
        totals[group] = {}
        for other in (links_a.keys() | links_b.keys()) - {a, b}:
            total = links_a.get(other, 0.0) + links_b.get(other, 0.0)
            links = totals[other]
            links.pop(a, None)
            links.pop(b, None)
            links[group] = totals[group][other] = total
            average = total / (len(members[group]) * len(members[other]))
            if average >= threshold:
                heapq.heappush(heap, (-average, group, other))
    return sorted(members.values())


class _Reports:
    """The day's reports and the stories sent before, described in one space."""

    def __init__(self, stories: Sequence[Story], sent: Sequence[SentStory] = (), tuning: Tuning = Tuning()) -> None:
        self.stories = list(stories)
        self.sent = list(sent)
        texts = [describe(s.title, s.summary) for s in self.stories] + [describe(s.title, s.summary) for s in self.sent]
        self.space = Space(texts, tuning.measure_penalty, tuning.conflict_penalty, tuning.template_discount,
                           tuning.place_bonus)
        self.apart_from = tuning.apart_from
        self._pairs: dict[tuple[int, int], float] | None = None

    def reweighed(self, tuning: Tuning) -> "_Reports":
        """The same reports, places and measures weighed as `tuning` says (its template discount is not used)."""
        reports = copy.copy(self)
        reports.space = self.space.reweighed(place_bonus=tuning.place_bonus, measure_penalty=tuning.measure_penalty,
                                             conflict_penalty=tuning.conflict_penalty)
        reports.apart_from = tuning.apart_from
        reports._pairs = None
        return reports

    def about_other_countries(self, one: list[int], other: list[int]) -> bool:
        """Two groups of at least `apart_from` reports each, mostly about different countries: the majority
        of a group outweighs a report that names another group's country in its lead (a Taiwanese report
        on Japan's tsunami warning)."""
        if min(len(one), len(other)) < self.apart_from:
            return False
        texts = self.space.texts
        one_about = countries_most_about([texts[i].subject for i in one])
        other_about = countries_most_about([texts[i].subject for i in other])
        return bool(one_about and other_about and one_about.isdisjoint(other_about))

    def groups(self, threshold: float, merges: list[tuple[float, int, int]] | None = None) -> list[list[int]]:
        """The reports (by index) of each event (and the joins that made them, in `merges` if given)."""
        if self._pairs is None:
            self._pairs = self.space.similar_pairs(len(self.stories), _PAIR_FLOOR)
        apart = self.about_other_countries if self.apart_from else None
        return average_linkage(len(self.stories), self._pairs, threshold, merges, apart)

    def event(self, group: list[int]) -> Event:
        return Event([self.stories[i] for i in group], central=self.central(group))

    def central(self, group: list[int]) -> list[Story]:
        """The group's reports in order of closeness to its centre."""
        if len(group) == 1:
            return [self.stories[group[0]]]
        closeness = self.space.closeness_to_centre(group)
        return [self.stories[i] for i in sorted(group, key=lambda i: (-closeness[i], self.stories[i].position))]

    def told_before(self, group: list[int]) -> tuple[SentStory, list[Story]] | None:
        """The earlier story these reports continue, and which of them only repeat it."""
        best, best_score = None, FOLLOW_UP_THRESHOLD
        for k in range(len(self.sent)):
            scores = [self.space.plain_similarity(i, len(self.stories) + k, **_FOLLOW_UP_WEIGHTS) for i in group]
            if max(scores) >= best_score:
                best, best_score = (k, scores), max(scores)
        if best is None:
            return None
        k, scores = best
        earlier = self.sent[k]
        return earlier, [self.stories[i] for i, score in zip(group, scores)
                         if score >= REPEATS_SENT_THRESHOLD or earlier.had(self.stories[i])]


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Comparing a big morning's reports makes millions of small objects and no reference cycles: the
    cycle collector would only walk them again and again (a tenth of the time of a 3,000-item morning)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def tell_apart(event: Event, urls: Iterable[str], sent: Sequence[SentStory] = (),
               morning: Sequence[Story] = ()) -> tuple[Event, Event] | None:
    """`event` without its reports at `urls`, which an editor says tell another story, and those reports as one
    event of their own; None when they are none of its reports, or all of them.

    The selection merges what its words cannot tell apart (two strikes on one suburb days apart, two quakes
    off one island), and no rule of words splits them reliably afterwards either: the editor names each
    report of the other story. Each part is then judged against the stories `sent` before, as the selection
    judges an event, among the `morning`'s reports it compared (a word's weight is how rare it is among
    them; the event's own reports alone would make every shared word common): the late reports of
    yesterday's strike, told apart from today's, continue yesterday's story, and today's no longer does. A
    part made of repeats only stays (the editor asked for it), marked as the follow-up it is.
    """
    named = set(urls)
    apart = [r for r in event.reports if r.url in named]
    if not apart or len(apart) == len(event.reports):
        return None
    taken = {id(r) for r in apart}

    def kept(reports: list[Story]) -> list[Story]:
        return [r for r in reports if id(r) not in taken]

    compared = list(morning) if {id(r) for r in event.reports} <= {id(r) for r in morning} else event.reports
    reports = _Reports(compared, sent)
    index = {id(r): i for i, r in enumerate(compared)}

    def told(part: list[Story]) -> tuple[SentStory | None, list[Story]]:
        """The earlier story the part continues, and its reports that only repeat it."""
        return reports.told_before([index[id(r)] for r in part]) or (None, [])

    rest_continues, rest_repeats = told(kept(event.reports))
    rest = replace(event, reports=kept(event.reports), central=kept(event.central), repeats=rest_repeats,
                   follow_up_of=rest_continues,
                   chosen=None if event.chosen is not None and id(event.chosen) in taken else event.chosen,
                   about=None)  # found again from the reports it keeps
    continues, repeats = told(apart)
    central = _Reports(apart).central(list(range(len(apart))))
    return rest, Event(apart, editor_note="told apart by the editor", central=central, follow_up_of=continues,
                       repeats=repeats)


def cluster_events(stories: list[Story], threshold: float = SAME_EVENT_THRESHOLD) -> list[Event]:
    """Group reports of the same event."""
    reports = _Reports(stories)
    return [reports.event(group) for group in reports.groups(threshold)]


def joins_by_tuning(stories: Sequence[Story], tunings: Iterable[Tuning],
                    lowest: float) -> Iterator[tuple[Tuning, list[tuple[float, int, int]]]]:
    """For each tuning (its same-event threshold not used), the joins average linkage makes of the reports
    down to `lowest`, in order: (the average, a report of each side, by index). UPGMA joins groups in order
    of decreasing average, so the events at any threshold above `lowest` are those joins above it: `make
    eval` fits the threshold from one run. The reports are described and compared once per template
    discount; for the other weights only places and measures are weighed again."""
    described: dict[float, _Reports] = {}
    for tuning in tunings:
        reports = described.get(tuning.template_discount)
        if reports is None:
            reports = described[tuning.template_discount] = _Reports(stories, tuning=tuning)
        merges: list[tuple[float, int, int]] = []
        reports.reweighed(tuning).groups(lowest, merges)
        yield tuning, merges


def _unique_articles(stories: Iterable[Story]) -> tuple[dict[str, Story], list[Dropped]]:
    """One report per article (by `link_key`), whatever URL variant each feed gave; the article's own outlet's copy first."""
    by_key: dict[str, Story] = {}
    dropped = []
    for story in stories:
        key = link_key(story.url)
        kept = by_key.get(key)
        if kept is None:
            by_key[key] = story
            continue
        own = site_of(story.url) == story.outlet and site_of(kept.url) != kept.outlet
        if own:
            by_key[key], story, kept = story, kept, story
        dropped.append(Dropped(story, f"same article already read from {kept.source}"))
    return by_key, dropped


def select_stories(
    stories: Iterable[Story],
    *,
    window_end: dt.datetime,
    window: dt.timedelta = dt.timedelta(hours=24),
    sections: Iterable[str] = (),
    max_stories: int = 6,
    already_sent: frozenset[str] = frozenset(),
    sent: Sequence[SentStory] = (),
    tuning: Tuning = Tuning(),
    ranking: Ranking = Ranking(),
) -> Selection:
    """Pick at most `max_stories` events, explaining every report left out.

    `already_sent` are links earlier issues carried; `sent` the stories they
    told, to recognise today's reports of the same events. `ranking` orders
    the events (its home weight learned from the desk's leads).
    """
    window_start = window_end - window
    wanted_sections = frozenset(normalise_arabic(s) for s in sections)
    sent_links = {link_key(u): u for u in already_sent} | {link_key(s.url): s.url for s in sent}
    candidates, dropped = _unique_articles(stories)
    fresh = []
    for key, story in candidates.items():
        if story.published is None:
            dropped.append(Dropped(story, "no publication date"))
        elif not window_start <= story.published < window_end:
            dropped.append(Dropped(story, f"outside the {window.total_seconds() / 3600:.0f}-hour window "
                                          f"(published {story.published:%Y-%m-%d %H:%M} UTC)"))
        elif not _is_international(story, wanted_sections):
            dropped.append(Dropped(story, f"not international (section: {', '.join(story.categories)})"))
        elif key in sent_links:
            dropped.append(Dropped(story, f"already sent in an earlier issue ({sent_links[key]})"))
        else:
            fresh.append(story)

    with _cycle_collector_paused():
        reports = _Reports(fresh, sent, tuning)
        grouped = reports.groups(tuning.same_event)
    events = []
    groups: dict[int, list[int]] = {}  # id(event) -> its reports' indexes
    for group in grouped:
        # Which report is central is found for the chosen events only: on a big morning, most are not.
        event = Event([reports.stories[i] for i in group],
                      about=countries_most_about([reports.space.texts[i].subject for i in group]))
        groups[id(event)] = group
        told = reports.told_before(group)
        if told is None:
            events.append(event)
            continue
        earlier, repeats = told
        if len(repeats) == len(event.reports):
            dropped.extend(Dropped(r, f"repeats «{earlier.title}», sent in the issue of {earlier.issue_date}")
                           for r in event.reports)
        else:
            event.follow_up_of, event.repeats = earlier, repeats
            events.append(event)
    standings = {id(e): e.standing for e in events}
    events.sort(key=lambda e: ranking.coverage_key(standings[id(e)]))
    for rank, event in enumerate(events[max_stories:], start=max_stories + 1):
        dropped.extend(Dropped(r, f"over the limit of {max_stories} stories (ranked {rank})") for r in event.reports)
    chosen = events[:max_stories]
    for event in chosen:
        event.central = reports.central(groups[id(event)])
    if chosen:
        # `min` keeps coverage's order among equals.
        lead = min(chosen, key=lambda e: ranking.key(standings[id(e)]))
        if lead is not chosen[0]:  # the desk's leads raised it: its score and reasons say by how much
            lead.home_weight = ranking.home_weight
        chosen = [lead, *(e for e in chosen if e is not lead)]
        lead.lead_candidate = True
    return Selection(chosen, dropped, window_start, window_end, ranking, tuple(sent), tuple(fresh))


def _report_json(story: Story) -> dict[str, object]:
    return {
        "outlet": story.source,
        "outlet_key": story.outlet_key,
        "title": story.title,
        "url": story.url,
        "published": story.published.isoformat() if story.published else None,
        "position": story.position,
    }


def _event_json(rank: int, event: Event) -> dict[str, object]:
    shown = event.story
    earlier = event.follow_up_of
    return {
        "rank": rank,
        "score": event.score,
        "reasons": event.reasons(),
        "outlets": event.sources,
        "follow_up_of": {"title": earlier.title, "url": earlier.url, "issue_date": earlier.issue_date} if earlier else None,
        # Every report of the event, the shown one first; those only repeating an earlier issue are marked.
        "reports": [{**_report_json(r), "shown": r is shown, "repeats_sent": r in event.repeats}
                    for r in sorted(event.reports, key=lambda r: r is not shown)],
    }


def selection_json(selection: Selection) -> dict[str, object]:
    """The selection as data, for the desk and other tools (`newsletter select --json`): every chosen
    event with all its reports, its score and reasons, and every report left out with why."""
    return {
        "window": {
            "start": selection.window_start.isoformat() if selection.window_start else None,
            "end": selection.window_end.isoformat() if selection.window_end else None,
        },
        "lead": {"home_countries": sorted(selection.ranking.home), "home_weight": selection.ranking.home_weight},
        "events": [_event_json(rank, event) for rank, event in enumerate(selection.events, start=1)],
        "left_out": [{**_report_json(d.story), "reason": d.reason} for d in selection.dropped],
    }
