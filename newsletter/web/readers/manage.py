"""A reader's own page, reached from the footer of every issue: pause, change address, download, leave, forget.

The link's signed token says who (the reader's unsubscribe token: valid as long, for ever). As for every
link of an email, a GET or HEAD only shows a page, whoever sends it (a mail scanner opens every link);
the reader's press of a button, a POST, acts. A new address is confirmed by its owner through a link sent
there, which works once and expires as confirmation links do; until then nothing changes.
"""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ...config import Settings, Tracking
from ...errors import SubscriberError
from ...mail.address_change import AddressChangeMailer
from ...store.database import Status, Store, Subscriber
from ...store.reader_choices import PAUSE_WEEKS, ChangeOutcome, export_json
from ...store.subscribers import normalise_email
from ...tokens import Tokens
from ..metrics import WebMetrics
from ..pages import GET, Pages
from ..ratelimit import SignupLimiter

log = logging.getLogger(__name__)

READER_LINK = [*GET, "POST"]
ACTIONS = ("pause", "resume", "address", "download", "leave", "forget")
# Address changes a reader may ask for an hour: each sends a mail to an address they chose.
CHANGES_PER_HOUR = 5
INVALID_EMAIL = "هذا العنوان لا يبدو بريدًا إلكترونيًا صحيحًا. تحقق منه وأعد المحاولة."


