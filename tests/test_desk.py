"""The editors' desk (/desk) under uvicorn over real HTTP: Chromium drives it as an editor does, and
real requests attack it; each attack test fails if its defence goes.

The session cookie is `__Host-` and Secure: Chromium keeps it from http://127.0.0.1 (a secure
context), and the httpx clients here hand it over themselves (the cookie jar of a client would
rightly keep a Secure cookie off plain HTTP).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import select, update

from .ports import free_port
from newsletter.passwords import hash_password
from newsletter.store.editors import Editors
from newsletter.store.schema import audit_log, editor_sessions, password_links
from newsletter.tokens import Tokens
from newsletter.web.editors import COOKIE
from newsletter.web.security import TokenRedaction

from .conftest import run_cli
from .test_browser import CHROMIUM, QUIET, SCREENSHOTS
from .test_email_tools import AXE_OPTIONS, NODE_MODULES, require
from .test_web import live_site

EDITOR = "editor@news.example"
PASSWORD = "قهوة الصباح قبل الأخبار 7"
EVIL = "https://evil.example"


@pytest.fixture
def desk_settings(settings):
    port = free_port()
    return settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}", "desk_login_limit": 1000,
                                       "desk_login_client_limit": 1000})


@pytest.fixture
def desk(desk_settings):
    port = urlsplit(desk_settings.base_url).port
    with live_site(desk_settings, port) as server:
        yield server


@pytest.fixture
def editors(store) -> Editors:
    return Editors(store.engine)


@pytest.fixture
def http(desk):
    """A client that keeps no cookies: each request carries the ones the test gives it."""
    with httpx.Client(base_url=desk.url, timeout=10, headers={"Origin": desk.url}) as client:
        yield client


@functools.cache
def password_hash(password: str) -> str:
    """The real Argon2id hash, made once a run: each costs a few tenths of a second on a busy machine."""
    return hash_password(password)


def add_editor(editors: Editors, email: str = EDITOR, password: str | None = PASSWORD) -> str:
    """An editor as `newsletter editors add` makes them; with their password set from the link, unless None."""
    token = editors.add(email, "cli:test", 86400)
    if password is not None:
        assert editors.set_password(token, password_hash(password)) == email
    return token


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={token}"}


def session_cookie(response: httpx.Response) -> str:
    """The session token a response sets, after checking the cookie's attributes."""
    header = response.headers["set-cookie"]
    assert header.startswith(f"{COOKIE}=")
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"secure", "httponly", "path"} <= attributes and "domain" not in attributes
    assert "samesite=strict" in header.lower() and "path=/;" in header.lower() + ";"
    return header.split(";")[0].split("=", 1)[1]


def sign_in(http: httpx.Client, email: str = EDITOR, password: str = PASSWORD, headers: dict | None = None,
            **fields: str) -> httpx.Response:
    return http.post("/desk/sign-in", data={"email": email, "password": password, **fields}, headers=headers)


def signed_in(http: httpx.Client, email: str = EDITOR, password: str = PASSWORD) -> str:
    response = sign_in(http, email, password)
    assert response.status_code == 303, response.text
    return session_cookie(response)


def csrf_of(http: httpx.Client, token: str) -> str:
    page = http.get("/desk", headers=cookie(token))
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)


def shows_desk(http: httpx.Client, token: str) -> bool:
    response = http.get("/desk", headers=cookie(token))
    assert response.status_code in (200, 303)
    if response.status_code == 303:
        assert response.headers["location"].startswith("/desk/sign-in")
    return response.status_code == 200


def actions(store) -> list[tuple[str, str, str]]:
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.detail).order_by(audit_log.c.id))]


# --- No desk without editors; every answer private ------------------------------------------


def test_there_is_no_desk_until_an_editor_exists(http, editors):
    for path in ("/desk", "/desk/audit", "/desk/sign-in", "/desk/password/anything"):
        assert http.get(path).status_code == 404
    assert sign_in(http).status_code == 404
    add_editor(editors, password=None)
    assert http.get("/desk/sign-in").status_code == 200
    assert http.get("/desk").status_code == 303
    assert http.get("/desk/audit").headers["location"] == "/desk/sign-in?next=/desk/audit"


