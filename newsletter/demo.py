"""`make demo`: the morning send end to end, on the embedded default, with no configuration.

Starts a local SMTP server that writes each message to outbox/ as .eml, imports
the sample list into a demo database, and runs the real `newsletter send`
(twice: the second run shows that nothing is sent again).
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import sys

from .config import PROJECT_DIR
from .mail.outbox import start_outbox
from .sample_pictures import with_sample_pictures

DEMO_DATE = "2017-05-09"  # the day of the bundled sample feeds
DEMO_DB = PROJECT_DIR / "subscribers" / "demo.sqlite3"
OUTBOX = PROJECT_DIR / "outbox"


def _newsletter(*args: str, env: dict[str, str]) -> int:
    print(f"\n$ newsletter {' '.join(args)}", flush=True)
    return subprocess.call([sys.executable, "-m", "newsletter", *args], env=env)


def main() -> int:
    shutil.rmtree(OUTBOX, ignore_errors=True)
    for leftover in DEMO_DB.parent.glob(DEMO_DB.name + "*"):
        leftover.unlink()
    controller, handler = start_outbox(OUTBOX)
    env = {
        **os.environ,
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{DEMO_DB}",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(controller.port),
        "NEWSLETTER_SMTP_TLS": "none",
        "NEWSLETTER_FROM_ADDRESS": "newsletter@morning.example",
        "NEWSLETTER_BASE_URL": "http://127.0.0.1:8000",
    }
    print(f"Local SMTP server on 127.0.0.1:{controller.port}, saving messages to {OUTBOX}/")
    try:
        steps = [
            ("subscribers", "import", str(PROJECT_DIR / "subscribers" / "sample.csv")),
            ("send", "--date", DEMO_DATE),
            ("send", "--date", DEMO_DATE),
            ("render", "--date", DEMO_DATE, "--out", str(OUTBOX / "issue")),
        ]
        for step in steps:
            code = _newsletter(*step, env=env)
            if code != 0:
                print(f"demo failed: `newsletter {' '.join(step)}` exited {code}", file=sys.stderr)
                return code
    finally:
        controller.stop()
    received = sorted(OUTBOX.glob("*.eml"))
    if not received:
        print("demo failed: no message reached the outbox", file=sys.stderr)
        return 1
    first = email.message_from_bytes(received[0].read_bytes(), policy=email.policy.default)
    # The sample feeds' pictures live on made-up hosts: the local copy shows sample pictures instead.
    html = with_sample_pictures(first.get_body(("html",)).get_content(), lambda picture: picture.as_uri())
    (OUTBOX / "first-message.html").write_text(html, encoding="utf-8")
    print(f"\n{len(received)} messages in {OUTBOX}/ (one .eml per subscriber).")
    print(f"Subject: {first['Subject']}")
    print(f"Open the email as its first reader sees it: {OUTBOX / 'first-message.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
