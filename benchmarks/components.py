"""The per-message costs of `newsletter send`, each timed alone (one thread, no GIL contention).

What one message costs on the send path, piece by piece, to put next to the
measured CPU per message of a real send:

- personalise: MessageTemplate.personalise (our splice of pre-encoded bytes);
- aiosmtplib DATA preparation: what SMTP.data() does to every message before
  writing it (normalize_message_line_endings, then the dot-stuffing regex);
- aiosmtplib address checks: sendmail() parses sender and recipient, MAIL and
  RCPT quote them again (email.utils.parseaddr, four times a message);
- store: claim_fresh (keyset pages of NEWSLETTER_BATCH_SIZE) and the send's group commits
  (the delivery log's rounds: groups of K, one transaction each, as with K connections; also
  groups of 1 and 100, to split a fixed cost per transaction from a cost per row).

    python benchmarks/components.py --workdir DIR [--messages 20000] [--connections 10]

Prints one JSON object; a component the installed code does not offer is reported as unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import time
import uuid
from pathlib import Path


def per_call(func, n: int, repeats: int = 5) -> float:
    """Median over `repeats` of the mean µs per call of func(i) for i in range(n)."""
    means = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(n):
            func(i)
        means.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(means)


def _group_commit(log, issue_id: int, run_id: str):
    """record(outcomes): one of the send's group commits (its rounds), or record_outcomes in revisions before them."""
    if not hasattr(log, "rounds"):
        return lambda outcomes: log.record_outcomes(issue_id, run_id, outcomes)
    loop = asyncio.new_event_loop()
    rounds = log.rounds(issue_id, run_id)
    return lambda outcomes: loop.run_until_complete(rounds.record(outcomes, []))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--from-address", default="morning@news.example")
    parser.add_argument("--base-url", default="https://news.example")
    parser.add_argument("--secret-key", default="benchmark-secret-key-0123456789abcdef")
    args = parser.parse_args()

    from newsletter.config import Settings
    from newsletter.edition import draft_edition, render_draft
    from newsletter.mail.message import MessageTemplate, Recipient, ascii_address
    from newsletter.store.database import Store

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "components.sqlite3"
    for leftover in workdir.glob("components.sqlite3*"):
        leftover.unlink()
    settings = Settings(_env_file=None, database_url=f"sqlite:///{db}", from_address=args.from_address,
                        base_url=args.base_url, secret_key=args.secret_key)
    store = Store(settings.database_url)
    date = dt.date(2017, 5, 9)
    rendered = render_draft(settings, draft_edition(settings, store, date))
    template = MessageTemplate(rendered, settings)
    recipients = [Recipient(i, f"reader{i}@example.com") for i in range(1, 2001)]
    message = template.personalise(recipients[0])
    results: dict = {"message_bytes": len(message)}
    n = 2000

    results["personalise"] = per_call(lambda i: template.personalise(recipients[i]), n)
    results["unsubscribe_token"] = per_call(lambda i: template.tokens.unsubscribe_token(i + 1), n)
    results["ascii_address"] = per_call(lambda i: ascii_address(recipients[i].email), n)

    try:
        from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

        def prepare(_):
            data = normalize_message_line_endings(message)
            data = PERIOD_REGEX.sub(b"..", data)
            return data + b".\r\n"

        results["aiosmtplib_data_preparation"] = per_call(prepare, 300)
        results["aiosmtplib_normalize_line_endings"] = per_call(lambda _: normalize_message_line_endings(message), 300)
        results["aiosmtplib_dot_stuffing"] = per_call(lambda _: PERIOD_REGEX.sub(b"..", message), 300)
        # What a sender whose bytes are CRLF by construction (base64 lines, ASCII headers joined
        # with CRLF) would do instead of rewriting: look for a line starting with a dot.
        results["check_no_leading_dot"] = per_call(lambda _: b"\r\n." in message or message.startswith(b"."), 300)
        results["message_lines_starting_with_dot"] = message.count(b"\r\n.")
        results["message_lone_cr_or_lf"] = (message.count(b"\n") - message.count(b"\r\n")) + (
            message.count(b"\r") - message.count(b"\r\n"))
    except ImportError as exc:
        results["aiosmtplib_data_preparation"] = f"unavailable: {exc}"

    try:
        from aiosmtplib.email import parse_address, quote_address

        def addresses(i):
            parse_address(settings.from_address)
            parse_address(recipients[i].email)
            quote_address(settings.from_address)
            quote_address(recipients[i].email)

        results["aiosmtplib_address_checks"] = per_call(addresses, n)
    except ImportError as exc:
        results["aiosmtplib_address_checks"] = f"unavailable: {exc}"

    # The store, as the send uses it (the calls Sender makes, from one thread here).
    try:
        from newsletter.store.database import Outcome

        m, k = args.messages, args.connections
        for first in range(1, m + 1, 50_000):
            store.add_subscribers([(f"reader{i}@example.com", "") for i in range(first, min(first + 50_000, m + 1))])
        issue = store.save_issue(date.isoformat(), rendered.subject, rendered.preheader, rendered.html,
                                 rendered.text, rendered.stories)
        run_id = uuid.uuid4().hex
        log = getattr(store, "log", store)  # the delivery log: Store.log since the store split, Store before
        log.start_run(issue.id, run_id, "benchmarks.components")
        claimed: list[int] = []
        after = 0
        t = time.perf_counter()
        while True:
            claim = getattr(log, "claim_fresh", None)  # claim_batch before claims skipped others' readers
            batch, last = claim(issue.id, run_id, after, settings.batch_size) if claim else \
                log.claim_batch(issue.id, run_id, after, settings.batch_size,
                                dt.timedelta(seconds=settings.stale_run_seconds))
            if last == after:
                break
            after = last
            claimed.extend(s.id for s in batch)
        results["store_claim_batch"] = (time.perf_counter() - t) / max(len(claimed), 1) * 1e6
        # (claim_batch's first page also pays SQLAlchemy's statement compilation, once)
        # The send's group commits (its rounds) in groups of 1, K and 100 rows (distinct subscribers
        # each time), to split their cost into a fixed part per transaction and a part per row.
        record = _group_commit(log, issue.id, run_id)
        groups = {1: claimed[: m // 10], k: claimed[m // 10: m // 2], 100: claimed[m // 2:]}
        per_row, cpu_per_row = {}, {}
        for size, ids in groups.items():
            t, c = time.perf_counter(), time.thread_time()
            for start in range(0, len(ids), size):
                record([(sid, Outcome.sent, "250 OK") for sid in ids[start:start + size]])
            per_row[size] = (time.perf_counter() - t) / max(len(ids), 1) * 1e6
            cpu_per_row[size] = (time.thread_time() - c) / max(len(ids), 1) * 1e6
        results["store_record_outcomes"] = per_row[k]
        results["store_record_outcomes_cpu"] = cpu_per_row[k]
        results["store_record_outcomes_by_group_size"] = {str(size): us for size, us in per_row.items()}
        results["store_record_outcomes_cpu_by_group_size"] = {str(size): us for size, us in cpu_per_row.items()}
        # per_row(g) = fixed / g + row: solve with g = 1 and g = 100.
        row = (per_row[100] * 100 - per_row[1]) / 99
        results["store_record_outcomes_fixed_per_transaction_us"] = per_row[1] - row
        results["store_record_outcomes_per_row_us"] = row
        results["store_messages"] = len(claimed)
    except Exception as exc:  # the store API is still moving; say so instead of failing
        results["store_claim_batch"] = f"unavailable: {type(exc).__name__}: {exc}"
    store.close()
    for leftover in workdir.glob("components.sqlite3*"):
        leftover.unlink()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
