"""`newsletter preview`: served over HTTP, re-rendered live, and looked at in a real Chromium."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from newsletter.web.preview import create_preview_app

from .conftest import PROJECT, SAMPLE_DATE, LiveApp
from .test_browser import CHROMIUM, QUIET, SCREENSHOTS

KOREA = "https://www.france24.com/ar/20170509-south-korea-presidential-election-vote-moon-jae-in-favourite"


@pytest.fixture
def templates(tmp_path) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(PROJECT / "templates", copy)
    return copy


@pytest.fixture
def preview(settings, store, templates, tmp_path):
    local = settings.model_copy(update={"templates_dir": templates, "editorial_dir": tmp_path / "editorial"})
    feeds = local.feeds + ["http://127.0.0.1:9/unreachable-feed.xml"]  # no network: listed, not fatal
    local = local.model_copy(update={"feeds": feeds, "feed_timeout": 2})
    with LiveApp(create_preview_app(local, SAMPLE_DATE, store)) as app, \
            httpx.Client(base_url=app.url, timeout=10) as client:
        yield client, local


def wait_for_rebuild(client, after: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        version = client.get("/version").json()
        if version["version"] > after:
            return version
        assert time.monotonic() < deadline, "the preview did not rebuild after the change"
        time.sleep(0.05)


def test_the_page_shows_subject_preheader_size_text_and_the_selection(preview):
    client, _ = preview
    page = client.get("/").text
    assert 'id="subject">التحالف الدولي يجتمع في كوبنهاغن…' in page
    assert 'id="preheader"' in page
    assert "KB من 102 KB" in page
    assert 'id="desktop"' in page and 'id="phone"' in page
    assert "التحالف الدولي يجتمع في كوبنهاغن" in page.split('id="plain"')[1], "the plain-text part is shown"
    chosen, left_out = page.split('id="left-out"')
    assert "4 outlet(s)" in chosen and "دُمج معه" in chosen
    assert "not international" in left_out and "outside the 24-hour window" in left_out
    assert "unreachable-feed.xml" in page.split('id="failed-feeds"')[1], "an unreachable feed is listed"
    assert "اقرأ المزيد" in client.get("/email.html").text


def test_an_issue_gmail_would_clip_shows_its_size_in_red(preview, templates):
    client, _ = preview
    assert 'id="size" class="ok"' in client.get("/").text
    version = client.get("/version").json()["version"]
    mjml = templates / "issue.mjml.j2"
    filler = "<mj-section><mj-column><mj-text>" + "حشو " * 22_000 + "</mj-text></mj-column></mj-section>"
    mjml.write_text(mjml.read_text(encoding="utf-8").replace("  </mj-body>", filler + "\n  </mj-body>"),
                    encoding="utf-8")

    wait_for_rebuild(client, version)

    page = client.get("/").text
    assert 'id="size" class="over"' in page and "سيقتطع Gmail الرسالة" in page  # .over is red


def test_a_template_change_is_served_without_a_restart(preview, templates):
    client, _ = preview
    version = client.get("/version").json()["version"]
    mjml = templates / "issue.mjml.j2"
    mjml.write_text(mjml.read_text(encoding="utf-8").replace("اقرأ المزيد", "تابع القراءة"), encoding="utf-8")

    wait_for_rebuild(client, version)

    email = client.get("/email.html").text
    assert "تابع القراءة" in email and "اقرأ المزيد" not in email


def test_a_template_error_is_shown_with_file_and_line_and_the_server_keeps_running(preview, templates):
    client, _ = preview
    mjml = templates / "issue.mjml.j2"
    good = mjml.read_text(encoding="utf-8")
    version = client.get("/version").json()["version"]
    lines = good.splitlines()
    broken_line = next(i for i, line in enumerate(lines) if "{%- for story in stories %}" in line) + 1
    lines[broken_line - 1] = "{%- for story in %}"
    mjml.write_text("\n".join(lines), encoding="utf-8")

    state = wait_for_rebuild(client, version)

    assert f"issue.mjml.j2, line {broken_line}" in state["error"]
    page = client.get("/").text
    assert 'id="build-error"' in page and f"line {broken_line}" in page
    mjml.write_text(good, encoding="utf-8")
    recovered = wait_for_rebuild(client, state["version"])
    assert recovered["error"] == ""


def test_the_editorial_file_steers_the_preview(preview):
    client, settings = preview
    version = client.get("/version").json()["version"]
    settings.editorial_dir.mkdir(exist_ok=True)
    (settings.editorial_dir / f"{SAMPLE_DATE.isoformat()}.toml").write_text(
        f'lead = "{KOREA}"\nintro = "افتتاحية المحرر"\n', encoding="utf-8")

    wait_for_rebuild(client, version)

    page = client.get("/").text
    chosen = page.split('id="chosen"')[1]
    assert chosen.index(KOREA) < chosen.index("كوبنهاغن")
    assert "placed by the editor" in chosen
    assert "افتتاحية المحرر" in client.get("/email.html").text


def test_in_chromium_the_email_is_rtl_fits_a_phone_and_every_image_has_alt(preview):
    client, _ = preview
    base = str(client.base_url)
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base + "/")
            assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
            page.screenshot(path=str(SCREENSHOTS / "preview-page.png"))
            for width in (375, 600):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(base + "/email.html")
                checks = page.evaluate("""() => {
                    const texts = [...document.querySelectorAll('td div')].filter(d => d.textContent.trim());
                    const headlines = [...document.querySelectorAll('.headline div')];
                    return {
                      direction: getComputedStyle(texts[0]).direction,
                      allRtl: texts.every(d => getComputedStyle(d).direction === 'rtl'),
                      headlineAlign: [...new Set(headlines.map(h => getComputedStyle(h).textAlign))],
                      headlines: headlines.length,
                      overflow: document.documentElement.scrollWidth - window.innerWidth,
                      missingAlt: [...document.images].filter(i => !(i.getAttribute('alt') || '').trim()).length,
                      images: document.images.length,
                    };
                }""")
                assert checks["direction"] == "rtl" and checks["allRtl"], width
                assert checks["headlines"] >= 6 and checks["headlineAlign"] == ["right"], checks
                assert checks["images"] > 0 and checks["missingAlt"] == 0
                if width == 375:
                    assert checks["overflow"] <= 0, "no horizontal scrolling on a phone"
                page.screenshot(path=str(SCREENSHOTS / f"email-{width}.png"), full_page=True)
        finally:
            browser.close()
    assert (SCREENSHOTS / "email-375.png").stat().st_size > 0


def test_each_chosen_story_shows_how_many_readers_opened_its_outlet_yesterday(settings, store, templates, tmp_path):
    from newsletter.store.clicks import Click

    local = settings.model_copy(update={"templates_dir": templates, "editorial_dir": tmp_path / "editorial"})
    yesterday = store.save_issue("2017-05-08", "أمس", "", "<p>NLLINK01SLOT</p>", "NLLINK01SLOT",
                                 [{"url": "https://www.france24.com/ar/x", "title": "خبر أمس", "summary": "",
                                   "source": "صوت العالم"}])
    for n in range(3):
        store.add_subscriber(f"reader{n}@example.com", "")
    ids = [store.get_subscriber(f"reader{n}@example.com").id for n in range(3)]
    at = time.time()
    import datetime as dt

    when = dt.datetime.fromtimestamp(at, dt.timezone.utc)
    store.clicks.record([Click(yesterday.id, 1, ids[0], False, when), Click(yesterday.id, 1, ids[1], False, when),
                         Click(yesterday.id, 1, ids[2], True, when)], salt_days=2, individual=False)
    with LiveApp(create_preview_app(local, SAMPLE_DATE, store)) as app, \
            httpx.Client(base_url=app.url, timeout=10) as client:
        page = client.get("/").text
        text = client.get("/email.txt").text

    chosen = page.split('id="chosen"')[1].split('id="left-out"')[0]
    assert "أمس: 2 من القرّاء فتحوا أخبار صوت العالم" in chosen, "readers only: the scanner's click is not one"
    assert "NLLINK" not in page and "NLLINK" not in text and "https://" in text, "the outlets' own links"


# --- steering by clicking ------------------------------------------------------------------------

HAND_WRITTEN = "# The night desk's notes: keep the lead on Copenhagen until 06:00\nintro = \"صباح الخير\"\n"


@pytest.fixture
def steering(settings, store, templates, tmp_path):
    editorial = tmp_path / "editorial"
    editorial.mkdir()
    (editorial / f"{SAMPLE_DATE.isoformat()}.toml").write_text(HAND_WRITTEN, encoding="utf-8")
    local = settings.model_copy(update={"templates_dir": templates, "editorial_dir": editorial})
    with LiveApp(create_preview_app(local, SAMPLE_DATE, store)) as app, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        context = browser.new_context(locale="ar")
        # The sample feeds' pictures are on made-up hosts: refused at once rather than left to time out.
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(app.url)
                      else route.abort())
        yield app, context, editorial / f"{SAMPLE_DATE.isoformat()}.toml"
        context.close()
        browser.close()


def _chosen_titles(page) -> list[str]:
    return [t.strip() for t in page.locator("#chosen ol > li > a").all_inner_texts()]


def test_an_editor_steers_the_issue_by_clicking_and_the_file_follows(steering):
    import tomllib

    app, browser, file = steering
    page = browser.new_page()
    page.goto(app.url + "/")
    before = _chosen_titles(page)
    third = page.locator("#story-3")
    third_url = third.locator("a").first.get_attribute("href")

    with page.expect_navigation():
        third.get_by_role("button", name="اجعله الخبر الأول").click()
    assert _chosen_titles(page)[0] == before[2]
    written = file.read_text(encoding="utf-8")
    assert written.startswith("# The night desk's notes"), "the editor's comment is kept"
    assert tomllib.loads(written)["lead"] == third_url
    email = httpx.get(app.url + "/email.html").text
    assert email.index(before[2]) < email.index(before[0]), "the email opens with the new lead"

    # A headline with markup: the file keeps the words, the page and the email show them as text.
    second = page.locator("#story-2")
    second.get_by_text("عدّل العنوان والملخص").click()
    second.get_by_label("العنوان").fill("<b>عنوان</b> يكتبه المحرر")
    with page.expect_navigation():
        second.get_by_role("button", name="احفظ التعديل").click()
    assert page.locator("#story-2 > a").inner_text() == "<b>عنوان</b> يكتبه المحرر"
    assert "&lt;b&gt;عنوان&lt;/b&gt; يكتبه المحرر" in httpx.get(app.url + "/email.html").text

    # Pull a left-out story in, then undo it.
    left_out = page.locator("#left-out li").filter(has=page.get_by_role("button", name="أضفه إلى الرسالة")).first
    with page.expect_navigation():
        left_out.get_by_role("button", name="أضفه إلى الرسالة").click()
    assert "pin" in tomllib.loads(file.read_text(encoding="utf-8"))
    with page.expect_navigation():
        page.get_by_role("button", name="تراجع عن آخر تغيير").click()
    assert "pin" not in tomllib.loads(file.read_text(encoding="utf-8"))
    assert page.locator("#story-2 > a").inner_text() == "<b>عنوان</b> يكتبه المحرر", "one change undone, not two"

    # Back to the outlet's own headline; the story moves up; the افتتاحية is written.
    with page.expect_navigation():
        page.locator("#story-2").get_by_text("عدّل العنوان والملخص").click()
        page.locator("#story-2").get_by_role("button", name="استعد العنوان والملخص الأصليين").click()
    assert page.locator("#story-2 > a").inner_text() == before[0]
    assert "override" not in tomllib.loads(file.read_text(encoding="utf-8"))
    with page.expect_navigation():
        page.locator("#story-2").get_by_role("button", name="↑ أعلى").click()
    assert _chosen_titles(page)[:2] == [before[0], before[2]]
    page.get_by_label("الافتتاحية").fill("صباح الخير: ثلاثة أخبار تستحق وقتك اليوم.")
    with page.expect_navigation():
        page.get_by_role("button", name="احفظ الافتتاحية").click()
    assert tomllib.loads(file.read_text(encoding="utf-8"))["intro"] == "صباح الخير: ثلاثة أخبار تستحق وقتك اليوم."
    assert "صباح الخير: ثلاثة أخبار تستحق وقتك اليوم." in httpx.get(app.url + "/email.html").text
    assert file.read_text(encoding="utf-8").startswith("# The night desk's notes"), "still the editor's file"


def test_an_editor_tells_a_merged_report_apart_by_clicking(steering):
    """The selection grouped a report with a story it does not tell: one click makes it a story of its own."""
    import tomllib

    app, browser, file = steering
    page = browser.new_page()
    page.goto(app.url + "/")
    before = _chosen_titles(page)
    reports = page.locator("#chosen details.merged li")
    titles = [text.split("«", 1)[1].rstrip("»") for text in reports.locator("span").all_text_contents()]
    candidates = [n for n, title in enumerate(titles) if title not in before]
    assert candidates, "the sample issue has a story with another outlet's report merged into it"
    report, title = reports.nth(candidates[0]), titles[candidates[0]]
    url = report.locator("input[name=url]").get_attribute("value")
    story_title = report.locator("xpath=ancestor::li[starts-with(@id, 'story-')]").locator("a").first.inner_text()
    report.locator("xpath=ancestor::details").locator("summary").click()

    with page.expect_navigation():
        report.get_by_role("button", name="خبر آخر: افصله").click()

    assert tomllib.loads(file.read_text(encoding="utf-8"))["apart"] == [url]
    after = _chosen_titles(page)
    assert after[after.index(story_title) + 1] == title, "a story of its own, right after the one it left"
    told_apart = page.locator("#chosen ol > li").nth(after.index(title))
    assert "told apart by the editor" in told_apart.inner_text()
    assert title in httpx.get(app.url + "/email.html").text

    with page.expect_navigation():  # not another story after all: back where it was
        told_apart.get_by_role("button", name="أعده إلى الخبر الذي فُصل منه").click()
    assert tomllib.loads(file.read_text(encoding="utf-8"))["apart"] == []
    assert _chosen_titles(page) == before


def test_two_editors_at_once_never_overwrite_each_other(steering):
    app, browser, file = steering
    first, second = browser.new_page(), browser.new_page()
    first.goto(app.url + "/")
    second.goto(app.url + "/")
    # The second editor starts rewriting a headline; the page no longer reloads itself under them.
    second.locator("#story-3").get_by_text("عدّل العنوان والملخص").click()
    second.locator("#story-3").get_by_label("العنوان").fill("عنوان المحرر الثاني")
    with first.expect_navigation():
        first.locator("#story-2").get_by_role("button", name="احذفه من الرسالة").click()
    after_first = file.read_text(encoding="utf-8")
    time.sleep(1.5)  # past the page's polling: it saw the new version, and kept the editor's words

    second.locator("#story-3").get_by_role("button", name="احفظ التعديل").click()
    second.wait_for_selector("[role=alert]")

    assert "غيّر محرر آخر هذه الرسالة للتو" in second.locator("[role=alert]").first.inner_text()
    assert file.read_text(encoding="utf-8") == after_first, "the first editor's change stands"
    story = second.locator("#chosen li").filter(has=second.get_by_role("alert"))
    story.get_by_text("عدّل العنوان والملخص").click()
    story.get_by_label("العنوان").fill("عنوان المحرر الثاني")
    with second.expect_navigation():  # the fresh page carries the new version: the change goes through now
        story.get_by_role("button", name="احفظ التعديل").click()
    written = file.read_text(encoding="utf-8")
    assert "drop" in written and "عنوان المحرر الثاني" in written


def test_the_steering_page_works_from_the_keyboard_and_axe_finds_no_violations(steering):
    import json

    from .test_email_tools import NODE_MODULES, require

    app, browser, file = steering
    page = browser.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(app.url + "/")
    page.locator("#story-2").get_by_role("button", name="↓ أسفل").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "order" in file.read_text(encoding="utf-8")
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    small = page.evaluate("""() => [...document.querySelectorAll('#chosen button, #left-out button')]
        .filter(b => b.getBoundingClientRect().height < 44).length""")
    assert small == 0, "every button is a 44 px tap target"
    page.add_script_tag(path=require(NODE_MODULES / "axe-core" / "axe.min.js", "run `make email-tools`"))
    options = {"resultTypes": ["violations"], "exclude": [["iframe"]]}
    violations = page.evaluate(f"axe.run({{exclude: ['iframe']}}, {json.dumps(options)})")["violations"]
    found = [(v["id"], [n["target"] for n in v["nodes"]]) for v in violations]
    assert found == [], "\n".join(map(str, found))


def test_approving_in_the_page_freezes_what_the_editor_sees_and_a_change_withdraws_it(steering, store):
    import hashlib

    app, browser, file = steering
    page = browser.new_page()
    page.goto(app.url + "/")
    page.locator("#approval").get_by_label("اسمك").fill("رئيسة التحرير")
    with page.expect_navigation():
        page.get_by_role("button", name="وافق على هذه الرسالة للإرسال").click()

    approval = store.approvals.of(SAMPLE_DATE.isoformat())
    frozen = store.get_issue(SAMPLE_DATE.isoformat())
    assert approval.approved_by == "رئيسة التحرير"
    assert approval.html_sha256 == hashlib.sha256(frozen.html.encode("utf-8")).hexdigest()
    assert frozen.subject == page.locator("#subject").inner_text()
    assert "NLUNSUBSCRIBETOKENSLOT" in frozen.html, "the issue itself is frozen, not the preview's copy of it"
    assert "وافق عليها رئيسة التحرير" in page.locator("#approved").inner_text()

    with page.expect_navigation():
        page.locator("#story-2").get_by_role("button", name="احذفه من الرسالة").click()
    assert store.approvals.of(SAMPLE_DATE.isoformat()) is None, "a change after approval withdraws it"
    assert store.get_issue(SAMPLE_DATE.isoformat()) is None, "and unfreezes the issue nobody was sent"
    assert page.locator("#not-approved").is_visible()


def test_the_sample_issue_shows_sample_pictures_not_broken_images(preview):
    client, _ = preview
    email = client.get("/email.html").text
    assert ".example/media/" not in email and ".example/uploads/" not in email
    assert "/sample-pictures/sample-" in email
    picture = client.get("/sample-pictures/sample-1.png")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content.startswith(b"\x89PNG")
    assert client.get("/sample-pictures/../../config.py").status_code == 404


def test_make_demos_first_message_shows_the_sample_pictures(tmp_path):
    from newsletter.sample_pictures import PICTURES_DIR, with_sample_pictures

    html = '<img src="https://sawt-alalam.example/uploads/2017/05/macron.jpg" alt="ماكرون">' \
           '<img src="https://cdn.real-outlet.com/a.jpg" alt="">'
    local = with_sample_pictures(html, lambda picture: picture.as_uri())
    assert f'src="{PICTURES_DIR.as_uri()}/sample-' in local, "a made-up host's picture: a sample picture"
    assert 'src="https://cdn.real-outlet.com/a.jpg"' in local, "a real outlet's picture is never touched"
    assert local == with_sample_pictures(html, lambda picture: picture.as_uri()), "the same one every time"


def test_bad_changes_posted_to_the_page_are_4xx_with_nothing_written(preview):
    client, local = preview
    page = client.get("/").text
    version = page.split('name="version" value="')[1].split('"')[0]
    url = page.split('id="headline-2"')[0].rsplit('href="', 1)[1].split('"')[0]
    file = local.editorial_dir / f"{SAMPLE_DATE.isoformat()}.toml"
    for fields, status in [
        ({"action": "lead", "url": url, "version": "forged0123456789"}, 409),
        ({"action": "pin", "url": "https://elsewhere.example/x", "version": version}, 400),
        ({"action": "edit", "url": url, "title": "ع" * 1_000_000, "version": version}, 400),
        ({"action": "explode", "url": url, "version": version}, 400),
        ({"action": "lead", "version": version}, 400),
        ({}, 409),
    ]:
        response = client.post("/steer", data=fields)
        assert response.status_code == status, (fields.get("action"), response.status_code)
        assert 'role="alert"' in response.text
    assert not file.exists(), "nothing was written"