def test_every_desk_answer_is_private_and_never_framed(http, editors):
    link = add_editor(editors, "second@news.example", password=None)
    add_editor(editors)
    token = signed_in(http)
    answers = [http.get("/desk", headers=cookie(token)), http.get("/desk/audit", headers=cookie(token)),
               http.get("/desk"), http.get("/desk/sign-in"),
               http.get(f"/desk/password/{link}"), sign_in(http, password="wrong password here"),
               http.post("/desk/sign-out", headers={**cookie(token), "Origin": EVIL}),
               http.get("/desk/no-such-page", headers=cookie(token))]
    for response in answers:
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"


def test_one_time_links_are_kept_out_of_the_access_log():
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/desk/password/s3cr3t-t0ken", "1.1", 200), None)
    TokenRedaction().filter(record)
    assert "s3cr3t" not in record.getMessage() and "/desk/password/<token>" in record.getMessage()


# --- Chromium drives the desk ----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        yield browser
        browser.close()


def check_page(page, name: str) -> None:
    """Arabic, right to left, no sideways scrolling at phone width, and no axe-core violation."""
    assert page.evaluate("document.documentElement.lang") == "ar"
    assert page.evaluate("getComputedStyle(document.querySelector('main')).direction") == "rtl"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{name}: sideways scrolling"
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"desk-{name}-375.png"), full_page=True)
    page.add_script_tag(path=require(NODE_MODULES / "axe-core" / "axe.min.js", "run `make email-tools`"))
    violations = page.evaluate(f"axe.run(document, {json.dumps({**AXE_OPTIONS, 'rules': {}})})")["violations"]
    assert violations == [], f"{name}: {[(v['id'], [n['target'] for n in v['nodes']]) for v in violations]}"


def test_an_editor_sets_a_password_signs_in_and_out_from_a_phone(browser, desk, editors, store):
    link = add_editor(editors, password=None)
    # bypass_csp: the page's policy (rightly) refuses the script axe-core is injected as.
    page = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar", bypass_csp=True)
    page.goto(f"{desk.url}/desk/password/{link}")
    check_page(page, "password")
    page.get_by_label("كلمة المرور الجديدة").fill("password12345")
    page.get_by_label("أعد كتابتها").fill("password12345")
    with page.expect_navigation():
        page.get_by_role("button", name="احفظ كلمة المرور").click()
    assert "شائعة" in page.get_by_role("alert").inner_text(), "a common password is refused"
    check_page(page, "password-refused")

    # With the keyboard alone: the two fields, then the button.
    page.get_by_label("كلمة المرور الجديدة").focus()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "BUTTON"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/desk/sign-in?done=password")
    check_page(page, "sign-in")

    page.get_by_label("البريد الإلكتروني").fill(EDITOR)
    page.get_by_label("كلمة المرور").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="ادخل").click()
    assert page.url == f"{desk.url}/desk"
    assert page.get_by_role("heading", level=2).inner_text() == "عدد اليوم"
    assert "لم يُجمَّد بعد" in page.inner_text("main")
    check_page(page, "home")
    with page.expect_navigation():
        page.get_by_role("link", name="سجلّ المكتب").click()
    check_page(page, "audit")
    rows = [row.inner_text().split("\t") for row in page.locator("tbody tr").all()]
    assert [(who, what) for _, who, what in rows] == [
        (EDITOR, "دخل"), (EDITOR, "اختار كلمة مرور"), ("سطر الأوامر (test)", f"أضاف محرّرًا: {EDITOR}")]
    [desk_cookie] = page.context.cookies()
    assert (desk_cookie["name"], desk_cookie["secure"], desk_cookie["httpOnly"], desk_cookie["sameSite"]) == \
        (COOKIE, True, True, "Strict")

    with page.expect_navigation():
        page.get_by_role("button", name="اخرج").click()
    assert "/desk/sign-in" in page.url and page.context.cookies() == []
    page.goto(f"{desk.url}/desk")
    assert "/desk/sign-in" in page.url
    page.goto(f"{desk.url}/desk/password/{link}")
    assert "الرابط غير صالح" in page.inner_text("main"), "the link works once"
    assert [a for _, a, _ in actions(store)] == ["editor-added", "password-set", "sign-in", "sign-out"]


def browser_sign_in(page, url: str) -> None:
    page.goto(f"{url}/desk/sign-in")
    page.get_by_label("البريد الإلكتروني").fill(EDITOR)
    page.get_by_label("كلمة المرور").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="ادخل").click()
    assert page.url == f"{url}/desk"


