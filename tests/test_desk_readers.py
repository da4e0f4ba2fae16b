"""Readers on the desk (/desk/readers) under uvicorn over real HTTP: Chromium finds a reader, reads the
history real bounce and complaint reports made, forgets one and removes another (the next real send to
aiosmtpd skips them); the export is streamed and safe in a spreadsheet; a reader's own tokens open
nothing; and the real `newsletter serve` logs no password, session or link token, nor a forgotten
reader's address."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from newsletter.mail.bounce_reader import read_bounces
from newsletter.store.database import Status
from newsletter.store.schema import audit_log, feedback
from newsletter.tokens import Tokens

from .conftest import SAMPLE_DATE, ServeProcess, run_cli
from .test_bounces import BOUNCES, report
from .test_desk import (  # noqa: F401  (fixtures, used by name)
    EDITOR,
    EVIL,
    PASSWORD,
    actions,
    add_editor,
    browser,
    browser_sign_in,
    check_page,
    cookie,
    csrf_of,
    desk,
    desk_settings,
    editors,
    http,
    limited_desk,
    sign_in,
    signed_in,
)
from .test_web import wait_for_mail

READER = "layla.haddad@example.com"


@pytest.fixture
def mail_desk_settings(desk_settings):
    """The desk's settings with a bounce address: every message's return path names its reader."""
    return desk_settings.model_copy(update={"bounce_address": BOUNCES})


def read_reports(settings, store, folder: Path, tmp_path: Path) -> None:
    """Apply the reports in `folder` as `newsletter bounces FOLDER` does (the bounce reader's library path)."""
    said: list[str] = []
    run = read_bounces(settings, store, [str(folder)], io.BytesIO(), tmp_path / "kept", use_imap=False,
                       say=lambda line, _: said.append(line))
    assert run.complete and run.summary.unattributed == 0, said


def send(env: dict[str, str], smtp_server) -> list[str]:
    """The real `newsletter send` of the sample issue to aiosmtpd (a process of its own: Playwright's loop
    runs in this one); who it sent to."""
    before = len(smtp_server.handler.messages)
    sent = run_cli("send", "--date", SAMPLE_DATE.isoformat(), env={**env, "NEWSLETTER_BOUNCE_ADDRESS": BOUNCES})
    assert sent.returncode == 0, sent.stderr
    return sorted(smtp_server.handler.recipients()[before:])


def phone(browser):
    # bypass_csp: the page's policy (rightly) refuses the script axe-core is injected as.
    return browser.new_page(viewport={"width": 375, "height": 740}, locale="ar", bypass_csp=True)


# --- Chromium: search, history, forget, remove ----------------------------------------------------


def test_an_editor_finds_a_reader_reads_their_bounce_and_complaint_and_forgets_them(
        browser, desk, mail_desk_settings, editors, store, smtp_server, env, tmp_path):
    add_editor(editors)
    store.add_subscriber(READER, "ليلى")
    store.add_subscriber("omar@example.org")
    assert send(env, smtp_server) == ["layla.haddad@example.com", "omar@example.org"]
    reader_id = store.get_subscriber(READER).id
    tokens = Tokens(mail_desk_settings.secret_key)
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "bounce.eml").write_bytes(report("postfix_hard_5.1.1.eml", tokens, reader_id, READER, SAMPLE_DATE))
    (folder / "complaint.eml").write_bytes(report("arf_complaint.eml", tokens, reader_id, READER, SAMPLE_DATE))
    read_reports(mail_desk_settings, store, folder, tmp_path)

    page = phone(browser)
    browser_sign_in(page, desk.url)
    with page.expect_navigation():
        page.get_by_role("link", name="القرّاء").click()
    check_page(page, "readers")
    # With the keyboard alone: the search field (any case, any part), the status, the button.
    page.get_by_label("البريد الإلكتروني أو جزء منه").focus()
    page.keyboard.type("  LAYLA.Had ")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "status"
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert [row.inner_text().split("\t")[0] for row in page.locator("tbody tr").all()] == [READER]
    check_page(page, "readers-found")
    page.get_by_role("link", name=READER).focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{desk.url}/desk/readers/{reader_id}"
    check_page(page, "reader")
    history = page.inner_text("main")
    assert "ارتداد دائم" in history and "5.1.1" in history, history
    assert "شكوى" in history and "ألغى اشتراكه" in history, "the complaint unsubscribed them"
    assert SAMPLE_DATE.isoformat() in history and "وصلت" in history, "the issue sent to them"
    assert "لا نحفظ من نقر على ماذا" in history, "clicks are private unless tracking is individual"

    with page.expect_navigation():
        page.get_by_role("link", name="احذف كل بياناته…").click()
    check_page(page, "reader-forget")
    assert store.get_subscriber(READER) is not None, "the first press changes nothing"
    with page.expect_navigation():
        page.get_by_role("button", name="احذف بياناته نهائيًا").click()
    assert page.url == f"{desk.url}/desk/readers?done=forgotten"
    assert "حُذف القارئ" in page.get_by_role("status").inner_text()

    assert store.get_subscriber(READER) is None
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(feedback)
                            .where(feedback.c.subscriber_id == reader_id)).scalar_one() == 0
    assert store.get_subscriber("omar@example.org") is not None
    assert actions(store)[-1] == (EDITOR, "reader-forgotten", f"#{reader_id}")
    assert READER not in str(actions(store)) and "layla" not in str(actions(store))
    page.goto(f"{desk.url}/desk/readers/{reader_id}")
    assert "لا قارئ بهذا الرقم" in page.inner_text("main")
    page.goto(f"{desk.url}/desk/audit")
    assert "حذف كل بيانات قارئ" in page.inner_text("main") and READER not in page.content()
    check_page(page, "audit-forgotten")


