"""Run one command and report its own wall time, CPU time and peak RSS, as JSON.

    python -S -I benchmarks/launch.py REPORT.json CMD [ARGS...]

Why a launcher: Linux keeps a process's peak RSS (ru_maxrss) across execve,
and a child that subprocess starts with vfork/fork begins with the parent's
peak; a child of the harness (which has SQLAlchemy, aiosmtpd… loaded) would
report the harness's RSS, not its own. This launcher is a bare Python
(`-S -I`, only built-in modules before the fork), so a command forked from it
starts from about 5 MB: the peak RSS reported is the command's own for anything
bigger than that.
"""

import os
import sys
import time


def main() -> int:
    report, cmd = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):  # pass them on, then report as usual
        signal.signal(sig, lambda signum, frame: os.kill(pid, signum))
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    import json

    with open(report, "w") as f:
        json.dump({"wall": wall, "user": usage.ru_utime, "system": usage.ru_stime,
                   "maxrss_kb": usage.ru_maxrss, "exit_code": code}, f)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
