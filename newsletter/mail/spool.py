"""A spool for delivery reports piped by the MTA: queued in a few milliseconds, applied in batches.

`newsletter bounces - --spool DIR` is what Postfix runs once per report: it only writes the report
into DIR, a Maildir (tmp/ then new/, the atomic way), with nothing but the standard library, so a
bounce storm after a big send costs each report a fraction of the CPU of reading it there and then.
`newsletter bounces --spool DIR` (from cron, every minute) then reads every queued report on its
own, as any other source, and takes it out of the spool once handled.

This module must stay importable without the rest of the package's dependencies: the MTA's pipe
starts Python for it alone (see newsletter/__main__.py).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import BinaryIO, TextIO

EX_TEMPFAIL = 75  # the MTA keeps the report and pipes it again later
MAX_QUEUED_BYTES = 5 * 1024 * 1024  # as report_sources.MAX_REPORT_BYTES: larger is no delivery report


def queue_report(stdin: BinaryIO, spool: Path, say: TextIO) -> int:
    """Write the report on stdin into the spool; the exit code for the MTA (0: it is ours now)."""
    raw = stdin.read(MAX_QUEUED_BYTES + 1)
    if len(raw) > MAX_QUEUED_BYTES:
        say.write(f"stdin: larger than {MAX_QUEUED_BYTES // (1024 * 1024)} MB, so not a delivery report "
                  "(not queued)\n")
        return 1
    if not raw.strip():
        say.write("stdin: empty (not queued)\n")
        return 1
    try:
        path = _write_new(spool, raw)
    except OSError as exc:
        say.write(f"stdin: cannot queue the report in {spool}: {exc.strerror or exc}; the MTA will try again\n")
        return EX_TEMPFAIL
    say.write(f"stdin: queued as {path}\n")
    return 0


def _write_new(spool: Path, raw: bytes) -> Path:
    """Deliver `raw` into the Maildir `spool` the Maildir way: written in tmp/, synced, renamed into new/."""
    for sub in ("tmp", "new", "cur"):
        (spool / sub).mkdir(parents=True, exist_ok=True)
    # Maildir's unique name: time, process and randomness, host (one report per process).
    name = f"{time.time_ns()}.P{os.getpid()}R{os.urandom(6).hex()}.{socket.gethostname().replace('/', '_')}"
    temporary = spool / "tmp" / name
    with open(temporary, "xb") as handle:
        handle.write(raw)
        handle.flush()
        os.fsync(handle.fileno())
    final = spool / "new" / name
    os.rename(temporary, final)
    return final


def queued_pipe(args: list[str]) -> Path | None:
    """The spool of a command line that only queues a piped report (`bounces - --spool DIR`), else None."""
    if len(args) not in (3, 4) or args[0] != "bounces" or "-" not in args[1:]:
        return None
    rest = [a for a in args[1:] if a != "-"]
    if len(rest) == 1 and rest[0].startswith("--spool="):
        return Path(rest[0].removeprefix("--spool="))
    if len(rest) == 2 and rest[0] == "--spool" and not rest[1].startswith("-"):
        return Path(rest[1])
    return None