def test_an_editor_removes_a_reader_and_the_next_send_leaves_them_out(browser, desk, desk_settings, editors, store,
                                                                       smtp_server, env):
    add_editor(editors)
    store.add_subscriber("first@example.com")
    assert send(env, smtp_server) == ["first@example.com"]
    store.add_subscriber("hana@example.net")
    store.add_subscriber("zaid@example.net")
    hana = store.get_subscriber("hana@example.net").id

    page = phone(browser)
    browser_sign_in(page, desk.url)
    page.goto(f"{desk.url}/desk/readers?q=hana")
    with page.expect_navigation():
        page.get_by_role("link", name="hana@example.net").click()
    with page.expect_navigation():
        page.get_by_role("link", name="ألغِ اشتراكه…").click()
    check_page(page, "reader-remove")
    page.get_by_role("button", name="ألغِ اشتراكه").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{desk.url}/desk/readers/{hana}?done=removed"
    assert "أُلغي اشتراكه" in page.get_by_role("status").inner_text()
    assert page.get_by_role("link", name="ألغِ اشتراكه…").count() == 0, "no second removal offered"
    assert store.get_subscriber("hana@example.net").status == Status.unsubscribed.value
    assert actions(store)[-1] == (EDITOR, "reader-removed", f"#{hana} hana@example.net")

    assert send(env, smtp_server) == ["zaid@example.net"], "the removed reader gets nothing"

    # Later the reader forgets themself from their manage page: the desk's line about them loses the address.
    manage = Tokens(desk_settings.secret_key).manage_token(hana)
    forgot = httpx.post(f"{desk.url}/manage/{manage}", data={"action": "forget"}, headers={"Origin": desk.url})
    assert forgot.status_code == 200 and store.get_subscriber("hana@example.net") is None
    assert ("reader-removed", f"#{hana}") in [(action, detail) for _, action, detail in actions(store)]
    assert "hana@example.net" not in str(actions(store))


# --- Search, export, resend over HTTP --------------------------------------------------------------


