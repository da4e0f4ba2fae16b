"""Choose the day's main international stories from everything the feeds offered.

Reports of one event by several outlets are merged (near-duplicate clustering
on normalised Arabic text); events are ranked by how many outlets cover them,
then by the best editorial position any outlet gave them, then by recency.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from .feeds import Story

# Two reports whose weighted word overlap (cosine of TF-IDF vectors) reaches
# this are the same event. Tuned on the bundled feeds: same-event pairs score
# 0.28 and up with different wording, unrelated pairs stay under 0.11.
SAME_EVENT_THRESHOLD = 0.2

_TASHKEEL = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_NOT_WORD = re.compile(r"[^\w]+|_")
_LETTER_FORMS = str.maketrans(
    {
        "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ؤ": "و", "ئ": "ي", "ى": "ي", "ة": "ه",
        "٠": "0", "١": "1", "٢": "2", "٣": "3", "٤": "4", "٥": "5", "٦": "6", "٧": "7", "٨": "8", "٩": "9",
    }
)
_PREFIXES = ("وال", "بال", "كال", "فال", "لل", "ال")
_SUFFIXES = ("ات", "ون", "ين", "ان", "يه", "ها", "هم")
_STOPWORDS = frozenset(
    normal
    for normal in (
        "في من على الى عن ان او ثم مع بعد قبل عند هذا هذه ذلك تلك التي الذي الذين كان كانت "
        "قد لقد لا لم لن ما ماذا كل بين حتى منذ حول خلال ضد دون غير اي هو هي هم نحو وقد "
        "وفي ومن وعلى واكد اكد قال قالت يوم امس اليوم الثلاثاء الاثنين الاحد السبت الجمعه الخميس الاربعاء "
        "اجل عبر وسط لدي لدى مساء صباح وذلك كما ايضا الا انه انها به بها له لها فيه فيها عليه عليها"
    )
    .translate(_LETTER_FORMS)
    .split()
)


def normalise_arabic(text: str) -> str:
    """Fold the spellings of one Arabic word together, drop punctuation, lowercase Latin."""
    text = _TASHKEEL.sub("", text).translate(_LETTER_FORMS).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


def _stem(word: str) -> str:
    for prefix in _PREFIXES:
        if word.startswith(prefix) and len(word) - len(prefix) >= 3:
            word = word[len(prefix):]
            break
    else:
        if word[:1] in "وفب" and len(word) >= 5:
            word = word[1:]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word.removesuffix("ه") if len(word) >= 4 else word


def story_terms(story: Story) -> Counter[str]:
    """The bag of stemmed words that identifies what a report is about."""
    words = normalise_arabic(f"{story.title} {story.title} {story.summary}").split()
    return Counter(_stem(w) for w in words if w not in _STOPWORDS and len(w) > 1)


@dataclass(eq=False)
class Event:
    """One news event, possibly reported by several outlets."""

    reports: list[Story]
    lead_candidate: bool = False
    editor_note: str = ""  # set when the editorial file placed it

    @property
    def sources(self) -> list[str]:
        return sorted({r.source for r in self.reports})

    @property
    def best_position(self) -> int:
        return min(r.position for r in self.reports)

    @property
    def latest(self) -> dt.datetime:
        return max(r.published for r in self.reports if r.published)

    @property
    def rank_key(self) -> tuple[int, int, float]:
        return (-len(self.sources), self.best_position, -self.latest.timestamp())

    @property
    def score(self) -> float:
        """One number for people: outlets first, position breaks ties, as in rank_key."""
        return round(len(self.sources) + 1 / (1 + self.best_position), 3)

    @property
    def story(self) -> Story:
        """The report shown in the issue; the lead prefers one with an image."""
        def preference(report: Story) -> tuple:
            missing_image = self.lead_candidate and not report.image
            return (missing_image, report.position, -(report.published.timestamp() if report.published else 0))

        return min(self.reports, key=preference)

    @property
    def merged(self) -> list[Story]:
        chosen = self.story
        return [r for r in self.reports if r is not chosen]

    def reasons(self) -> str:
        latest = f"latest {self.latest:%Y-%m-%d %H:%M} UTC" if any(r.published for r in self.reports) else "undated"
        reasons = f"{len(self.sources)} source(s): {', '.join(self.sources)}; best feed position {self.best_position}; {latest}"
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

    @property
    def stories(self) -> list[Story]:
        return [e.story for e in self.events]


def _is_international(story: Story, sections: frozenset[str]) -> bool:
    if not story.categories:
        return True  # an uncategorised item comes from a section feed
    return any(normalise_arabic(c) in sections for c in story.categories)


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    dot = sum(w * b.get(t, 0.0) for t, w in a.items())
    norm = math.sqrt(sum(w * w for w in a.values())) * math.sqrt(sum(w * w for w in b.values()))
    return dot / norm if norm else 0.0


def _tfidf_vectors(stories: list[Story]) -> list[dict[str, float]]:
    bags = [story_terms(s) for s in stories]
    documents = Counter(term for bag in bags for term in bag)
    total = len(bags)
    return [
        {t: n * (math.log((1 + total) / (1 + documents[t])) + 1) for t, n in bag.items()}
        for bag in bags
    ]


def cluster_events(stories: list[Story], threshold: float = SAME_EVENT_THRESHOLD) -> list[Event]:
    """Group reports of the same event (single-link over pairwise similarity)."""
    vectors = _tfidf_vectors(stories)
    parent = list(range(len(stories)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(stories)):
        for j in range(i + 1, len(stories)):
            if _cosine(vectors[i], vectors[j]) >= threshold:
                parent[root(j)] = root(i)
    groups: dict[int, list[Story]] = {}
    for i, story in enumerate(stories):
        groups.setdefault(root(i), []).append(story)
    return [Event(reports) for reports in groups.values()]


def _unique_by_url(stories: Iterable[Story]) -> tuple[list[Story], list[Dropped]]:
    seen: set[str] = set()
    kept, dropped = [], []
    for story in stories:
        if story.url in seen:
            dropped.append(Dropped(story, "same link already read from another feed"))
        else:
            seen.add(story.url)
            kept.append(story)
    return kept, dropped


def select_stories(
    stories: Iterable[Story],
    *,
    window_end: dt.datetime,
    window: dt.timedelta = dt.timedelta(hours=24),
    sections: Iterable[str] = (),
    max_stories: int = 6,
    already_sent: frozenset[str] = frozenset(),
) -> Selection:
    """Pick at most `max_stories` events, explaining every report left out."""
    window_start = window_end - window
    wanted_sections = frozenset(normalise_arabic(s) for s in sections)
    candidates, dropped = _unique_by_url(stories)
    fresh = []
    for story in candidates:
        if story.published is None:
            dropped.append(Dropped(story, "no publication date"))
        elif not window_start <= story.published < window_end:
            dropped.append(Dropped(story, f"outside the {window.total_seconds() / 3600:.0f}-hour window "
                                          f"(published {story.published:%Y-%m-%d %H:%M} UTC)"))
        elif not _is_international(story, wanted_sections):
            dropped.append(Dropped(story, f"not international (section: {', '.join(story.categories)})"))
        else:
            fresh.append(story)

    events = []
    for event in cluster_events(fresh):
        sent = [r for r in event.reports if r.url in already_sent]
        if sent:
            dropped.extend(Dropped(r, f"already sent in an earlier issue ({sent[0].url})") for r in event.reports)
        else:
            events.append(event)
    events.sort(key=lambda e: e.rank_key)
    for rank, event in enumerate(events[max_stories:], start=max_stories + 1):
        dropped.extend(Dropped(r, f"over the limit of {max_stories} stories (ranked {rank})") for r in event.reports)
    chosen = events[:max_stories]
    if chosen:
        chosen[0].lead_candidate = True
    return Selection(chosen, dropped, window_start, window_end)
