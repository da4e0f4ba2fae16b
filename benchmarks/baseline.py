"""The hand-written baseline: what one would write with the standard library alone.

For every active subscriber in the store (read with sqlite3), build the message
with email.message.EmailMessage — the same subject, HTML and plain text as the
issue, the same headers, a personal unsubscribe URL signed with hmac — and send
it with smtplib over one connection. Stdlib only; run as a script:

    python benchmarks/baseline.py --db S.sqlite3 --issue issue.json --port 2525

Prints one JSON line: messages sent, bytes sent, seconds in the send loop.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import email.policy
import hashlib
import hmac
import json
import smtplib
import sqlite3
import sys
import time
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime


def unsubscribe_token(key: bytes, subscriber_id: int) -> str:
    signature = hmac.new(key, str(subscriber_id).encode("ascii"), hashlib.sha1).digest()
    return f"{subscriber_id}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode('ascii')}"


def build(issue: dict, subscriber_id: int, address: str, name: str, token: str, date: str) -> EmailMessage:
    url = f"{issue['base_url']}/unsubscribe/{token}"
    msg = EmailMessage()
    msg["To"] = Address(display_name=name, addr_spec=address)
    msg["Message-ID"] = f"<morning.{issue['issue_tag']}.{subscriber_id}@{issue['sender_domain']}>"
    msg["List-Unsubscribe"] = f"<{url}>"
    msg["From"] = Address(display_name=issue["from_name"], addr_spec=issue["from_address"])
    msg["Subject"] = issue["subject"]
    msg["Date"] = date
    msg["List-Id"] = f"{issue['from_name']} <{issue['list_id']}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(issue["text"].replace(issue["slot"], token), cte="base64")
    msg.add_alternative(issue["html"].replace(issue["slot"], token), subtype="html", cte="base64")
    return msg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="SQLite store with the subscribers table")
    parser.add_argument("--issue", required=True, help="JSON: subject, html, text, slot, from/base_url/secret…")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    with open(args.issue, encoding="utf-8") as f:
        issue = json.load(f)
    key = issue["secret_key"].encode("utf-8")
    date = format_datetime(dt.datetime.now(dt.timezone.utc))
    db = sqlite3.connect(args.db)
    rows = db.execute("SELECT id, email, name FROM subscribers WHERE status = 'active' ORDER BY id")

    sent = sent_bytes = 0
    started = time.perf_counter()
    with smtplib.SMTP(args.host, args.port, local_hostname="localhost") as smtp:
        for subscriber_id, address, name in rows:
            msg = build(issue, subscriber_id, address, name, unsubscribe_token(key, subscriber_id), date)
            data = msg.as_bytes(policy=email.policy.SMTP)
            smtp.sendmail(issue["from_address"], [address], data)
            sent += 1
            sent_bytes += len(data)
    elapsed = time.perf_counter() - started
    db.close()
    print(json.dumps({"sent": sent, "bytes": sent_bytes, "loop_seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
