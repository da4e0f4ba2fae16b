"""Debian's Thunderbird under a throw-away Xvfb, opening one .eml file in a message window.

A profile of its own in a temp folder (no account, no first-run wizard, no default-client
check, no telemetry, no updates, no start page), the message view chosen by the prefs the View
menu sets, the window sized and scrolled with xdotool and photographed with ImageMagick's
`import`. Everything started here runs in process groups of its own and is killed on stop,
also when a test fails or is interrupted.
"""

from __future__ import annotations

import enum
import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageChops

from .leftovers import server_folder

HOW = "`make test` installs Debian's thunderbird, xvfb, xdotool and imagemagick"


class View(enum.Enum):
    """View > Message Body As: the prefs Thunderbird's own menu items set (mailWindowOverlay.js,
    MsgBodyAllowHTML / MsgBodySanitized / MsgBodyAsPlaintext): prefer_plaintext, html_as,
    disallow_mime_handlers. html_as 0 shows the HTML as sent, 3 through the sanitizer, 1 the
    text/plain alternative; disallow_mime_handlers 1 is gDisallow_classes_no_html."""

    original_html = (False, 0, 0)
    simple_html = (False, 3, 1)
    plain_text = (True, 1, 1)


# The same views from the window's own menu: View (Alt+V) > Message Body As (B) > H, S or P,
# the accesskeys of Thunderbird's en-US messenger.dtd (the profile asks for en-US).
MENU_KEY = {View.original_html: "h", View.simple_html: "s", View.plain_text: "p"}


# Quiet start-up: without these a new profile opens the account hub over the main window,
# asks to be the default client, shows the rights bar and tries to reach the network.
PREFS: dict[str, object] = {
    "mail.provider.suppress_dialog_on_startup": True,
    "mail.provider.enabled": False,
    "mail.shell.checkDefaultClient": False,
    "mail.rights.override": True,
    "mail.spotlight.firstRunDone": True,
    "mail.winsearch.firstRunDone": True,
    "mail.startup.enabledMailCheckOnce": True,
    "mailnews.start_page.enabled": False,
    "mailnews.start_page.url": "about:blank",
    "mailnews.start_page.override_url": "about:blank",
    "app.update.auto": False,
    "app.update.enabled": False,
    "app.update.disabledForTesting": True,
    "extensions.update.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "browser.shell.checkDefaultBrowser": False,
    "network.proxy.type": 0,
    "mail.biff.show_alert": False,
    "mail.biff.play_sound": False,
    "intl.locale.requested": "en-US",
    # Screenshots of a still window: no smooth scrolling, no fading overlay scrollbars (a classic
    # one also shows when something is wider than the window), no animations, no blinking caret.
    "general.smoothScroll": False,
    "widget.gtk.overlay-scrollbars.enabled": False,
    "ui.prefersReducedMotion": 1,
    "ui.caretBlinkTime": 0,
    "toolkit.cosmeticAnimations.enabled": False,
    # Lets chrome/userChrome.css below lift the window's minimum width.
    "toolkit.legacyUserProfileCustomizations.stylesheets": True,
}

# The message window will not shrink below the width its toolbars ask for (600 px); a phone's
# width needs that minimum lifted.
USER_CHROME = ":root, #messengerWindow, body { min-width: 0 !important; }\n"


def _require(program: str) -> str:
    found = shutil.which(program)
    if not found:
        raise RuntimeError(f"{program} is not installed: {HOW}")
    return found


def _pref(name: str, value: object) -> str:
    literal = ("true" if value else "false") if isinstance(value, bool) else (
        str(value) if isinstance(value, int) else '"' + str(value).replace('"', '\\"') + '"')
    return f'user_pref("{name}", {literal});\n'


