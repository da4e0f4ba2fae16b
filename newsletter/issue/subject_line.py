"""Where a headline may be cut for the subject line, and what the preheader carries on with.

A phone's inbox shows one line of subject: about 45 characters at 375–390 px (iPhone Mail, Gmail
and Outlook for iOS and Android, in their default text size). Arabic letters are narrower than
Latin ones at the same size, so 45 characters of Arabic fit where 45 of English do. A headline
cut at 45 characters wherever it falls ends mid-phrase («…من الحرب على…»). This cuts, in the
second half of the room, after punctuation if there is some, or else before a word that opens a
phrase (a preposition, a conjunction, «لـ» of purpose), or else between any two words; never after
a word that needs the next one.
"""

from __future__ import annotations

import re

SUBJECT_LIMIT = 45  # characters, the ellipsis included: one line of a phone's inbox
ELLIPSIS = "…"

# Words that cannot end a phrase: they open what follows (prepositions, conjunctions, particles,
# relative pronouns). A cut after them reads as broken Arabic.
_OPENERS = frozenset("""
في من على إلى الى عن مع بعد قبل حول ضد بين عند منذ خلال نحو لدى حتى عبر أمام وسط بشأن دون ضمن
تجاه إثر اثر رغم فوق تحت لـ و أو او ثم بل أن إن ان أنّ إنّ لا لم لن قد ما كما كي لكي التي الذي
الذين اللذين اللتين اللواتي اللاتي وفي ومن وعلى وإلى وعن ومع وبعد وقبل وبين وأن وإن ولا ولم ولن
وقد لأن لان إذ إذا اذا بينما فيما حيث أي
""".split())
# A cut right after one of these closes a phrase.
_PUNCTUATION = "،,؛;:.!؟?—–-"
_WORD = re.compile(r"\S+")


def cut_at_phrase(text: str, limit: int = SUBJECT_LIMIT) -> tuple[str, str]:
    """(head, rest): `head` fits in `limit` characters with an ellipsis when cut; `rest` is what
    it left out, "" when nothing was cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text, ""
    room = limit - len(ELLIPSIS)
    ends = [m.end() for m in _WORD.finditer(text) if m.end() <= room]
    late = [end for end in ends if end >= room // 2]
    for closes_a_phrase in (lambda end: text[end - 1] in _PUNCTUATION, lambda end: _opens_a_phrase(text, end)):
        cuts = [end for end in late if closes_a_phrase(end)]
        if cuts:
            return _split(text, cuts[-1])
    for end in reversed(ends):
        last_word = text[:end].rsplit(" ", 1)[-1]
        if last_word not in _OPENERS:
            return _split(text, end)
    # One word longer than the limit: cut inside it rather than send an empty subject.
    return text[:room] + ELLIPSIS, text[room:]


def _opens_a_phrase(text: str, end: int) -> bool:
    """Whether the word after `end` begins a phrase of its own."""
    following = text[end:].split(maxsplit=1)
    if not following:
        return False
    word = following[0]
    # «لبحث», «لإطلاق»: لـ of purpose; «للوزراء» (لـ + ال) mostly completes the word before it.
    return word in _OPENERS or (word.startswith("ل") and not word.startswith("لل") and len(word) > 3)


def _split(text: str, end: int) -> tuple[str, str]:
    head = text[:end].rstrip(_PUNCTUATION + " ")
    return head + ELLIPSIS, text[end:].strip()
