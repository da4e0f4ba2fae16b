"""The systemd units in deploy/: they verify, they are locked down, and their commands exist.

`systemd-analyze verify` checks every setting and that each command is executable; it reads the
units as installed, so the copy checked here has /opt/newsletter (where docs/operating.md installs the
project) replaced by this checkout. `systemd-analyze security --offline` scores how exposed each
service is, the way `systemd-analyze security` does on a running system.
"""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from newsletter.config import Settings

from .conftest import PROJECT

DEPLOY = PROJECT / "deploy"
INSTALLED_AT = "/opt/newsletter"
SERVICES = sorted(p.name for p in DEPLOY.glob("*.service"))
TIMERS = sorted(p.name for p in DEPLOY.glob("*.timer"))
# Exposure on systemd's scale of 0 (locked down) to 10 (unprotected); 2.0 and under is "OK".
MOST_EXPOSURE = 2.0


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read_string((DEPLOY / name).read_text(encoding="utf-8"))
    return parser


def values(name: str, section: str, key: str) -> list[str]:
    """Every value of a key that may repeat (configparser keeps only the last)."""
    text = (DEPLOY / name).read_text(encoding="utf-8")
    body = text.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
    return [m.group(1).strip() for m in re.finditer(rf"^{re.escape(key)}=(.*)$", body, re.MULTILINE)]


@pytest.fixture(scope="module")
def here(tmp_path_factory) -> Path:
    """The units with the install path pointing at this checkout."""
    folder = tmp_path_factory.mktemp("units")
    for path in DEPLOY.glob("newsletter-*"):
        (folder / path.name).write_text(path.read_text(encoding="utf-8").replace(INSTALLED_AT, str(PROJECT)),
                                        encoding="utf-8")
    return folder


def test_the_units_are_there():
    assert SERVICES == ["newsletter-bounces.service", "newsletter-send.service", "newsletter-serve.service"]
    assert TIMERS == ["newsletter-bounces.timer", "newsletter-send.timer"]


def test_every_unit_verifies_without_a_warning(here):
    result = subprocess.run(["systemd-analyze", "verify", *(f"./{n}" for n in SERVICES + TIMERS)],
                            cwd=here, capture_output=True, text=True, timeout=120)

    # verify exits 0 on an unknown or misspelt setting, and only warns: any output is a failure
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_locked_down(here, name):
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", f"./{name}"],
                            cwd=here, capture_output=True, text=True, timeout=120)
    exposure = float(re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout).group(1))

    assert exposure <= MOST_EXPOSURE, result.stdout
    service = unit(name)["Service"]
    for setting in ("DynamicUser", "NoNewPrivileges"):
        assert service[setting] == "yes", setting
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "newsletter"


@pytest.mark.parametrize("name", SERVICES)
def test_state_stays_in_the_state_directory(name):
    state = f"/var/lib/{unit(name)['Service']['StateDirectory']}/"
    defaults = dict(v.split("=", 1) for v in values(name, "Service", "Environment"))

    assert defaults["NEWSLETTER_DATABASE_URL"] == f"sqlite:///{state}subscribers.sqlite3"
    assert defaults["NEWSLETTER_EDITORIAL_DIR"].startswith(state)
    for command in values(name, "Service", "ExecStart"):
        for option, path in re.findall(r"--(keep-dir|spool) (\S+)", command):
            assert path.startswith(state), f"{option} outside the only writable place: {path}"


@pytest.mark.parametrize("name", SERVICES)
def test_every_command_in_a_unit_is_one_the_cli_takes(name):
    commands = values(name, "Service", "ExecStartPre") + values(name, "Service", "ExecStart")
    assert commands
    for command in commands:
        program, *args = shlex.split(command)
        assert program == f"{INSTALLED_AT}/.venv/bin/newsletter"
        # Click rejects an unknown option or command (exit 2) before it acts on --help
        result = subprocess.run([str(PROJECT / ".venv/bin/newsletter"), *args, "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{command}: {result.stderr}"


def test_the_morning_send_starts_at_the_edition_time():
    settings = Settings(_env_file=None)
    timer = unit("newsletter-send.timer")["Timer"]

    assert timer["OnCalendar"] == f"*-*-* {settings.edition_time:%H:%M:%S} {settings.timezone}"
    assert timer["Persistent"] == "true", "a machine that was off at the edition time sends when it is back"
    assert timer["Unit"] == "newsletter-send.service"
    send = unit("newsletter-send.service")["Service"]
    assert send["Type"] == "oneshot"
    assert values("newsletter-send.service", "Service", "ExecStartPre") == [
        f"{INSTALLED_AT}/.venv/bin/newsletter db upgrade"], "the schema is brought up to date first"
