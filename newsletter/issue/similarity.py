"""How alike two reports are: normalised Arabic words, TF-IDF vectors, the places they name.

Outlets write one event in different words, and distinct events in the same
template words ("مجلس الأمن يصوت على مشروع قرار…"). So a report is described
by its weighted stemmed words, by the character n-grams of its rarer words
(spellings and transliterations stems miss: ترامب/ترمب), by the countries it
names, which tell template twins apart when their words cannot (`places.tsv`),
and by the measures its headline gives (a magnitude, a rate): two headlines in
one template with other figures are likely two events.

What a report is *about* is in its headline and first sentence; the rest of the
summary names other countries in passing (the members who voted, the neighbours
who sent help), and a country named in passing must not make two events one.
"""

from __future__ import annotations

import copy
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain
from operator import mul
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # scipy is imported where a big morning is compared, not when the CLI starts
    import numpy as np
    from scipy.sparse import csr_matrix

PLACES_FILE = Path(__file__).with_name("places.tsv")
NOT_A_PLACE = "-"  # places.tsv's key for phrases that hold a place's form but name none ("مسقط رأسه")
# A word in more than this share of the reports (or this many, if more) links nothing worth
# comparing: reports are compared when they share rarer words, and each with its NEIGHBOURS
# nearest by those words only, so a 3,000-item morning costs thousands of comparisons, not millions.
COMMON_TERM_SHARE = 0.02
COMMON_TERM_MIN_REPORTS = 30
NEIGHBOURS = 15

