"""`newsletter bounces` over an outside corpus: the 117 real reports in flufl.bounce's source
distribution (tests/flufl_corpus.py fetches it), with the addresses flufl's own tests expect.

Every address any sample names is a reader, so a report that hits the wrong reader shows up.
Each sample's word on each reader is read back from the store by its report id.
"""

from __future__ import annotations

import email
import hashlib
import re

import pytest
from sqlalchemy import select

from newsletter.store.schema import feedback, subscribers

from .conftest import run_cli
from .test_bounces import _maildir
from .flufl_corpus import Sample, samples

ADDRESS = re.compile(rb"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
BOUNCES = {"hard", "soft"}  # what counts toward taking a reader off the list
# Where we disagree with flufl on purpose (docs/deliverability.md, Bounces says why). flufl lists
# none of these as failures, so none is among the expected addresses: each is a bystander that
# must stay on the list, with the kind recorded here.
DISAGREEMENTS = {
    # Gmail's "550-5.7.1 … likely unsolicited mail": a spam block of *our* mail, not a dead mailbox.
    ("simple_42.txt", "david...@gmail.com"): "blocked",
}
BROKEN_REPORTS = {
    # A MIME report whose part claims a charset no codec knows, cut off in the middle of a part.
    "unknown-charset-truncated": (b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
                                  b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
                                  b"--b\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
                                  b"<gone@broken.example>: 550 5.1.1 no such user\r\n--b\r\nContent-Type: messa"),
    "not-mail": bytes(range(256)) * 4,
}


def report_id(raw: bytes) -> str:
    message_id = str(email.message_from_bytes(raw).get("Message-ID", "")).strip()
    return message_id if message_id and len(message_id) <= 200 else "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.fixture(scope="module")
def corpus() -> list[Sample]:
    return samples()


def _readers_of(corpus: list[Sample]) -> set[str]:
    """Every address a sample names, and those flufl expects (AOL's and Yale's name the mailbox only)."""
    return ({a.decode("ascii", "replace").lower() for sample in corpus for a in ADDRESS.findall(sample.raw)}
            | {a for sample in corpus for a in sample.permanent | sample.temporary})


def _word_on_each_reader(store) -> dict[tuple[str, str], str]:
    """{(report id, reader's address): kind} for everything the run recorded."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(feedback.c.report_id, subscribers.c.email, feedback.c.kind)
                            .join(subscribers, subscribers.c.id == feedback.c.subscriber_id)).all()
    return {(rid, address): kind for rid, address, kind in rows}


def test_the_corpus_has_what_flufl_promises(corpus):
    assert len(corpus) >= 117
    assert sum(len(s.permanent) for s in corpus) == 122
    assert sum(len(s.temporary) for s in corpus) == 11


def test_every_real_report_is_read_and_only_its_failed_readers_are_bounced(env, store, corpus, tmp_path):
    readers = _readers_of(corpus)
    for address in sorted(readers):
        store.add_subscriber(address, "")
    folder = _maildir(tmp_path / "Maildir", [s.raw for s in corpus] + list(BROKEN_REPORTS.values()))

    result = run_cli("bounces", str(folder), env=env, timeout=300)

    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"Read {len(corpus) + len(BROKEN_REPORTS)} report(s)" in result.stdout, result.stdout[-2000:]
    assert result.returncode == 1, "some samples are not bounces (flufl expects nothing of them): a person looks"
    problem_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert sum("unreadable:" in line for line in problem_lines) >= 1, "the broken reports are named"
    assert all(line.count("\n") == 0 for line in problem_lines)

    word = _word_on_each_reader(store)
    permanent_bounced, temporary_bounced, bystanders_bounced, wrong = [], [], [], []
    for sample in corpus:
        rid = report_id(sample.raw)
        for address in sample.permanent:
            (permanent_bounced.append if word.get((rid, address)) in BOUNCES else wrong.append)(
                (sample.name, address, word.get((rid, address))))
        for address in sample.temporary:
            if word.get((rid, address)) in BOUNCES:
                temporary_bounced.append((sample.name, address, word[(rid, address)]))
        named = sample.permanent | sample.temporary
        for (other_rid, address), kind in word.items():
            if other_rid != rid or address in named:
                continue
            expected = DISAGREEMENTS.get((sample.name, address))
            if kind in BOUNCES or (expected is not None and kind != expected):
                bystanders_bounced.append((sample.name, address, kind))

    assert len(permanent_bounced) >= 120, wrong
    assert temporary_bounced == []
    assert bystanders_bounced == []
    for (name, address), kind in DISAGREEMENTS.items():
        sample = next(s for s in corpus if s.name == name)
        assert word.get((report_id(sample.raw), address)) == kind, (name, address)

    # Every reader a sample names only as a delay warning or in passing is still on the list.
    named_failed = {a for s in corpus for a in s.permanent}
    still_active = {row.email for row in store.engine.connect().execute(
        select(subscribers.c.email).where(subscribers.c.status == "active"))}
    assert readers - named_failed <= still_active

    again = run_cli("bounces", str(folder), env=env, timeout=300)
    assert "Traceback" not in again.stderr
    assert "Readers now bounced: 0, unsubscribed by a complaint: 0" in again.stdout, again.stdout[-1000:]
    assert _word_on_each_reader(store) == word, "reading the mailbox again counts nothing twice"