def manage_routes(settings: Settings, store: Store, pages: Pages, tokens: Tokens, metrics: WebMetrics) -> APIRouter:
    router = APIRouter()
    page, notice = pages.page, pages.notice
    change_mailer = AddressChangeMailer(settings, pages.renderer, tokens)
    change_max_age = dt.timedelta(seconds=settings.confirm_max_age_seconds)
    # Counted in the store per reader, whatever their network: a token of one's own must not make us mail anyone.
    change_limiter = SignupLimiter(store, CHANGES_PER_HOUR, 3600, name="address-change")

    def invalid_link() -> HTMLResponse:
        return notice("رابط غير صالح", "رابط إدارة الاشتراك هذا غير صالح. استخدم الرابط كما وصلك في أسفل "
                                       "آخر رسالة منا.", 400)

    def gone() -> HTMLResponse:
        return notice("لا اشتراك بهذا الرابط", "لم يعد لدينا اشتراك بهذا الرابط: ربما حُذفت بياناتك. "
                                                "يمكنك الاشتراك من جديد من صفحتنا.", 404, show_form=True)

    def manage_page(token: str, subscriber: Subscriber, paused_until: str | None, status_code: int = 200,
                    **context: object) -> HTMLResponse:
        return page("manage", status_code, action=f"{settings.base_url}/manage/{token}", email=subscriber.email,
                    active=subscriber.status == Status.active.value, paused_until=paused_until,
                    weeks=PAUSE_WEEKS, **{"notice": "", "error": "", "new_email": "", **context})

    @router.api_route("/manage", methods=GET)
    async def manage_help() -> HTMLResponse:
        return notice("إدارة اشتراكك", "استخدم رابط «إدارة اشتراكك» في أسفل أي رسالة وصلتك منا.", 200)

    @router.api_route("/manage/{token}", methods=READER_LINK)
    async def manage(token: str, request: Request) -> Response:
        subscriber_id = tokens.subscriber_from_manage(token)
        if subscriber_id is None:
            return invalid_link()
        # Read before anything else: a body over NEWSLETTER_MAX_REQUEST_BYTES is a 413 that changes nothing.
        fields = _form_fields(await request.body()) if request.method == "POST" else {}
        subscriber = await run_in_threadpool(store.subscriber_by_id, subscriber_id)
        if subscriber is None:
            return gone()
        if request.method != "POST":
            paused = await run_in_threadpool(store.choices.paused_until, subscriber_id)
            return manage_page(token, subscriber, paused)
        if fields is None or fields.get("action") not in ACTIONS:
            paused = await run_in_threadpool(store.choices.paused_until, subscriber_id)
            return manage_page(token, subscriber, paused, 400, error="لم نفهم الطلب. اختر أحد الأزرار في الصفحة.")
        return await act(token, subscriber, fields["action"], fields)

    async def act(token: str, subscriber: Subscriber, action: str, fields: dict[str, str]) -> Response:
        if action == "leave":
            if await run_in_threadpool(store.unsubscribe, subscriber.id):
                metrics.unsubscribes.inc()
            return page("unsubscribed")
        if action == "forget":
            await run_in_threadpool(store.leave_and_forget, subscriber.id, subscriber.email,
                                    tokens.email_hash(subscriber.email))
            return notice("حُذفت بياناتك", "حذفنا عنوانك وكل ما احتفظنا به عنك، ولن تصلك منا رسائل بعد الآن.", 200)
        if action == "download":
            data = await run_in_threadpool(store.choices.export, subscriber.id, settings.tracking is Tracking.individual)
            if data is None:
                return gone()
            return Response(export_json(data), media_type="application/json; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="newsletter-my-data.json"'})
        if action == "resume":
            await run_in_threadpool(store.choices.resume, subscriber.id)
            return manage_page(token, subscriber, None, notice="أُلغي الإيقاف المؤقت: ستصلك الرسالة من صباح الغد.")
        if action == "pause":
            weeks = fields.get("weeks", "")
            if not weeks.isdigit() or int(weeks) not in PAUSE_WEEKS:
                paused = await run_in_threadpool(store.choices.paused_until, subscriber.id)
                return manage_page(token, subscriber, paused, 400, error="اختر مدة الإيقاف: أسبوعًا أو أسبوعين "
                                                                         "أو أربعة أسابيع.")
            until = await run_in_threadpool(store.choices.pause, subscriber.id, int(weeks))
            if until is None:
                return manage_page(token, subscriber, None, 409, error="لا يمكن إيقاف اشتراك غير مفعّل.")
            return manage_page(token, subscriber, until, notice=f"أوقفنا الرسالة مؤقتًا. تعود إليك صباح {until}.")
        return await change_address(token, subscriber, fields.get("email", ""))

    async def change_address(token: str, subscriber: Subscriber, raw: str) -> Response:
        paused = await run_in_threadpool(store.choices.paused_until, subscriber.id)
        try:
            new_email = normalise_email(raw)
        except SubscriberError:
            return manage_page(token, subscriber, paused, 422, error=INVALID_EMAIL, new_email=raw[:320])
        if new_email == subscriber.email:
            return manage_page(token, subscriber, paused, 400, error="هذا هو عنوانك الحالي. اكتب العنوان الجديد.",
                               new_email=raw[:320])
        wait = await run_in_threadpool(change_limiter.retry_after, f"reader-{subscriber.id}")
        if wait:
            response = manage_page(token, subscriber, paused, 429, new_email=raw[:320],
                                   error="طلبت تغيير العنوان مرات كثيرة. أعد المحاولة بعد ساعة.")
            response.headers["Retry-After"] = str(wait)
            return response
        change_id = await run_in_threadpool(store.choices.request_change, subscriber.id, new_email)
        # The same answer when the address is already on the list: this page never tells who subscribes.
        response = manage_page(token, subscriber, paused,
                               notice="أرسلنا رابط تأكيد إلى العنوان الجديد. لن يتغير شيء قبل فتحه، "
                                      "وتبقى الرسالة تصل إلى عنوانك الحالي حتى ذلك الحين.")
        if change_id is not None:
            url = f"{settings.base_url}/change/{tokens.change_token(change_id)}"
            response.background = BackgroundTask(change_mailer.send, change_id, subscriber.id, subscriber.name,
                                                  new_email, url)
        else:
            log.info("address change for reader %d not started: the new address is already on the list",
                     subscriber.id)
        return response

    @router.api_route("/change/{token}", methods=READER_LINK)
    async def confirm_change(token: str, request: Request) -> Response:
        change_id = tokens.change_from_token(token)
        if request.method == "POST":
            await request.body()
        if change_id is None:
            return notice("رابط غير صالح", "رابط تأكيد العنوان هذا غير صالح. استخدم الرابط كما وصلك.", 400)
        if request.method != "POST":
            pending = await run_in_threadpool(store.choices.pending_change, change_id, change_max_age)
            if pending is None:
                return used_link()
            if pending.expired:
                return expired_link()
            return page("change", action=f"{settings.base_url}/change/{token}", email=pending.new_email)
        result = await run_in_threadpool(store.choices.safely_apply_change, change_id, change_max_age)
        if result.outcome is ChangeOutcome.changed:
            await run_in_threadpool(store.lift_suppression, tokens.email_hash(result.subscriber.email))
            return notice("تغيّر عنوانك", f"ستصلك الرسالة الإخبارية من الآن على {result.subscriber.email}.", 200)
        if result.outcome is ChangeOutcome.expired:
            return expired_link()
        if result.outcome is ChangeOutcome.taken:
            return notice("لم يتغير العنوان", "هذا العنوان مسجل لدينا بالفعل، فلم نغيّر شيئًا.", 409)
        return used_link()

    def used_link() -> HTMLResponse:
        return notice("رابط مستعمل أو غير صالح", "استُعمل هذا الرابط من قبل أو حلّ محله طلب أحدث. "
                                                 "اطلب تغيير العنوان من جديد من صفحة إدارة اشتراكك.", 400)

    def expired_link() -> HTMLResponse:
        return notice("انتهت صلاحية الرابط", "مضى وقت طويل على طلب تغيير العنوان. اطلبه من جديد من صفحة "
                                             "إدارة اشتراكك.", 400)

    return router


def _form_fields(body: bytes) -> dict[str, str] | None:
    """A button's form, its first value of each field; None when it cannot be read as one."""
    try:
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
    except (UnicodeDecodeError, ValueError):
        return None