_TASHKEEL = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_NOT_WORD = re.compile(r"[^\w]+|_")
# Decimal and thousands separators inside a number ("٧٫١", "7,1", "1,200") join its digits.
_NUMBER_SEPARATOR = re.compile(r"(?<=\d)[.,\u066b\u066c](?=\d)")
# The end of the first sentence: a full stop (not a decimal point), a question or exclamation mark, a line.
_SENTENCE_END = re.compile(r"(?<!\d)[.!?\u061f\u06d4](?!\d)|\n")
# A measure: a number with a decimal part (a magnitude, a rate; three digits after a comma are
# thousands) or a percentage, in text whose letters and digits are folded (المئة is الميه).
# Counts (of dead, of votes) are left out: outlets of one event
# give different counts as a toll rises, but the same magnitude or rate.
_DIGIT = re.compile(r"\d")
_DECIMAL_POINT = re.compile("[.,\u066b]")
_MEASURE = re.compile(r"\d+[.,\u066b]\d{1,2}(?!\d)|\d+(?=\s*(?:%|\u066a|(?:في |ب)الم(?:ي|اي)ه))")
_LETTER_FORMS = str.maketrans(
    {
        "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ؤ": "و", "ئ": "ي", "ى": "ي", "ة": "ه",
        # Persian and Urdu letters in transliterated names (كييڤ, گ, ی, ک).
        "ڤ": "ف", "ی": "ي", "ک": "ك", "گ": "ج", "پ": "ب", "چ": "ج", "ژ": "ز", "ھ": "ه", "ۀ": "ه",
        "٠": "0", "١": "1", "٢": "2", "٣": "3", "٤": "4", "٥": "5", "٦": "6", "٧": "7", "٨": "8", "٩": "9",
        "۰": "0", "۱": "1", "۲": "2", "۳": "3", "۴": "4", "۵": "5", "۶": "6", "۷": "7", "۸": "8", "۹": "9",
        "٫": ".", "٬": ",",
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
    text = _NUMBER_SEPARATOR.sub("", text)
    return " ".join(_NOT_WORD.sub(" ", text).split())


@cache
def stem(word: str) -> str:
    """A light stem: the article and clitic prefixes, and one plural or pronoun suffix, removed."""
    for prefix in _PREFIXES:
        if word.startswith(prefix) and len(word) - len(prefix) >= 3:
            word = word[len(prefix):]
            break
    else:
        if word[:1] in "وفبل" and len(word) >= 5:
            word = word[1:]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word.removesuffix("ه") if len(word) >= 4 else word


def _readings(word: str) -> tuple[str, ...]:
    """The word, and the word without each way of reading its start as proclitics (و ف, ب ل ك, ال).

    "للسودان" reads as "السودان" and "سودان"; "لبنان" as itself (and "بنان"): which
    reading is a place is for the gazetteer to say, so no letter of a name is lost.
    """
    readings = {word}
    for conjunction in ("", "و", "ف"):
        if not word.startswith(conjunction):
            continue
        rest = word[len(conjunction):]
        for preposition in ("", "ب", "ل", "ك"):
            if not rest.startswith(preposition):
                continue
            core = rest[len(preposition):]
            if preposition == "ل" and core.startswith("ل"):
                core = "ا" + core  # لل = ل + ال
            readings.add(core)
            if core.startswith("ال"):
                readings.add(core[2:])
    return tuple(r for r in readings if len(r) >= 2)


class Gazetteer:
    """Country (or territory) keys for the ways Arabic news names a place."""

    def __init__(self, forms: dict[tuple[str, ...], str]) -> None:
        self.forms = forms
        self.sizes: dict[str, list[int]] = defaultdict(list)  # first word -> lengths of its names, longest first
        for words in forms:
            if len(words) not in self.sizes[words[0]]:
                self.sizes[words[0]].append(len(words))
        for sizes in self.sizes.values():
            sizes.sort(reverse=True)
        self._starts: dict[str, tuple[tuple[str, list[int]], ...]] = {}

    @classmethod
    def from_file(cls, path: Path = PLACES_FILE) -> "Gazetteer":
        forms: dict[tuple[str, ...], str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            key, _, names = line.partition("\t")
            for name in _with_plural_demonyms(names.split("|")):
                words = tuple(normalise_arabic(name).split())
                if not words:
                    continue
                forms.setdefault(words, key.strip())
                if words[0].startswith("ال") and len(words[0]) > 4:  # "السودان" is also written "سودان"
                    forms.setdefault((words[0][2:], *words[1:]), key.strip())
        return cls(forms)

    @property
    def places(self) -> frozenset[str]:
        """Every place key it knows."""
        return frozenset(self.forms.values()) - {NOT_A_PLACE}

    def places_in(self, words: Sequence[str]) -> frozenset[str]:
        """The places a normalised text names, longest names first ("جنوب السودان" is not "السودان")."""
        found, after = set(), 0  # after: the first word not inside a name found
        starts = self._starts
        for i in [i for i, word in enumerate(words) if starts.get(word) != ()]:  # most words begin no name
            if i < after:
                continue
            match = self._name_at(words, i)
            if match:
                found.add(match[0])
                after = i + match[1]
        return frozenset(found - {NOT_A_PLACE})

    def _starts_of(self, word: str) -> tuple[tuple[str, list[int]], ...]:
        """The readings of `word` that begin a place name, with those names' lengths (most words: none)."""
        starts = self._starts.get(word)
        if starts is None:
            starts = self._starts[word] = tuple((r, self.sizes[r]) for r in _readings(word) if r in self.sizes)
        return starts

    def _name_at(self, words: Sequence[str], i: int) -> tuple[str, int] | None:
        best: tuple[str, int] | None = None
        for reading, sizes in self._starts_of(words[i]):
            for size in sizes:
                if best and size <= best[1]:
                    break
                key = self.forms.get((reading, *words[i + 1:i + size]))
                if key:
                    best = (key, size)
                    break
        return best


def _with_plural_demonyms(names: list[str]) -> list[str]:
    """The names, and the sound plurals of the demonyms among them: a word ending in ي listed with its
    feminine in ية is a demonym (ألماني, ألمانية), and news also names a people by its plurals
    (الألمانيون, التايلانديين), which the file need not list line by line."""
    listed = set(names)
    plurals = [name + ending for name in names if name.endswith("ي") and name + "ة" in listed and " " not in name
               for ending in ("ون", "ين")]
    return names + plurals


@cache
def gazetteer() -> Gazetteer:
    return Gazetteer.from_file()


@cache
def _word_term(word: str) -> str:
    """A word's stem as a vector term, marked with "=" so that no character n-gram is mistaken for it."""
    return "=" + stem(word)


@cache
def _grams(word: str) -> tuple[str, ...]:
    """Character 3- and 4-grams of a word with its edges marked: "ترامب" and "ترمب" share "#تر", "مب#"…"""
    marked = f"#{word}#"
    return tuple(marked[i:i + n] for n in (3, 4) for i in range(len(marked) - n + 1))


@dataclass(frozen=True)
class Text:
    """What one report (or one earlier issue's story) says, ready to compare."""

    words: Counter[str]  # "=" + stem of each word; the title counts twice
    content: tuple[str, ...]  # the words, unstemmed: their n-grams catch spellings stems miss
    places: frozenset[str]  # every country named
    subject: frozenset[str]  # the countries the report is about: the title's, else its first sentence's
    lead_places: frozenset[str]  # the countries named in the title or the first sentence
    title_measures: frozenset[str]


def split_opening(text: str) -> tuple[str, str]:
    """The first sentence, and the rest."""
    end = _SENTENCE_END.search(text)
    return (text[:end.start()], text[end.end():]) if end else (text, "")


def measures_in(text: str) -> frozenset[str]:
    """Decimal numbers and percentages, "6.0" and "6" alike (text with digits folded, punctuation kept)."""
    found = set()
    for number in _MEASURE.findall(text):
        whole, _, fraction = _DECIMAL_POINT.sub(".", number).partition(".")
        found.add(f"{int(whole)}.{fraction}".rstrip("0").rstrip("."))
    return frozenset(found)


def _folded(text: str) -> str:
    """Text with its letters and digits folded, punctuation kept (the sentence ends and percent signs)."""
    return _TASHKEEL.sub("", text).translate(_LETTER_FORMS)


def describe(title: str, summary: str) -> Text:
    title_words = normalise_arabic(title).split()
    opening, rest = split_opening(summary)
    opening_words = normalise_arabic(opening).split()
    rest_words = normalise_arabic(rest).split()
    content = [w for w in title_words + title_words + opening_words + rest_words if w not in _STOPWORDS and len(w) > 1]
    places = gazetteer()
    title_places = places.places_in(title_words)
    opening_places = places.places_in(opening_words)
    return Text(
        Counter(map(_word_term, content)),
        tuple(content),
        title_places | opening_places | places.places_in(rest_words),
        title_places or opening_places,
        title_places | opening_places,
        measures_in(_folded(title)) if _DIGIT.search(title) else frozenset(),
    )


def places_conflict(a: Text, b: Text) -> bool:
    """Each report is about countries the other does not name in its title or first sentence: different events.

    A country the other report names only further down (a member who voted, a
    neighbour who sent help) does not make them one: two Security Council votes
    on two countries both list the members who abstained.
    """
    return bool(a.subject and b.subject and a.subject.isdisjoint(b.lead_places)
                and b.subject.isdisjoint(a.lead_places))


def measures_differ(a: Text, b: Text) -> bool:
    """Both headlines give measures (a magnitude, a rate), none the same: two quakes, two rate decisions.

    Headlines only: a report's summary gives other measures of one event (an
    aftershock's magnitude, a growth forecast next to the rate decided).
    """
    return bool(a.title_measures and b.title_measures and a.title_measures.isdisjoint(b.title_measures))


def _unit_tfidf(bags: Sequence[Counter[str]], length: float = 1.0) -> list[dict[str, float]]:
    """TF-IDF vectors of the given length (1: a dot product is the cosine)."""
    documents = Counter(chain.from_iterable(bags))
    total = len(bags)
    idf = {t: math.log((1 + total) / (1 + n)) + 1 for t, n in documents.items()}.__getitem__
    vectors = []
    for bag in bags:
        weights = list(map(mul, bag.values(), map(idf, bag)))
        scale = length / (math.hypot(*weights) or 1.0)
        vectors.append(dict(zip(bag, [w * scale for w in weights])))
    return vectors


def dot(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(w * b[t] for t, w in a.items() if t in b)


def _keyed_dot(a: dict[str, float], a_keys: frozenset[str], b: dict[str, float], b_keys: frozenset[str]) -> float:
    """`dot` for vectors whose key sets are at hand: the intersection and products run in C, ~3× faster."""
    common = a_keys & b_keys
    return sum(map(mul, map(a.__getitem__, common), map(b.__getitem__, common)))


class Space:
    """Texts compared with one another: words and n-grams weighted by how rare they are among them all.

    Similarity is the mean of the word and the n-gram cosines, plus a place
    bonus when the two name a place in common, less a measure penalty when their
    measures differ. When their places conflict it is -the conflict penalty: not
    only are the two not one event, they count against joining their groups,
    as one report about the Gulf banks' cut keeps the Fed's reports apart from
    another Gulf report close to both. Template words (`template_shares`) agree
    for less: each term's product counts 1 - TEMPLATE_DISCOUNT × its template
    share, while what each report says (the vectors' lengths) keeps its weight.
    The class's weights are the defaults, chosen by `make eval`.
    """

    PLACE_BONUS = 0.05
    MEASURE_PENALTY = 0.4
    CONFLICT_PENALTY = 0.1
    TEMPLATE_DISCOUNT = 0.0

    def __init__(self, texts: Sequence[Text], measure_penalty: float = MEASURE_PENALTY,
                 conflict_penalty: float = CONFLICT_PENALTY, template_discount: float = TEMPLATE_DISCOUNT,
                 place_bonus: float = PLACE_BONUS) -> None:
        self.texts = list(texts)
        self.measure_penalty = measure_penalty
        self.conflict_penalty = conflict_penalty
        self.place_bonus = place_bonus
        # The neighbour pairs and their dot products, by how many texts were compared: shared with `reweighed`
        # copies, which weigh places and measures otherwise but compare the same vectors.
        self._dot_products: dict[int, tuple[list[int], list[int], list[float]]] = {}
        # Words and n-grams in one vector, each half of length 1/√2: one dot product is then the mean
        # of the two cosines.
        half = math.sqrt(0.5)
        words = _unit_tfidf([t.words for t in self.texts], half)
        gram_words = self._gram_words()
        gram_bags = [Counter(chain.from_iterable(map(_grams, rarer))) for rarer in gram_words]
        self.vectors = [{**w, **g} for w, g in zip(words, _unit_tfidf(gram_bags, half))]
        self.keys = [frozenset(v) for v in self.vectors]
        # What two reports agree on: the same vectors, template words' agreement discounted (see `_discounted`).
        self.agreement = self.vectors
        if template_discount:
            self.agreement = _discounted(self.texts, gram_words, gram_bags, self.vectors,
                                         template_shares(self.texts), template_discount)

    def reweighed(self, *, place_bonus: float, measure_penalty: float, conflict_penalty: float) -> "Space":
        """The same texts and vectors, places and measures weighed otherwise (`make eval` tries many weights:
        the vectors and their products are made once)."""
        space = copy.copy(self)
        space.place_bonus, space.measure_penalty, space.conflict_penalty = place_bonus, measure_penalty, conflict_penalty
        return space

    def _gram_words(self) -> list[list[str]]:
        """Each text's rarer words, whose n-grams it has: a common word's spelling variants tell events apart
        no better than the word does, and its n-grams would make up most of every vector."""
        documents = Counter(w for t in self.texts for w in set(t.content))
        common = max(COMMON_TERM_MIN_REPORTS, COMMON_TERM_SHARE * len(self.texts))
        return [[w for w in t.content if documents[w] <= common] for t in self.texts]

    def plain_similarity(self, i: int, j: int, place_bonus: float, measure_penalty: float) -> float:
        """How alike texts i and j are, template words counted in full and places and measures weighed as
        given, whatever this space's weights (a report against a story sent before: the follow-up
        thresholds were measured with weights of their own)."""
        a, b = self.texts[i], self.texts[j]
        if places_conflict(a, b):
            return 0.0
        dot_product = _keyed_dot(self.vectors[i], self.keys[i], self.vectors[j], self.keys[j])
        return dot_product + _place_and_measure(a, b, place_bonus, measure_penalty)

    def _adjusted(self, a: Text, b: Text, dot_product: float) -> float:
        """Two texts' similarity from their vectors' dot product: places and measures weigh in."""
        if places_conflict(a, b):
            return -self.conflict_penalty
        return dot_product + _place_and_measure(a, b, self.place_bonus, self.measure_penalty)

    def similar_pairs(self, among: int, floor: float) -> dict[tuple[int, int], float]:
        """Similarity of the pairs among the first `among` texts (i < j) that reach `floor`, and of those
        whose places conflict (below 0: they count against joining their groups).

        Comparing all pairs is quadratic (4.5 million for a 3,000-item morning).
        Reports of one event share rarer words (names, places, the event's own
        nouns), so each report is compared with the NEIGHBOURS reports that
        share the most weight of rarer words with it. Both steps are sparse
        matrix products (scipy): in Python loops they were most of a big
        morning's time.
        """
        pairs = {}
        for i, j, dot_product in zip(*self._neighbour_products(among)):
            similarity = self._adjusted(self.texts[i], self.texts[j], dot_product)
            if similarity >= floor or similarity < 0:
                pairs[i, j] = similarity
        return pairs

    def _neighbour_products(self, among: int) -> tuple[list[int], list[int], list[float]]:
        """The neighbour pairs among the first `among` texts (two lists: i < j) and their dot products."""
        products = self._dot_products.get(among)
        if products is None:
            import numpy as np

            agreement, terms = _sparse_rows(self.agreement[:among])
            # The word vectors are the agreement vectors' word terms ("=stem"; the rest are n-grams).
            words = agreement[:, [column for column, term in enumerate(terms) if term.startswith("=")]]
            firsts, seconds = _neighbour_pairs(words, among)
            dots = np.asarray(agreement[firsts].multiply(agreement[seconds]).sum(axis=1)).ravel()
            products = self._dot_products[among] = (firsts.tolist(), seconds.tolist(), dots.tolist())
        return products

    def closeness_to_centre(self, group: Sequence[int]) -> dict[int, float]:
        """How close each member is to the group's centre (the sum of its vectors)."""
        middle = _sum(self.vectors[i] for i in group)
        return {i: dot(self.vectors[i], middle) for i in group}


def _place_and_measure(a: Text, b: Text, place_bonus: float, measure_penalty: float) -> float:
    """What two texts' places and measures add to their similarity (their places do not conflict)."""
    bonus = place_bonus if not a.places.isdisjoint(b.places) else 0.0
    return bonus - measure_penalty if measures_differ(a, b) else bonus


def _sparse_rows(vectors: Sequence[dict[str, float]]) -> tuple["csr_matrix", list[str]]:
    """The vectors as the rows of a sparse matrix, and its columns' terms."""
    import numpy as np
    from scipy.sparse import csr_matrix

    columns: defaultdict[str, int] = defaultdict()
    columns.default_factory = columns.__len__  # a new term gets the next column, without a Python call
    indices: list[int] = []
    weights: list[float] = []
    ends = [0]
    for vector in vectors:
        indices.extend(map(columns.__getitem__, vector))
        weights.extend(vector.values())
        ends.append(len(indices))
    matrix = csr_matrix((np.array(weights, dtype=float), np.array(indices, dtype=np.int64), np.array(ends)),
                        shape=(len(vectors), max(len(columns), 1)))
    return matrix, list(columns)


def _neighbour_pairs(words: "csr_matrix", among: int) -> tuple["np.ndarray", "np.ndarray"]:
    """The pairs (i < j, as two arrays) of each text and the NEIGHBOURS texts sharing most weight of rarer
    words with it (in fewer than COMMON_TERM_SHARE of the texts, or COMMON_TERM_MIN_REPORTS)."""
    import numpy as np

    reports_using = np.bincount(words.indices, minlength=words.shape[1])
    rarer = words[:, np.flatnonzero(reports_using <= max(COMMON_TERM_MIN_REPORTS, COMMON_TERM_SHARE * among))]
    shared = (rarer @ rarer.T).tocsr()
    shared.setdiag(0)
    shared.eliminate_zeros()
    firsts, seconds = [], []
    for i in range(among):
        start, end = shared.indptr[i], shared.indptr[i + 1]
        nearest = shared.indices[start:end]
        if end - start > NEIGHBOURS:
            nearest = nearest[np.argpartition(-shared.data[start:end], NEIGHBOURS - 1)[:NEIGHBOURS]]
        firsts.append(np.full(len(nearest), i))
        seconds.append(nearest)
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    one, other = np.concatenate(firsts), np.concatenate(seconds)
    # Each pair once, i < j: i's neighbour j and j's neighbour i are one comparison.
    keys = np.unique(np.minimum(one, other).astype(np.int64) * among + np.maximum(one, other))
    return keys // among, keys % among


def template_shares(texts: Sequence[Text]) -> dict[str, float]:
    """For each word, the share of the pairs of reports sharing it that are about different countries.

    Template words ("مجلس الأمن", "مشروع قرار", "زلزال بقوة") are the ones the
    day's unrelated reports have in common. Reports whose places conflict (each
    about countries the other does not name in its headline or first sentence)
    tell which those are, whatever their frequency: "يتبنى" used by two votes on
    two countries is a template word of the day, a name used by two reports of
    one event is not. Words of reports about no country, or shared by none
    whose places conflict, are left out (share 0).
    """
    places: dict[tuple[frozenset[str], frozenset[str]], int] = {}
    kinds = [places.setdefault((t.subject, t.lead_places), len(places)) if t.subject else -1 for t in texts]
    example = {kind: texts[i] for i, kind in enumerate(kinds)}
    postings: dict[str, list[int]] = defaultdict(list)
    for text, kind in zip(texts, kinds):
        if kind >= 0:
            for term in text.words:
                postings[term].append(kind)
    conflicts: dict[tuple[int, int], bool] = {}
    shares = {}
    for term, members in postings.items():
        if len(members) < 2:
            continue
        counts = Counter(members)
        if len(counts) < 2:
            continue  # every report sharing it is about the same countries
        apart, kinds_here = 0, sorted(counts)
        for n, a in enumerate(kinds_here):
            for b in kinds_here[n + 1:]:
                conflict = conflicts.get((a, b))
                if conflict is None:
                    conflict = conflicts[a, b] = places_conflict(example[a], example[b])
                if conflict:
                    apart += counts[a] * counts[b]
        if apart:
            shares[term] = apart / (len(members) * (len(members) - 1) // 2)
    return shares


def _discounted(texts: Sequence[Text], gram_words: list[list[str]], gram_bags: list[Counter[str]],
                vectors: list[dict[str, float]], shares: dict[str, float], discount: float) -> list[dict[str, float]]:
    """The vectors for agreement: each template term scaled by √(1 - discount × share),
    so that the product of two reports' weights for it counts 1 - discount × share. A template word's n-grams
    are discounted as the word is, in proportion to how many of a gram's occurrences it gave.

    Only the dot products change, not the lengths: a report keeps the weight of all it says, so the
    discount lowers the similarity of template twins without raising that of everything else (scaling the
    words before normalising did: held out, precision fell to 0.90 on the made-up corpus).
    """
    scale = {term: math.sqrt(1 - discount * share) for term, share in shares.items()}
    # The rarer words (those with n-grams) whose term is a template one, with the term's factor.
    word_scale = {word: scale[term] for word in set(chain.from_iterable(gram_words))
                  if (term := _word_term(word)) in scale}
    agreement = []
    for text, rarer, bag, vector in zip(texts, gram_words, gram_bags, vectors):
        template = [term for term in text.words if term in scale]
        if not template:
            agreement.append(vector)
            continue
        adjusted = {term: vector[term] * scale[term] for term in template}  # a word term ("=stem") is no n-gram
        lost: Counter[str] = Counter()
        for word in rarer:
            factor = word_scale.get(word)
            if factor is not None:
                for gram in _grams(word):
                    lost[gram] += 1 - factor
        full = vector.copy()
        full.update(adjusted)
        full.update({gram: vector[gram] * (1 - share / bag[gram]) for gram, share in lost.items()})
        agreement.append(full)
    return agreement


def _sum(vectors: Iterable[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for vector in vectors:
        for term, weight in vector.items():
            total[term] += weight
    return total