def test_search_is_case_insensitive_paged_and_filtered_by_status(http, editors, store):
    add_editor(editors)
    store.add_subscribers([(f"reader{n:03}@example.com", "") for n in range(120)])
    store.add_subscriber("someone.else@example.org", status=Status.pending)
    store.add_subscriber("100%_real@example.org")
    token = signed_in(http)

    def found(**params) -> tuple[list[str], str | None]:
        page = http.get("/desk/readers", params=params, headers=cookie(token))
        assert page.status_code == 200
        following = re.search(r'href="[^"]*/desk/readers\?([^"]+)">الصفحة التالية', page.text)
        return re.findall(r'/desk/readers/\d+"><bdi dir="ltr">([^<]+)<', page.text), \
            following.group(1).replace("&amp;", "&") if following else None

    first, following = found(q="READER0")
    assert first == [f"reader{n:03}@example.com" for n in range(50)] and following
    second, last = found(**dict(part.split("=", 1) for part in following.split("&")))
    assert second == [f"reader{n:03}@example.com" for n in range(50, 100)] and last is None
    assert found(q="reader1", status="pending")[0] == []
    assert found(status="pending")[0] == ["someone.else@example.org"]
    assert found(q="Someone.Else@Example.ORG")[0] == ["someone.else@example.org"], "a whole address, normalised"
    assert found(q="%_")[0] == ["100%_real@example.org"], "LIKE's wildcards are searched as text"
    assert found(q="nobody")[0] == []
    assert http.get("/desk/readers", params={"after": "x", "status": "nonsense"}, headers=cookie(token)).status_code \
        == 200


def test_the_export_is_streamed_filtered_and_safe_to_open_in_a_spreadsheet(http, editors, store):
    add_editor(editors)
    dangerous = {"=HYPERLINK(\"https://evil.example\")": "=", "+cmd|' /C calc'!A0": "+", "-2+3": "-",
                 "@SUM(A1:A2)": "@"}
    for n, name in enumerate(dangerous):
        store.add_subscriber(f"formula{n}@example.com", name)
    store.add_subscriber("=1+1@example.com")  # a valid address, and a formula
    store.add_subscribers([(f"bulk{n:04}@example.com", "") for n in range(2500)])  # three keyset pages
    store.add_subscriber("waiting@example.com", status=Status.pending)
    token = signed_in(http)
    csrf = csrf_of(http, token)

    with http.stream("POST", "/desk/readers.csv", data={"csrf": csrf, "status": "active"},
                     headers=cookie(token)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"].startswith('attachment; filename="readers-active-')
        assert response.headers.get("transfer-encoding") == "chunked" and "content-length" not in response.headers
        assert response.headers["cache-control"] == "no-store"
        body = response.read().decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == 2505 and {row["status"] for row in rows} == {"active"}
    by_email = {row["email"]: row for row in rows}
    assert "waiting@example.com" not in by_email
    for n, name in enumerate(dangerous):
        assert by_email[f"formula{n}@example.com"]["name"] == "'" + name
    assert "'=1+1@example.com" in by_email
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())
    assert actions(store)[-1] == (EDITOR, "readers-exported", "active")

    everyone = http.post("/desk/readers.csv", data={"csrf": csrf}, headers=cookie(token))
    assert len(list(csv.DictReader(io.StringIO(everyone.text)))) == 2506
    assert http.post("/desk/readers.csv", data={"status": "active"}, headers=cookie(token)).status_code == 403
    assert http.post("/desk/readers.csv", data={"csrf": csrf},
                     headers={**cookie(token), "Origin": EVIL}).status_code == 403
    assert http.post("/desk/readers.csv", data={"csrf": csrf}).headers["location"].startswith("/desk/sign-in")
    assert [a for _, a, _ in actions(store)].count("readers-exported") == 2