def test_expired_sessions_and_a_removed_editor_are_refused(browser, desk, desk_settings, editors, store, env):
    add_editor(editors)
    add_editor(editors, "colleague@news.example", password=None)  # the desk stays when one editor goes
    page = browser.new_page(viewport={"width": 375, "height": 740}, locale="ar")
    idle = desk_settings.desk_idle_minutes * 60
    longest = desk_settings.desk_session_hours * 3600
    # Time passing, as the database's clock sees it.
    for column, age in ((editor_sessions.c.last_seen_epoch, idle + 1), (editor_sessions.c.created_epoch, longest + 1)):
        browser_sign_in(page, desk.url)
        with store.engine.begin() as conn:
            conn.execute(update(editor_sessions).values({column: column - age}))
        page.goto(f"{desk.url}/desk")
        assert "/desk/sign-in" in page.url, f"a session past {column.name} + {age} s still works"

    browser_sign_in(page, desk.url)
    removed = run_cli("editors", "remove", EDITOR, env={**env, "NEWSLETTER_BASE_URL": desk_settings.base_url})
    assert removed.returncode == 0, removed.stderr
    page.goto(f"{desk.url}/desk")
    assert "/desk/sign-in" in page.url, "a removed editor's session ends at once"
    page.get_by_label("البريد الإلكتروني").fill(EDITOR)
    page.get_by_label("كلمة المرور").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="ادخل").click()
    assert page.url.endswith("/desk/sign-in"), "a removed editor cannot sign in again"
    assert "غير صحيحة" in page.get_by_role("alert").inner_text()


# --- Attacks with real requests -----------------------------------------------------------------


def test_a_cross_site_post_is_refused(http, editors):
    add_editor(editors)
    token = signed_in(http)
    csrf = csrf_of(http, token)
    for headers, fields in (({"Origin": EVIL}, {"csrf": csrf}),  # another site's form, the cookie sent along
                            ({"Origin": "null"}, {"csrf": csrf}),
                            ({"Origin": ""}, {"csrf": csrf}),
                            ({}, {"csrf": "0" * 64}),  # our origin, a forged token
                            ({}, {"no-token": ""})):
        refused = http.post("/desk/sign-out", data=fields, headers={**cookie(token), **headers})
        assert refused.status_code == 403, (headers, fields)
        assert shows_desk(http, token), "the session survived"
    assert sign_in(http, headers={"Origin": EVIL}).status_code == 403, "nor signs in from another site"
    done = http.post("/desk/sign-out", data={"csrf": csrf}, headers=cookie(token))
    assert done.status_code == 303 and not shows_desk(http, token)


def test_a_stolen_cookie_is_worth_nothing_after_sign_out(http, editors):
    add_editor(editors)
    token = signed_in(http)
    csrf = csrf_of(http, token)
    assert http.post("/desk/sign-out", data={"csrf": csrf}, headers=cookie(token)).status_code == 303
    assert not shows_desk(http, token)
    replayed = http.post("/desk/sign-out", data={"csrf": csrf}, headers=cookie(token))
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/desk/sign-in")


def test_a_session_planted_before_sign_in_is_never_promoted(http, editors):
    add_editor(editors)
    add_editor(editors, "attacker@news.example", "the attacker's own passphrase")
    planted_values = ["attacker-chosen-value-0123456789abcdef", signed_in(http, "attacker@news.example",
                                                                          "the attacker's own passphrase")]
    for planted in planted_values:
        response = sign_in(http, headers=cookie(planted))
        assert response.status_code == 303
        victim = session_cookie(response)
        assert victim != planted
        assert shows_desk(http, victim)
        page = http.get("/desk", headers=cookie(planted))
        assert EDITOR not in page.text, "the planted cookie shows the victim's desk"


@contextlib.contextmanager
def limited_desk(desk_settings, per_account: int, per_client: int) -> Iterator[httpx.Client]:
    """A client of the desk with low sign-in limits: so many tries per account and per client each 15 minutes."""
    limited = desk_settings.model_copy(update={"desk_login_limit": per_account,
                                               "desk_login_client_limit": per_client})
    with live_site(limited, urlsplit(limited.base_url).port) as server, \
            httpx.Client(base_url=server.url, timeout=10, headers={"Origin": server.url}) as client:
        yield client


@pytest.fixture
def strict_http(desk_settings):
    with limited_desk(desk_settings, per_account=3, per_client=8) as client:
        yield client


