"""`python -m newsletter` and the `newsletter` command.

A report the MTA pipes into the spool (`bounces - --spool DIR`) is queued before anything else is
imported: that process runs once per bounce, and the command's libraries cost ten times the work.
"""

import sys

from .mail.spool import queue_report, queued_pipe


def main() -> None:
    spool = queued_pipe(sys.argv[1:])
    if spool is not None:
        sys.exit(queue_report(sys.stdin.buffer, spool, sys.stderr))
    from .cli import main as run_command

    run_command()


if __name__ == "__main__":
    main()