def test_a_pending_reader_gets_the_confirmation_again_once_in_ten_minutes(http, editors, store, smtp_server,
                                                                          desk_settings):
    add_editor(editors)
    store.add_subscriber("waiting@example.com", status=Status.pending)
    store.add_subscriber("active@example.com")
    waiting = store.get_subscriber("waiting@example.com").id
    active = store.get_subscriber("active@example.com").id
    token = signed_in(http)
    csrf = csrf_of(http, token)

    asked = http.get(f"/desk/readers/{waiting}/resend", headers=cookie(token))
    assert asked.status_code == 200 and "أرسل الرابط" in asked.text and not smtp_server.handler.messages
    sent = http.post(f"/desk/readers/{waiting}/resend", data={"csrf": csrf}, headers=cookie(token))
    assert sent.headers["location"] == f"/desk/readers/{waiting}?done=resent"
    wait_for_mail(smtp_server.handler, 1)
    assert smtp_server.handler.recipients() == ["waiting@example.com"]
    assert "/confirm/" in smtp_server.handler.messages[0].parsed().get_body(("plain",)).get_content()
    again = http.post(f"/desk/readers/{waiting}/resend", data={"csrf": csrf}, headers=cookie(token))
    assert again.headers["location"] == f"/desk/readers/{waiting}?done=too-soon"
    assert "عشر دقائق" in http.get(again.headers["location"], headers=cookie(token)).text
    not_pending = http.post(f"/desk/readers/{active}/resend", data={"csrf": csrf}, headers=cookie(token))
    assert not_pending.headers["location"] == f"/desk/readers/{active}?done=not-pending"
    time.sleep(0.3)
    assert len(smtp_server.handler.messages) == 1
    assert [a for _, a, _ in actions(store)][-1] == "reader-confirmation-resent"
    assert http.post(f"/desk/readers/{waiting}/nonsense", data={"csrf": csrf}, headers=cookie(token)).status_code \
        == 404
    assert http.get("/desk/readers/999999", headers=cookie(token)).status_code == 404

    # Never confirmed, the reader is forgotten when NEWSLETTER_PENDING_DAYS pass: the audit line keeps "#id".
    assert store.forget_unconfirmed(dt.timedelta(0), Tokens(desk_settings.secret_key).email_hash) == 1
    assert ("reader-confirmation-resent", f"#{waiting}") in [(action, detail) for _, action, detail in actions(store)]
    assert "waiting@example.com" not in str(actions(store))


# --- Attacks --------------------------------------------------------------------------------------


def test_a_readers_own_tokens_open_nothing_and_posts_need_the_session_and_its_token(http, editors, store,
                                                                                   desk_settings):
    add_editor(editors)
    store.add_subscriber(READER)
    reader_id = store.get_subscriber(READER).id
    tokens = Tokens(desk_settings.secret_key)
    for token in (tokens.unsubscribe_token(reader_id), tokens.manage_token(reader_id),
                  tokens.confirm_token(reader_id)):
        for path in ("/desk/readers", f"/desk/readers/{reader_id}", f"/desk/readers/{reader_id}/forget"):
            for headers, params in ((cookie(token), {}), ({}, {"token": token}),
                                    ({"Authorization": f"Bearer {token}"}, {})):
                answer = http.get(path, params=params, headers=headers)
                assert answer.status_code == 303 and answer.headers["location"].startswith("/desk/sign-in"), path
                assert READER not in answer.text
        for action in ("forget", "remove"):
            posted = http.post(f"/desk/readers/{reader_id}/{action}", data={"csrf": token}, headers=cookie(token))
            assert posted.status_code == 303 and posted.headers["location"].startswith("/desk/sign-in")
        assert http.post("/desk/readers.csv", data={"csrf": token}, headers=cookie(token)).status_code == 303

    session = signed_in(http)
    csrf = csrf_of(http, session)
    for headers, fields in (({}, {"no-token": ""}), ({}, {"csrf": "0" * 64}), ({"Origin": EVIL}, {"csrf": csrf})):
        for action in ("forget", "remove"):
            refused = http.post(f"/desk/readers/{reader_id}/{action}", data=fields,
                                headers={**cookie(session), **headers})
            assert refused.status_code == 403, (action, headers, fields)
    assert store.get_subscriber(READER).status == Status.active.value
    assert not [a for _, a, _ in actions(store) if a.startswith("reader")]