def test_guessing_passwords_is_throttled_with_one_answer_for_every_account(strict_http, editors):
    http = strict_http
    add_editor(editors)
    limit = 3
    wrong = [sign_in(http, password=f"guess number {n}") for n in range(limit)]
    unknown = [sign_in(http, email="nobody@news.example", password=f"guess number {n}") for n in range(limit)]
    assert {r.status_code for r in wrong + unknown} == {422}
    assert wrong[0].text.replace(EDITOR, "X") == unknown[0].text.replace("nobody@news.example", "X"), \
        "an unknown address gets the same answer as a wrong password"
    for email in (EDITOR, "nobody@news.example"):
        throttled = sign_in(http, email=email)  # the right password, too late
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
        assert "set-cookie" not in throttled.headers
    # One client trying many accounts is throttled by its address: 8 tries made, a fresh account is refused.
    assert sign_in(http, email="fresh@news.example").status_code == 429


def test_a_readers_token_opens_nothing(http, editors, store, settings):
    add_editor(editors)
    store.add_subscriber("reader@example.com")
    tokens = Tokens(settings.secret_key)
    subscriber_id = store.get_subscriber("reader@example.com").id
    for token in (tokens.unsubscribe_token(subscriber_id), tokens.confirm_token(subscriber_id)):
        assert not shows_desk(http, token)
        assert http.get(f"/desk?token={token}").status_code == 303
        assert http.get("/desk", headers={"Authorization": f"Bearer {token}"}).status_code == 303
        assert http.get(f"/desk/password/{token}").status_code == 404
        posted = http.post(f"/desk/password/{token}", data={"password": PASSWORD, "repeated": PASSWORD})
        assert posted.status_code == 404


def test_next_never_leads_off_the_desk(http, editors):
    add_editor(editors)
    token = signed_in(http)
    for target in ("https://evil.example/desk", "//evil.example/desk", "/\\evil.example", "\\\\evil.example",
                   "/desk/../evil", "/desk//evil.example", "javascript:alert(1)", "\t//evil.example",
                   "/desk\t//evil.example", "http:/evil.example", "/desk@evil.example", "/archive"):
        form = http.get("/desk/sign-in", params={"next": target}).text
        assert 'name="next" value="/desk"' in form, target
        # An editor already signed in is sent on at once.
        location = http.get("/desk/sign-in", params={"next": target}, headers=cookie(token)).headers["location"]
        assert location == "/desk", (target, location)
    for target in ("https://evil.example/desk", "//evil.example", "/\\evil.example"):  # each costs a password check
        location = sign_in(http, next=target).headers["location"]
        assert location == "/desk", (target, location)
    assert sign_in(http, next="/desk?tab=today").headers["location"] == "/desk?tab=today"


