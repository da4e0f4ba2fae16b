"""How the day's events are ordered: by coverage, and the lead by the desk's news judgment learned from its leads.

Coverage (how many outlets carry an event) is what the feeds can tell, and it
is not news judgment: an Arabic international desk opens with Israel striking
Hamas's negotiators in Doha before a better-covered earthquake in Afghanistan,
with the Security Council's vote on Syria before a Bulgarian government's
resignation. What such leads show is a preference for the newsroom's own
region, and it differs from desk to desk, so it is learned, not set: when
the lead is chosen among the issue's stories, one about a home country
(`NEWSLETTER_HOME_COUNTRIES`) counts `home_weight` more outlets, and
`learn_home_weight` finds the weight under which the issues the desk sent open
with the stories it led with. Which stories the issue carries stays coverage's
choice: leads are all the desk's history teaches. A desk that never led
against coverage keeps weight 0.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ARAB_LEAGUE", "HOME_WEIGHTS", "Ranking", "Standing", "learn_home_weight", "standing_from_json"]

# The members of the Arab League (gazetteer keys): the home region of an Arabic newsletter's readers.
ARAB_LEAGUE = frozenset({
    "algeria", "bahrain", "comoros", "djibouti", "egypt", "iraq", "jordan", "kuwait", "lebanon", "libya",
    "mauritania", "morocco", "oman", "palestine", "qatar", "saudi-arabia", "somalia", "sudan", "syria",
    "tunisia", "united-arab-emirates", "yemen",
})
# The weights the desk's leads choose among, in outlets: small steps, as a lead is a choice between a
# few events whose coverage differs by an outlet or two.
HOME_WEIGHTS = tuple(n / 4 for n in range(13))  # 0 to 3


@dataclass(frozen=True)
class Standing:
    """What the ranking knows of an event, kept with every story an issue sent so that the desk's
    order can be learned from later."""

    outlets: int
    best_position: int
    latest: dt.datetime | None
    about: frozenset[str]  # the countries most of its reports are about

    def as_json(self) -> dict[str, object]:
        return {"outlets": self.outlets, "best_position": self.best_position,
                "latest": self.latest.isoformat() if self.latest else None, "about": sorted(self.about)}


def standing_from_json(data: Mapping[str, object]) -> Standing:
    latest = data.get("latest")
    return Standing(int(data["outlets"]), int(data["best_position"]),  # type: ignore[call-overload]
                    dt.datetime.fromisoformat(str(latest)) if latest else None,
                    frozenset(map(str, data.get("about") or ())))  # type: ignore[call-overload]


def countries_most_about(subjects: Sequence[frozenset[str]]) -> frozenset[str]:
    """The countries at least half the reports are about (each report's headline, else first sentence)."""
    counts = Counter(country for subject in subjects for country in subject)
    return frozenset(c for c, n in counts.items() if 2 * n >= len(subjects))


@dataclass(frozen=True)
class Ranking:
    """Events in order: most outlets first, then the best position an outlet gave them, then the latest;
    for the lead, an event about a home country counts `home_weight` more outlets."""

    home: frozenset[str] = ARAB_LEAGUE
    home_weight: float = 0.0

    def is_home(self, standing: Standing) -> bool:
        return not standing.about.isdisjoint(self.home)

    def weight(self, standing: Standing) -> float:
        return standing.outlets + (self.home_weight if self.is_home(standing) else 0.0)

    def key(self, standing: Standing) -> tuple[float, int, float]:
        """The lead's order: the first of the issue's stories by this key leads."""
        latest = standing.latest.timestamp() if standing.latest else 0.0
        return (-self.weight(standing), standing.best_position, -latest)

    @staticmethod
    def coverage_key(standing: Standing) -> tuple[float, int, float]:
        """Which stories the issue carries, and their order after the lead: coverage alone."""
        return Ranking(home_weight=0.0).key(standing)

    def leads(self, issue: Sequence[Standing]) -> bool:
        """Whether the issue's first story comes first under this ranking (ahead of or level with the rest)."""
        first = self.key(issue[0])
        return all(first <= self.key(other) for other in issue[1:])


def learn_home_weight(issues: Iterable[Sequence[Standing]], home: frozenset[str] = ARAB_LEAGUE) -> float:
    """The weight under which most of the desk's issues (each its stories in the order sent) open with
    their own lead: 0 if coverage alone does as well. Else, where a lead the desk gave a better-covered
    foreign story bounds the weights that do best from above, their middle, as far as can be from the
    leads they would get wrong on either side; where nothing does, the smallest of them and half a step
    (coverage decides beyond what the desk's leads show; at the smallest itself, the desk's own leads are
    ties, decided by feed position and time)."""
    issues = [issue for issue in issues if len(issue) > 1]
    right = {weight: sum(Ranking(home, weight).leads(issue) for issue in issues) for weight in HOME_WEIGHTS}
    best = [weight for weight, count in right.items() if count == max(right.values())]
    if best[0] == 0.0:
        return 0.0
    if best[-1] < HOME_WEIGHTS[-1]:
        return (best[0] + best[-1]) / 2
    return best[0] + (HOME_WEIGHTS[1] - HOME_WEIGHTS[0]) / 2