def _kill_group(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


class Thunderbird:
    """One X server and one profile; `open` starts Thunderbird on a message, `close` ends it."""

    def __init__(self, screen: tuple[int, int] = (1100, 1000)) -> None:
        self.thunderbird = _require("thunderbird")
        self.xdotool = _require("xdotool")
        self.import_ = _require("import")
        xvfb = _require("Xvfb")
        self.dir = server_folder("thunderbird")
        self.profile = self.dir / "profile"
        self.profile.mkdir()
        (self.profile / "chrome").mkdir()
        (self.profile / "chrome" / "userChrome.css").write_text(USER_CHROME, encoding="utf-8")
        self.process: subprocess.Popen | None = None
        self.window: str | None = None
        self.log: BinaryIO | None = None
        # -displayfd: Xvfb picks a free display number itself and writes it to the pipe once ready.
        read, write = os.pipe()
        self.xvfb = subprocess.Popen(
            [xvfb, "-displayfd", str(write), "-screen", "0", f"{screen[0]}x{screen[1]}x24", "-nolisten", "tcp"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(write)
        try:
            with os.fdopen(read) as pipe:
                number = pipe.readline().strip()
            if not number:
                raise RuntimeError("Xvfb did not start")
        except BaseException:
            self.stop()
            raise
        self.env = {**os.environ, "DISPLAY": f":{number}", "HOME": str(self.dir), "MOZ_CRASHREPORTER_DISABLE": "1",
                    "MOZ_DISABLE_AUTO_SAFE_MODE": "1", "NO_AT_BRIDGE": "1", "LANG": "C.UTF-8"}

    def _x(self, *args: str) -> str:
        return subprocess.run([self.xdotool, *args], env=self.env, capture_output=True, text=True,
                              timeout=20).stdout.strip()

    def open(self, eml: Path, view: View, title: str, timeout: float = 60) -> None:
        """Start Thunderbird on `eml` in `view` and wait for the message window, found by its
        title (`title`: a regular expression, as xdotool takes it)."""
        self.close()
        plaintext, html_as, disallow = view.value
        prefs = {**PREFS, "mailnews.display.prefer_plaintext": plaintext, "mailnews.display.html_as": html_as,
                 "mailnews.display.disallow_mime_handlers": disallow}
        (self.profile / "user.js").write_text("".join(_pref(k, v) for k, v in prefs.items()), encoding="utf-8")
        self.log = open(self.dir / f"thunderbird-{view.name}.log", "wb")
        self.process = subprocess.Popen([self.thunderbird, "--profile", str(self.profile), "--no-remote", str(eml)],
                                        env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"thunderbird exited with {self.process.returncode}: {self.log_tail()}")
            found = self._x("search", "--onlyvisible", "--name", title).split()
            if found:
                self.window = found[-1]
                return
            time.sleep(0.25)
        raise RuntimeError(f"no Thunderbird window titled {title!r} after {timeout:.0f} s: {self.log_tail()}")

    def show(self, view: View, timeout: float = 15) -> None:
        """Switch the open message to `view` as a reader would, from the View menu (it reloads).
        Each key waits for the menu it opens (a window of its own), or for both to close."""
        windows = self._visible_windows()
        for key, popups in (("alt+v", 1), ("b", 2), (MENU_KEY[view], 0)):
            self.key(key)
            deadline = time.monotonic() + timeout
            while self._visible_windows() != windows + popups:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Thunderbird's View menu did not answer {key!r} (showing {view.name})")
                time.sleep(0.1)

    def _visible_windows(self) -> int:
        return len(self._x("search", "--onlyvisible", "--classname", ".").split())

    def log_tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-2000:] if self.log is not None else ""

    def size(self, width: int, height: int, timeout: float = 10) -> tuple[int, int]:
        """Put the message window at the top left, on top, at (width, height) or as near as Thunderbird allows."""
        # No --sync: it waits for an event that never comes when nothing changes (no window manager here).
        self._x("windowmove", self.window, "0", "0")
        self._x("windowsize", self.window, str(width), str(height))
        self._x("windowraise", self.window)
        deadline = time.monotonic() + timeout
        while True:
            geometry = dict(line.split("=", 1) for line in
                            self._x("getwindowgeometry", "--shell", self.window).splitlines())
            size = int(geometry["WIDTH"]), int(geometry["HEIGHT"])
            if size == (width, height) or time.monotonic() > deadline:
                return size
            time.sleep(0.1)

    def key(self, *names: str) -> None:
        self._x("windowfocus", self.window)
        self._x("key", "--clearmodifiers", "--delay", "30", *names)

    def pointer_away(self) -> None:
        """The pointer off the window: hovering a link shows its address in the status bar."""
        # Clamped to the screen's corner (outside the window); no --sync: it waits for a move that
        # never comes when the pointer is already there.
        self._x("mousemove", "9999", "9999")

    def screenshot(self) -> Image.Image:
        """The window above its status bar (whose «Loading Message…» comes and goes on its own)."""
        out = subprocess.run([self.import_, "-window", self.window, "png:-"], env=self.env, capture_output=True,
                             timeout=30, check=True).stdout
        image = Image.open(io.BytesIO(out)).convert("RGB")
        # The status bar: the rows at the bottom of the colour of its bottom-right corner, and its top border.
        x, y = image.width - 2, image.height - 1
        bar = image.getpixel((x, y))
        while y > image.height // 2 and image.getpixel((x, y)) == bar:
            y -= 1
        return image.crop((0, 0, image.width, y))

    def settled(self, timeout: float = 20, still: float = 0.4) -> Image.Image:
        """A screenshot once the window has stopped changing for `still` seconds (layout, fonts, reflow),
        or the last one after `timeout`: the checks then judge what a reader would be looking at."""
        deadline = time.monotonic() + timeout
        last = self.screenshot()
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.screenshot()
            if now.size != last.size or ImageChops.difference(now, last).getbbox():
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= still:
                return now
        return last

    def close(self) -> None:
        _kill_group(self.process)
        self.process = None
        self.window = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def stop(self) -> None:
        self.close()
        _kill_group(self.xvfb)
        shutil.rmtree(self.dir, ignore_errors=True)