def test_oversized_and_malformed_bodies_get_a_4xx_never_a_5xx(http, editors, desk_settings):
    link = add_editor(editors, "second@news.example", password=None)
    add_editor(editors)
    token = signed_in(http)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    too_large = b"email=a%40b.c&password=" + b"x" * (desk_settings.max_request_bytes + 1)
    many_fields = "&".join(f"f{n}=1" for n in range(50)).encode()
    bodies = [  # headers, body, then the answer of sign-in, of the password link, of sign-out (no CSRF token)
        (form, too_large, 413, 413, 413),
        (form, b"email=\xff\xfe&password=\xc3", 400, 400, 400),
        (form, many_fields, 400, 400, 400),
        (form, b"%%%=%zz&&==&password", 422, 422, 403),
        ({"Content-Type": "application/json"}, b'{"email": "editor@news.example", "password": "x"}', 415, 415, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\nbroken", 415, 415, 415),
        ({}, b"", 415, 415, 415),
    ]
    for headers, body, *answers in bodies:
        for path, expected in zip(("/desk/sign-in", f"/desk/password/{link}", "/desk/sign-out"), answers):
            response = http.post(path, content=body, headers={**headers, **cookie(token)})
            assert response.status_code == expected, (path, body[:40], response.status_code)
    assert shows_desk(http, token) and editors.link_holder(link) == "second@news.example"


# --- Accounts --------------------------------------------------------------------------------------


def test_weak_passwords_are_refused_and_the_link_stays_usable(http, editors):
    link = add_editor(editors, password=None)
    for password, repeated in (("short", "short"), ("Password2024!", "Password2024!"), ("editor-2024-news", "editor-2024-news"),
                               (PASSWORD, PASSWORD + "x")):
        refused = http.post(f"/desk/password/{link}", data={"password": password, "repeated": repeated})
        assert refused.status_code == 422 and 'role="alert"' in refused.text, password
    assert http.post(f"/desk/password/{link}", data={"password": PASSWORD, "repeated": PASSWORD}).status_code == 303
    assert http.post(f"/desk/password/{link}", data={"password": PASSWORD, "repeated": PASSWORD}).status_code == 404


def test_an_expired_link_sets_nothing(http, editors, store):
    link = add_editor(editors, password=None)
    with store.engine.begin() as conn:
        conn.execute(update(password_links).values(expires_epoch=password_links.c.expires_epoch - 86401))
    assert http.get(f"/desk/password/{link}").status_code == 404
    assert http.post(f"/desk/password/{link}", data={"password": PASSWORD, "repeated": PASSWORD}).status_code == 404


def test_setting_a_password_ends_the_editors_sessions(http, editors, store):
    add_editor(editors)
    token = signed_in(http)
    editors.remove(EDITOR, "cli:test")
    link = editors.add(EDITOR, "cli:test", 86400)
    assert not shows_desk(http, token)
    assert http.post(f"/desk/password/{link}", data={"password": PASSWORD, "repeated": PASSWORD}).status_code == 303
    with store.engine.connect() as conn:
        kept = conn.execute(select(editor_sessions.c.id)).scalars().all()
    assert token not in kept and all(len(k) == 64 for k in kept), "only hashes of tokens are stored"


def test_the_editors_commands(env, store):
    env = {**env, "NEWSLETTER_BASE_URL": "https://news.example"}
    added = run_cli("editors", "add", "New.Editor@News.Example", env=env)
    assert added.returncode == 0, added.stderr
    link = re.search(r"https://news\.example/desk/password/(\S+)", added.stdout)
    assert link and "24" in added.stdout
    assert Editors(store.engine).link_holder(link.group(1)) == "new.editor@news.example"
    again = run_cli("editors", "add", "new.editor@news.example", env=env)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "already an editor" in again.stderr
    listed = run_cli("editors", "list", env=env)
    assert "new.editor@news.example" in listed.stdout and "no password yet" in listed.stdout
    assert run_cli("editors", "remove", "new.editor@news.example", env=env).returncode == 0
    assert Editors(store.engine).list() == []
    assert [a for _, a, _ in actions(store)] == ["editor-added", "editor-removed"]
    assert link.group(1) not in str(actions(store))


def test_the_first_page_says_how_todays_issue_stands(http, editors, store, desk_settings):
    import datetime as dt

    from newsletter.store.schema import deliveries, utcnow

    add_editor(editors)
    token = signed_in(http)
    today = dt.datetime.now(desk_settings.zone).date().isoformat()
    assert "لم يُجمَّد بعد" in http.get("/desk", headers=cookie(token)).text
    issue = store.save_issue(today, "عدد اليوم", "", "<p>عدد</p>", "عدد", [])
    store.approvals.record(today, "0" * 64, "v1", "chief@news.example")
    store.add_subscriber("one@example.com")
    store.add_subscriber("two@example.com")
    with store.engine.begin() as conn:
        conn.execute(deliveries.insert(), [
            {"issue_id": issue.id, "subscriber_id": store.get_subscriber(email).id, "outcome": outcome,
             "run_id": "run", "attempts": 1, "reply": "", "updated_at": utcnow()}
            for email, outcome in (("one@example.com", "sent"), ("two@example.com", "refused"))])
    page = http.get("/desk", headers=cookie(token)).text
    assert f'<time datetime="{today}">' in page
    assert "مجمَّد" in page and "chief@news.example" in page
    assert "وصل إلى 1،" in page and "رُفض 1" in page


def test_a_day_without_stories_says_so_and_leaves_the_buttons_that_mend_it(http, editors):
    """The sample feeds hold no story of today: the issue cannot be built, and that is not the editorial file's
    fault. Pulling a left-out story in is how the editor mends it, so those buttons stay."""
    add_editor(editors)
    page = http.get("/desk/today", headers=cookie(signed_in(http))).text

    assert "تعذّر بناء الرسالة" in page and "no international story" in page
    assert "حتى يُصلح ملف التحرير" not in page
    assert "أضف خبراً من المتروكة" in page
    pull_in = re.findall(r'<button name="action" value="pin"[^>]*>', page)
    assert pull_in and not [b for b in pull_in if "disabled" in b]
