"""Build and personalise timings, in a fresh process (so the first build is really cold).

- build: newsletter.edition.draft_edition (feeds read + selection) then
  render_draft (Jinja2 → MJML → mjml-python → premailer inlining), the first
  call cold and then warm; the split between read/select/render/compile/inline
  comes from timing wrappers put around those functions in this process only.
- personalise: MessageTemplate.personalise, averaged over many recipients, in
  batches; plain address and an Arabic display name.

    python benchmarks/micro.py --workdir DIR [--builds 5] [--recipients 20000]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import statistics
import sys
import time
from pathlib import Path

ISSUE_DATE = dt.date(2017, 5, 9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--builds", type=int, default=5)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--from-address", default="morning@news.example")
    parser.add_argument("--base-url", default="https://news.example")
    parser.add_argument("--secret-key", default="benchmark-secret-key-0123456789abcdef")
    args = parser.parse_args()

    started = time.perf_counter()
    from newsletter import edition
    from newsletter.issue import render
    from newsletter.config import Settings
    from newsletter.mail.message import MessageTemplate, Recipient
    from newsletter.store.database import Store
    import_seconds = time.perf_counter() - started

    # Timing wrappers around the stages, in this process only (module globals,
    # looked up at call time by edition.draft_edition and Renderer.render).
    stage_times: dict[str, float] = {}

    def timed(name, func):
        @functools.wraps(func)
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return func(*a, **kw)
            finally:
                stage_times[name] = stage_times.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    edition.read_feeds = timed("read_feeds", edition.read_feeds)
    edition.select_stories = timed("select_stories", edition.select_stories)
    render.compile_mjml = timed("compile_mjml", render.compile_mjml)
    render.inline_css = timed("inline_css", render.inline_css)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "micro.sqlite3"
    for leftover in workdir.glob("micro.sqlite3*"):
        leftover.unlink()
    settings = Settings(_env_file=None, database_url=f"sqlite:///{db}", from_address=args.from_address,
                        base_url=args.base_url, secret_key=args.secret_key)
    store = Store(settings.database_url)

    builds = []
    rendered = None
    for _ in range(args.builds):
        stage_times.clear()
        t0 = time.perf_counter()
        draft = edition.draft_edition(settings, store, ISSUE_DATE)
        t1 = time.perf_counter()
        rendered = edition.render_draft(settings, draft)
        t2 = time.perf_counter()
        stages = dict(stage_times)
        builds.append({
            "total": t2 - t0,
            "draft": t1 - t0,
            "render": t2 - t1,
            "read_feeds": stages.get("read_feeds", 0.0),
            "select_stories": stages.get("select_stories", 0.0),
            "compile_mjml": stages.get("compile_mjml", 0.0),
            "inline_css": stages.get("inline_css", 0.0),
            "templates": (t2 - t1) - stages.get("compile_mjml", 0.0) - stages.get("inline_css", 0.0),
        })
    store.close()
    assert rendered is not None

    t = time.perf_counter()
    template = MessageTemplate(rendered, settings)
    template_seconds = time.perf_counter() - t

    def personalise_batches(name: str) -> list[float]:
        means = []
        n = args.recipients
        for batch in range(args.batches):
            recipients = [Recipient(i, f"reader{i}@example.com", name) for i in range(batch * n + 1, (batch + 1) * n + 1)]
            t = time.perf_counter()
            for recipient in recipients:
                template.personalise(recipient)
            means.append((time.perf_counter() - t) / n * 1e6)
        return means

    plain = personalise_batches("")
    named = personalise_batches("ليلى حداد")
    message = template.personalise(Recipient(1, "reader1@example.com"))

    warm = builds[1:] or builds
    result = {
        "import_seconds": import_seconds,
        "build_cold": builds[0],
        "build_warm_median": {key: statistics.median(b[key] for b in warm) for key in builds[0]},
        "builds": builds,
        "html_bytes": len(rendered.html.encode("utf-8")),
        "text_bytes": len(rendered.text.encode("utf-8")),
        "stories": len(rendered.stories),
        "message_bytes": len(message),
        "template_seconds": template_seconds,
        "personalise_us": {
            "recipients_per_batch": args.recipients,
            "plain_batches": plain,
            "plain_median": statistics.median(plain),
            "arabic_name_batches": named,
            "arabic_name_median": statistics.median(named),
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