# --- The audit log: refused sign-ins, once a window -------------------------------------------------


@pytest.fixture
def strict_http(desk_settings):
    with limited_desk(desk_settings, per_account=3, per_client=100) as client:
        yield client


def refusals(store) -> list[tuple[str, str, str]]:
    return [row for row in actions(store) if row[1] in ("sign-in-failed", "sign-in-throttled")]


def test_refused_sign_ins_are_in_the_audit_log_once_per_account_and_window(strict_http, editors, store):
    add_editor(editors)
    guesses = [f"guess number {n} for the desk" for n in range(6)]
    answers = [sign_in(strict_http, password=guess).status_code for guess in guesses]
    assert answers == [422, 422, 422, 429, 429, 429]
    for n in range(3):
        assert sign_in(strict_http, email="nobody@news.example", password=f"guess {n}").status_code == 422
    deadline = time.monotonic() + 5
    while len(refusals(store)) < 2:  # written after each answer went
        assert time.monotonic() < deadline, refusals(store)
        time.sleep(0.05)
    time.sleep(0.3)
    assert refusals(store) == [(EDITOR, "sign-in-failed", "127.0.0.1"), (EDITOR, "sign-in-throttled", "127.0.0.1")]
    logged = str(actions(store))
    assert not any(guess in logged for guess in guesses) and "nobody@news.example" not in logged


# --- Nothing secret in the real serve's logs, nor in the export -----------------------------------


def test_no_password_session_or_link_token_reaches_the_logs_or_the_export(env, editors, store):
    link = add_editor(editors, password=None)
    store.add_subscriber(READER, "ليلى")
    store.add_subscriber("stays@example.com")
    reader_id = store.get_subscriber(READER).id
    serve = ServeProcess({**env, "NEWSLETTER_BASE_URL": "http://127.0.0.1:8000"})  # follows serve's port
    with serve as client:
        client.headers["Origin"] = f"http://127.0.0.1:{serve.port}"
        assert client.get(f"/desk/password/{link}").status_code == 200
        assert client.post(f"/desk/password/{link}", data={"password": PASSWORD, "repeated": PASSWORD}) \
            .status_code == 303
        assert sign_in(client, password="a wrong password guess").status_code == 422
        session = signed_in(client)
        csrf = csrf_of(client, session)
        assert client.get("/desk/readers", params={"q": "layla.had"}, headers=cookie(session)).status_code == 200
        assert client.get(f"/desk/readers/{reader_id}", headers=cookie(session)).status_code == 200
        exported = client.post("/desk/readers.csv", data={"csrf": csrf}, headers=cookie(session))
        assert exported.status_code == 200 and READER in exported.text
        forgot = client.post(f"/desk/readers/{reader_id}/forget", data={"csrf": csrf}, headers=cookie(session))
        assert forgot.status_code == 303
        assert client.post("/desk/sign-out", data={"csrf": csrf}, headers=cookie(session)).status_code == 303
    logs = serve.stdout + serve.stderr
    assert "POST /desk/sign-in" in logs and "GET /desk/readers?<query>" in logs, logs[-3000:]
    secrets = {"password": PASSWORD, "wrong password": "a wrong password guess", "session": session,
               "csrf": csrf, "link": link, "forgotten address": READER, "search": "layla.had"}
    for what, secret in secrets.items():
        assert secret not in logs, f"the {what} is in the log"
    for what, secret in (("password", PASSWORD), ("session", session), ("csrf", csrf), ("link", link)):
        assert secret not in exported.text, f"the {what} is in the export"
    assert "argon2" not in exported.text and list(csv.reader(io.StringIO(exported.text)))[0] == [
        "email", "name", "status", "created_at", "updated_at", "confirmed_at", "unsubscribed_at"]
    with store.engine.connect() as conn:
        audit = str(conn.execute(select(audit_log)).all())
    assert not any(secret in audit for secret in (PASSWORD, session, csrf, link, READER))
