"""Relays that report over HTTP: Amazon SES through SNS (signatures checked against a certificate made
here) and Postmark (HTTP Basic), posted to the real app under uvicorn. Only the internet is stood in
for: the app's `fetch` answers the certificate and subscription URLs an SNS message names."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.mail.bounces import ReportKind
from newsletter.tokens import Tokens
from newsletter.web.app import create_app
from newsletter.web.machines.webhooks import (CERTIFICATES_KEPT, FETCHES_PER_MINUTE, SNS_CERT_URL, Rejected, SnsVerifier,
                                     postmark_report, ses_reports)

from .conftest import LiveApp

TOPIC = "arn:aws:sns:eu-west-1:123456789012:newsletter-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
SUBSCRIBE_URL = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
                 + TOPIC + "&Token=2336412f37fb687f5d51e6e2425c464de")
POSTMARK_SECRET = "postmark-webhook-secret-0123456789"


def make_key_and_certificate() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, certificate.public_bytes(serialization.Encoding.PEM)


SIGNING_KEY, CERTIFICATE = make_key_and_certificate()
OTHER_KEY, _ = make_key_and_certificate()


def signed(message: dict, key: rsa.RSAPrivateKey = SIGNING_KEY) -> dict:
    """An SNS message signed as Amazon signs it (SignatureVersion 2: SHA256withRSA over the
    documented fields, each as `name\\nvalue\\n`, in this order)."""
    if message["Type"] == "Notification":
        fields = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        fields = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)
    signature = key.sign(text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return {**message, "SignatureVersion": "2", "Signature": base64.b64encode(signature).decode("ascii"),
            "SigningCertURL": CERT_URL}


def sns_timestamp(ago: dt.timedelta = dt.timedelta()) -> str:
    """A Timestamp as SNS writes them (2026-12-06T05:22:16.123Z), `ago` before now: the app refuses
    messages more than a day old."""
    return (dt.datetime.now(dt.timezone.utc) - ago).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def notification(ses_event: dict, message_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324") -> dict:
    return {"Type": "Notification", "MessageId": message_id, "TopicArn": TOPIC,
            "Message": json.dumps(ses_event), "Timestamp": sns_timestamp()}


def ses_bounce(source: str, recipient: str, permanent: bool = True) -> dict:
    return {"notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent" if permanent else "Transient",
                       "bounceSubType": "General" if permanent else "MailboxFull",
                       "bouncedRecipients": [{"emailAddress": recipient, "action": "failed",
                                              "status": "5.1.1" if permanent else "4.2.2",
                                              "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                       "timestamp": "2026-11-30T05:02:10.000Z", "feedbackId": "0102017f-bounce"},
            "mail": {"timestamp": "2026-11-30T05:02:09.000Z", "source": source,
                     "messageId": "0102017f-original", "destination": [recipient]}}


class Internet:
    """What the app fetches: the certificate, and the subscription confirmation it must visit. Any
    other URL on an SNS host is a 404, as Amazon answers; the `down` ones cannot be reached."""

    def __init__(self) -> None:
        self.visited: list[str] = []
        self.down: set[str] = set()

    async def __call__(self, url: str) -> bytes:
        self.visited.append(url)
        if url in self.down:
            raise httpx.ConnectError(f"no route to {url}")
        if url == CERT_URL:
            return CERTIFICATE
        if url == SUBSCRIBE_URL:
            return b"<ConfirmSubscriptionResponse/>"
        response = httpx.Response(404, request=httpx.Request("GET", url))
        response.raise_for_status()
        raise AssertionError("unreachable")


@pytest.fixture
def internet():
    return Internet()


@pytest.fixture
def site(settings, store, internet):
    web = settings.model_copy(update={"ses_topic_arns": [TOPIC], "postmark_webhook_secret": POSTMARK_SECRET,
                                      "bounce_address": "bounces@news.example"})
    with LiveApp(create_app(web, store, fetch=internet)) as live:
        yield live


def verp(settings, store, address: str) -> str:
    from newsletter.tokens import Tokens

    token = Tokens(settings.secret_key).return_path_token("20261130", store.get_subscriber(address).id)
    return f"bounces+{token}@news.example"


def test_an_ses_bounce_signed_by_amazon_bounces_its_reader(settings, store, site, internet):
    store.add_subscriber("layla@example.com", "")
    body = signed(notification(ses_bounce(verp(settings, store, "layla@example.com"), "layla@example.com")))

    response = httpx.post(f"{site.url}/webhooks/ses", content=json.dumps(body),
                          headers={"x-amz-sns-message-type": "Notification"})

    assert response.status_code == 200 and response.json() == {"recorded": 1, "unattributed": 0}
    assert store.get_subscriber("layla@example.com").status == "bounced"
    assert store.feedback.counts_by_issue("2026-11-30") == {"hard": 1}
    again = httpx.post(f"{site.url}/webhooks/ses", content=json.dumps(body))
    assert again.status_code == 200, "SNS retries: the same message counts once"
    assert store.feedback.counts_by_issue("2026-11-30") == {"hard": 1}
    assert internet.visited == [CERT_URL], "the certificate is fetched once"


def test_an_ses_complaint_unsubscribes_and_a_transient_bounce_is_counted(settings, store, site):
    for address in ("omar@example.org", "claire@example.fr"):
        store.add_subscriber(address, "")
    complaint = {"notificationType": "Complaint",
                 "complaint": {"complainedRecipients": [{"emailAddress": "omar@example.org"}],
                               "complaintFeedbackType": "abuse", "timestamp": "2026-11-30T08:00:00.000Z"},
                 "mail": {"source": verp(settings, store, "omar@example.org"), "destination": ["omar@example.org"]}}
    transient = ses_bounce(verp(settings, store, "claire@example.fr"), "claire@example.fr", permanent=False)
    for number, event in enumerate((complaint, transient)):
        response = httpx.post(f"{site.url}/webhooks/ses", content=json.dumps(signed(notification(event, f"m{number}"))))
        assert response.status_code == 200, response.text
    assert store.get_subscriber("omar@example.org").status == "unsubscribed"
    assert store.get_subscriber("claire@example.fr").status == "active"
    assert store.feedback.counts_by_issue("2026-11-30") == {"complaint": 1, "soft": 1}


def test_a_notification_larger_than_a_signup_form_is_accepted(settings, store, site):
    """SES includes the original message's headers when asked: tens of KB, over the pages' 16 KB limit."""
    store.add_subscriber("layla@example.com", "")
    event = ses_bounce(verp(settings, store, "layla@example.com"), "layla@example.com")
    event["mail"]["headers"] = [{"name": f"X-Filler-{n}", "value": "x" * 200} for n in range(200)]
    body = json.dumps(signed(notification(event)))
    assert len(body) > 40_000
    response = httpx.post(f"{site.url}/webhooks/ses", content=body)
    assert response.status_code == 200, response.text
    assert store.get_subscriber("layla@example.com").status == "bounced"
    assert httpx.post(f"{site.url}/webhooks/ses", content=b" " * (400 * 1024)).status_code == 413


def test_the_sns_subscription_is_confirmed_by_visiting_its_url(site, internet):
    confirmation = {"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
                    "Token": "2336412f37fb687f5d51e6e2425c464de", "TopicArn": TOPIC,
                    "Message": f"You have chosen to subscribe to the topic {TOPIC}.", "SubscribeURL": SUBSCRIBE_URL,
                    "Timestamp": sns_timestamp()}
    response = httpx.post(f"{site.url}/webhooks/ses", content=json.dumps(signed(confirmation)))
    assert response.status_code == 200 and response.json() == {"subscribed": TOPIC}
    assert SUBSCRIBE_URL in internet.visited


@pytest.mark.parametrize("tamper, status", [
    (lambda body: signed(body, OTHER_KEY), 403),  # signed by someone else's key
    (lambda body: {**signed(body), "Message": body["Message"].replace("Permanent", "Transient")}, 403),
    (lambda body: signed({**body, "TopicArn": "arn:aws:sns:eu-west-1:999999999999:theirs"}), 403),
    (lambda body: {**signed(body), "SigningCertURL": "https://sns.eu-west-1.amazonaws.com.evil.example/c.pem"}, 403),
    (lambda body: {**signed(body), "SigningCertURL": CERT_URL.replace("https", "http")}, 403),
    (lambda body: {**signed(body), "Signature": "not base64!"}, 400),
    (lambda body: {**signed(body), "SignatureVersion": "9"}, 400),
])
def test_a_forged_or_damaged_sns_message_is_refused_and_changes_nothing(settings, store, site, tamper, status):
    store.add_subscriber("layla@example.com", "")
    body = notification(ses_bounce(verp(settings, store, "layla@example.com"), "layla@example.com"))
    response = httpx.post(f"{site.url}/webhooks/ses", content=json.dumps(tamper(body)))
    assert response.status_code == status, response.text
    assert store.get_subscriber("layla@example.com").status == "active"
    assert store.feedback.counts_by_issue("2026-11-30") == {}


def test_malformed_payloads_get_a_400(site):
    for body in (b"{not json", b"[1, 2]", "\u00e9".encode("latin-1")):
        assert httpx.post(f"{site.url}/webhooks/ses", content=body).status_code == 400


def test_postmark_needs_its_password_and_then_bounces_the_reader(store, site):
    store.add_subscriber("sami@example.net", "")
    payload = {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": "HardBounce", "TypeCode": 1,
               "Name": "Hard bounce", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
               "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
               "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
               "Email": "Sami@example.net", "BouncedAt": "2026-11-30T05:02:11Z", "Inactive": True}
    url = f"{site.url}/webhooks/postmark"

    refused = [httpx.post(url, json=payload), httpx.post(url, json=payload, auth=("postmark", "wrong-secret"))]
    assert [r.status_code for r in refused] == [401, 401]
    assert refused[0].headers["www-authenticate"].startswith("Basic")
    assert store.get_subscriber("sami@example.net").status == "active"
    assert httpx.post(url, content=b"{", auth=("postmark", POSTMARK_SECRET)).status_code == 400

    accepted = httpx.post(url, json=payload, auth=("postmark", POSTMARK_SECRET))
    assert accepted.status_code == 200 and accepted.json() == {"recorded": 1, "unattributed": 0}
    assert store.get_subscriber("sami@example.net").status == "bounced"


def test_webhooks_are_off_until_configured(settings, store):
    with LiveApp(create_app(settings, store)) as live:
        assert httpx.post(f"{live.url}/webhooks/ses", content=b"{}").status_code == 404
        assert httpx.post(f"{live.url}/webhooks/postmark", json={}).status_code == 404


# What each kind of SES bounce does to its reader. A policy refusal (5.7.x) or rejected content
# says the receiver refused *our* mail: recorded as blocked, the reader stays on the list.
@pytest.mark.parametrize("bounce_type, subtype, status, kind", [
    ("Permanent", "General", "5.1.1", ReportKind.hard),
    ("Permanent", "NoEmail", "5.1.1", ReportKind.hard),
    ("Permanent", "Suppressed", "5.1.1", ReportKind.hard),
    ("Permanent", "OnAccountSuppressionList", "", ReportKind.hard),
    ("Permanent", "General", "5.7.1", ReportKind.blocked),
    ("Transient", "General", "5.7.26", ReportKind.blocked),
    ("Transient", "General", "4.7.0", ReportKind.blocked),
    ("Transient", "ContentRejected", "5.3.0", ReportKind.blocked),
    ("Transient", "AttachmentRejected", "", ReportKind.blocked),
    ("Transient", "MailboxFull", "4.2.2", ReportKind.soft),
    ("Transient", "MessageTooLarge", "5.3.4", ReportKind.soft),
    ("Transient", "General", "4.4.7", ReportKind.soft),
    ("Undetermined", "Undetermined", "", ReportKind.soft),
])
def test_ses_bounce_kinds(bounce_type, subtype, status, kind):
    event = ses_bounce("bounces@news.example", "layla@example.com")
    event["bounce"].update(bounceType=bounce_type, bounceSubType=subtype)
    event["bounce"]["bouncedRecipients"][0]["status"] = status
    [report] = ses_reports(event, "m1", Tokens("tests-only-key-0123456789-abcdefghijklmnop"), "bounces@news.example")
    assert report.kind is kind and report.status == status


def test_an_ses_policy_block_is_recorded_and_leaves_the_reader_on_the_list(settings, store, site):
    store.add_subscriber("layla@example.com", "")
    event = ses_bounce(verp(settings, store, "layla@example.com"), "layla@example.com")
    event["bounce"]["bouncedRecipients"][0].update(
        status="5.7.1", diagnosticCode="smtp; 550 5.7.1 Message rejected due to local policy (spam)\x1b[31m")
    response = httpx.post(f"{site.url}/webhooks/ses", content=json.dumps(signed(notification(event))))
    assert response.status_code == 200 and response.json() == {"recorded": 1, "unattributed": 0}
    assert store.get_subscriber("layla@example.com").status == "active"
    assert store.feedback.counts_by_issue("2026-11-30") == {"blocked": 1}


def test_an_ses_delivery_delay_is_recorded_as_delayed_and_bounces_nobody(settings, store, site):
    store.add_subscriber("layla@example.com", "")
    event = {"eventType": "DeliveryDelay",
             "mail": {"source": verp(settings, store, "layla@example.com"), "destination": ["layla@example.com"]},
             "deliveryDelay": {"delayType": "MailboxFull", "expirationTime": "2026-12-07T05:00:00.000Z",
                               "delayedRecipients": [{"emailAddress": "layla@example.com", "status": "4.2.2",
                                                      "diagnosticCode": "smtp; 452 4.2.2 Mailbox full"}]}}
    response = httpx.post(f"{site.url}/webhooks/ses", content=json.dumps(signed(notification(event))))
    assert response.status_code == 200, response.text
    assert store.get_subscriber("layla@example.com").status == "active"
    assert store.feedback.counts_by_issue("2026-11-30") == {"delayed": 1}


@pytest.mark.parametrize("record_type, bounce_type, kind", [
    ("Bounce", "HardBounce", ReportKind.hard),
    ("Bounce", "SoftBounce", ReportKind.soft),
    ("Bounce", "Transient", ReportKind.delayed),  # Postmark: "delayed, still trying": never a bounce
    ("Bounce", "Blocked", ReportKind.blocked),  # the receiving ISP blocks Postmark's (our) mail
    ("Bounce", "SpamNotification", ReportKind.blocked),  # the receiver's filter called the message spam
    ("Bounce", "DMARCPolicy", ReportKind.blocked),
    ("Bounce", "AutoResponder", ReportKind.auto_reply),
    ("SpamComplaint", "SpamComplaint", ReportKind.complaint),  # the reader pressed "this is spam"
    ("Bounce", "ManuallyDeactivated", None),
    ("Delivery", None, None),
])
def test_postmark_kinds(record_type, bounce_type, kind):
    report = postmark_report({"RecordType": record_type, "ID": 42, "Type": bounce_type, "Email": "Sami@example.net"})
    assert (report.kind if report else None) is kind
    assert report is None or report.addresses == {"sami@example.net"}


def test_a_postmark_block_leaves_the_reader_on_the_list(store, site):
    store.add_subscriber("sami@example.net", "")
    payload = {"RecordType": "Bounce", "ID": 7, "Type": "Blocked", "Email": "sami@example.net",
               "Details": "smtp;554 5.7.1 Service unavailable; client host blocked using Spamhaus"}
    response = httpx.post(f"{site.url}/webhooks/postmark", json=payload, auth=("postmark", POSTMARK_SECRET))
    assert response.status_code == 200 and response.json() == {"recorded": 1, "unattributed": 0}
    assert store.get_subscriber("sami@example.net").status == "active"


# Certificate URLs an attacker might try. Each is refused on its form: nothing is fetched.
BAD_CERTIFICATE_URLS = [
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem?x=1",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem#x",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem?",
    "https://user:pass@sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-0000.pem",
    "https://sns.eu-west-1.amazonaws.com:443/SimpleNotificationService-0000.pem",  # real ones never carry one
    "https://sns.eu-west-1.amazonaws.com/other/SimpleNotificationService-0000.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem/../x.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-../0000.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem\n",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-00\x0700.pem",
    "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-0000.pem",
    "https://sns.eu-west-\u0661.amazonaws.com/SimpleNotificationService-0000.pem",  # an Arabic-Indic 1
    "https://sns.eu-west-1.amazonaws.com./SimpleNotificationService-0000.pem",
    "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
    "HTTPS://SNS.EU-WEST-1.AMAZONAWS.COM/SimpleNotificationService-0000.pem",
    "https://[/SimpleNotificationService-0000.pem",
    "https://sns.eu-west-1.amazonaws.com:99999/SimpleNotificationService-0000.pem",
    "https://sns.eu-west-1.amazonaws.com:x/SimpleNotificationService-0000.pem",
    "//sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
    "",
]


def test_a_certificate_url_not_of_amazons_form_is_refused_before_anything_is_fetched(site, internet):
    message = signed(notification(ses_bounce("bounces@news.example", "layla@example.com")))
    for url in BAD_CERTIFICATE_URLS:
        response = httpx.post(f"{site.url}/webhooks/ses", content=json.dumps({**message, "SigningCertURL": url}))
        assert response.status_code == 403 and response.json() == {"error": "cannot verify the SNS signature"}, url
    assert internet.visited == []


def test_real_certificate_urls_are_of_the_accepted_form():
    for host in ("sns.us-east-1.amazonaws.com", "sns.cn-northwest-1.amazonaws.com.cn",
                 "sns.us-gov-west-1.amazonaws.com", "sns.ap-southeast-7.amazonaws.com"):
        url = f"https://{host}/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
        assert SNS_CERT_URL.fullmatch(url), url
    assert SNS_CERT_URL.fullmatch(CERT_URL)


STRANGE_TIMESTAMPS = [
    (lambda: sns_timestamp(dt.timedelta(days=1, minutes=1)), 403),  # a day old: a replay
    (lambda: sns_timestamp(-dt.timedelta(hours=1)), 403),  # from the future
    (lambda: None, 400),
    (lambda: 1764998400, 400),
    (lambda: "yesterday", 400),
    (lambda: "2026-13-01T00:00:00.000Z", 400),
    (lambda: "2026-12-06T05:22:16.123", 400),  # no zone
    (lambda: "2026-12-06", 400),
    (lambda: sns_timestamp().replace("1", "\u0661"), 400),  # Arabic-Indic digits
]


def test_an_sns_message_too_old_too_new_or_undated_is_refused_before_anything_is_fetched(site, internet):
    for timestamp, status in STRANGE_TIMESTAMPS:
        message = notification(ses_bounce("bounces@news.example", "layla@example.com"))
        message["Timestamp"] = timestamp()
        if message["Timestamp"] is None:
            del message["Timestamp"]
        response = httpx.post(f"{site.url}/webhooks/ses", content=json.dumps(signed(message)))
        assert response.status_code == status, (message.get("Timestamp"), response.text)
    assert internet.visited == []


def test_now_is_a_parameter_of_the_verifier(internet):
    """A message signed at 05:02 verifies until 05:02 the next day, and not 15 minutes before it was sent."""
    message = signed({**notification(ses_bounce("bounces@news.example", "layla@example.com")),
                      "Timestamp": "2026-11-30T05:02:11.123Z"})
    sent = dt.datetime(2026, 11, 30, 5, 2, 11, tzinfo=dt.timezone.utc)
    for offset, believed in ((dt.timedelta(hours=23), True), (dt.timedelta(hours=25), False),
                             (-dt.timedelta(minutes=10), True), (-dt.timedelta(minutes=20), False)):
        verifier = SnsVerifier(internet, [TOPIC], now=lambda: sent + offset)
        if believed:
            assert asyncio.run(verifier.verify(message)).message_id == message["MessageId"]
        else:
            with pytest.raises(Rejected) as refused:
                asyncio.run(verifier.verify(message))
            assert refused.value.status == 403


def test_a_certificate_that_is_not_there_is_asked_for_once(site, internet, caplog):
    missing = CERT_URL.replace("-0000", "-dead")
    body = json.dumps({**signed(notification(ses_bounce("bounces@news.example", "layla@example.com"))),
                       "SigningCertURL": missing})
    with caplog.at_level(logging.WARNING):
        answers = [httpx.post(f"{site.url}/webhooks/ses", content=body) for _ in range(5)]
    assert [a.status_code for a in answers] == [403] * 5
    assert {a.json()["error"] for a in answers} == {"cannot verify the SNS signature"}, "no details for the client"
    assert internet.visited == [missing]
    refusals = [r.getMessage() for r in caplog.records if "webhook refused" in r.getMessage()]
    assert len(refusals) == 5 and all("\n" not in line and "404" in line for line in refusals)


def test_an_unreachable_certificate_is_a_502_to_retry_and_not_fetched_again_at_once(site, internet):
    internet.down.add(CERT_URL)
    body = json.dumps(signed(notification(ses_bounce("bounces@news.example", "layla@example.com"))))
    answers = [httpx.post(f"{site.url}/webhooks/ses", content=body) for _ in range(3)]
    assert [a.status_code for a in answers] == [502] * 3
    assert answers[0].headers["retry-after"] == "60"
    assert internet.visited == [CERT_URL]


def test_a_flood_of_made_up_certificates_fetches_only_a_few(site, internet):
    message = signed(notification(ses_bounce("bounces@news.example", "layla@example.com")))
    statuses = []
    for n in range(FETCHES_PER_MINUTE + 5):
        url = CERT_URL.replace("-0000", f"-f{n:03x}")
        statuses.append(httpx.post(f"{site.url}/webhooks/ses",
                                   content=json.dumps({**message, "SigningCertURL": url})).status_code)
    assert statuses == [403] * FETCHES_PER_MINUTE + [503] * 5, "503: SNS retries it, 4xx it would drop"
    assert len(internet.visited) == FETCHES_PER_MINUTE


def test_the_certificate_cache_keeps_the_most_recently_used():
    pem_calls: list[str] = []

    async def fetch(url: str) -> bytes:
        pem_calls.append(url)
        return CERTIFICATE

    clock = iter(range(0, 10_000, 61))  # a minute apart: never over the fetch budget
    verifier = SnsVerifier(fetch, [TOPIC], monotonic=lambda: float(next(clock)))
    urls = [CERT_URL.replace("-0000", f"-{n:04x}") for n in range(CERTIFICATES_KEPT + 1)]

    async def use(url: str) -> None:
        await verifier._key(url)

    for url in urls:
        asyncio.run(use(url))
    asyncio.run(use(urls[-1]))
    asyncio.run(use(urls[1]))
    assert pem_calls == urls, "the newest kept; the oldest of 17 dropped, the second still there"
    asyncio.run(use(urls[0]))
    assert pem_calls == [*urls, urls[0]]


def _body(message: dict, **changes: object) -> bytes:
    return json.dumps({**message, **changes}).encode()


def _signed_event(change) -> bytes:
    """A correctly signed notification whose SES event was changed by `change` (it returns the new event)."""
    event = ses_bounce("bounces@news.example", "layla@example.com")
    changed = change(event)
    text = changed if isinstance(changed, str) else json.dumps(changed)
    return json.dumps(signed({**notification({}), "Message": text})).encode()


def _with(event: dict, path: tuple[str, ...], value: object) -> dict:
    target = event
    for name in path[:-1]:
        target = target[name] if not isinstance(target, list) else target[int(name)]
    target[path[-1] if not isinstance(target, list) else int(path[-1])] = value
    return event


DEEP = "[" * 1000 + "]" * 1000


def ses_malformed() -> list[tuple[str, bytes, int]]:
    """Bodies for /webhooks/ses broken in one place each: (what is broken, the body, the status it must get)."""
    good = signed(notification(ses_bounce("bounces@news.example", "layla@example.com")))
    text = json.dumps(good)
    recipient = ("bounce", "bouncedRecipients", "0")
    return [
        ("nested-1000-deep", DEEP.encode(), 400),
        ("nested-in-Type", ('{"Type": ' + DEEP + "}").encode(), 400),
        ("objects-1000-deep", ("{" + '"a":{' * 1000 + "}" * 1001).encode(), 400),
        ("deep-duplicate-Type", (text[:-1] + ', "Type": ' + DEEP + "}").encode(), 400),
        ("Type-list", _body(good, Type=["Notification"]), 400),
        ("Type-object", _body(good, Type={"Notification": 1}), 400),
        ("TopicArn-list", _body(good, TopicArn=[TOPIC]), 400),
        ("TopicArn-number", _body(good, TopicArn=123), 400),
        ("Message-object", _body(good, Message={"notificationType": "Bounce"}), 400),
        ("MessageId-number", _body(good, MessageId=12), 400),
        ("MessageId-empty", _body(good, MessageId=""), 400),
        ("Subject-list", _body(good, Subject=["x"]), 400),
        ("Timestamp-number", _body(good, Timestamp=1764998400), 400),
        ("SignatureVersion-number", _body(good, SignatureVersion=2), 400),
        ("SignatureVersion-list", _body(good, SignatureVersion=["2"]), 400),
        ("Signature-number", _body(good, Signature=12), 400),
        ("Signature-not-ascii", _body(good, Signature="\u00e9" * 8), 400),
        ("Signature-huge", _body(good, Signature="A" * 100_000), 400),
        ("SigningCertURL-control", _body(good, SigningCertURL=CERT_URL + "\x07"), 403),
        ("SigningCertURL-bad-ipv6", _body(good, SigningCertURL="https://["), 403),
        ("SigningCertURL-list", _body(good, SigningCertURL=[CERT_URL]), 403),
        ("NaN", text.replace('"Type"', '"Subject": NaN, "Type"').encode(), 400),
        ("Infinity", text.replace('"Type"', '"Subject": -Infinity, "Type"').encode(), 400),
        ("huge-int", text.replace('"Type"', '"Subject": ' + "9" * 5000 + ', "Type"').encode(), 400),
        ("duplicate-key", text.replace('"Type"', '"TopicArn": "theirs", "Type"').encode(), 400),
        ("lone-surrogate", _body(good, Message=good["Message"] + "\ud800"), 400),
        ("NUL", _body(good, MessageId="m\x00"), 400),
        ("not-utf8", "\u00e9".encode("latin-1"), 400),
        # Signed by "Amazon" but with an SES event we cannot read: refused, nothing recorded.
        ("mail-list", _signed_event(lambda e: _with(e, ("mail",), ["x"])), 400),
        ("bounce-string", _signed_event(lambda e: _with(e, ("bounce",), "Permanent")), 400),
        ("bouncedRecipients-object", _signed_event(lambda e: _with(e, ("bounce", "bouncedRecipients"), {"a": 1})), 400),
        ("bouncedRecipients-of-strings",
         _signed_event(lambda e: _with(e, ("bounce", "bouncedRecipients"), ["layla@example.com"])), 400),
        ("emailAddress-number", _signed_event(lambda e: _with(e, (*recipient, "emailAddress"), 5)), 400),
        ("emailAddress-NUL", _signed_event(lambda e: _with(e, (*recipient, "emailAddress"), "l\x00@example.com")), 400),
        ("emailAddress-surrogate",
         _signed_event(lambda e: _with(e, (*recipient, "emailAddress"), "l\ud800@example.com")), 400),
        ("emailAddress-huge", _signed_event(lambda e: _with(e, (*recipient, "emailAddress"), "x" * 400)), 400),
        ("status-list", _signed_event(lambda e: _with(e, (*recipient, "status"), ["5.1.1"])), 400),
        ("diagnosticCode-object", _signed_event(lambda e: _with(e, (*recipient, "diagnosticCode"), {"a": 1})), 400),
        ("bounceType-number", _signed_event(lambda e: _with(e, ("bounce", "bounceType"), 1)), 400),
        ("notificationType-list", _signed_event(lambda e: _with(e, ("notificationType",), ["Bounce"])), 400),
        ("source-object", _signed_event(lambda e: _with(e, ("mail", "source"), {"a": 1})), 400),
        ("Message-a-list", _signed_event(lambda e: "[1, 2]"), 400),
        ("Message-not-json", _signed_event(lambda e: "not json"), 400),
        ("Message-nested-1000-deep", _signed_event(lambda e: DEEP), 400),
    ]


def test_a_malformed_sns_message_is_a_4xx_never_a_500(store, site, caplog):
    store.add_subscriber("layla@example.com", "")
    with caplog.at_level(logging.WARNING):
        answers = {case: (httpx.post(f"{site.url}/webhooks/ses", content=body).status_code, status)
                   for case, body, status in ses_malformed()}
    assert {case: got for case, (got, wanted) in answers.items() if got != wanted} == {}
    assert store.get_subscriber("layla@example.com").status == "active"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], "no traceback in the log"
    assert all("\n" not in r.getMessage() for r in caplog.records), "each refusal is one line"


def postmark_malformed() -> list[tuple[str, bytes, int]]:
    good = {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": "HardBounce", "Email": "sami@example.net",
            "Details": "smtp;550 5.1.1 unknown"}
    text = json.dumps(good)
    return [
        ("nested-1000-deep", DEEP.encode(), 400),
        ("ID-list", _body(good, ID=[1]), 400),
        ("ID-bool", _body(good, ID=True), 400),
        ("ID-float", _body(good, ID=1.5), 400),
        ("ID-huge", _body(good, ID=10 ** 200), 400),
        ("ID-missing", _body({k: v for k, v in good.items() if k != "ID"}), 400),
        ("Email-number", _body(good, Email=5), 400),
        ("Email-NUL", _body(good, Email="sami\x00@example.net"), 400),
        ("Email-surrogate", _body(good, Email="sami\ud800@example.net"), 400),
        ("Type-list", _body(good, Type=["HardBounce"]), 400),
        ("RecordType-object", _body(good, RecordType={"a": 1}), 400),
        ("Details-object", _body(good, Details={"a": 1}), 400),
        ("NaN", text.replace('"Type"', '"TypeCode": NaN, "Type"').encode(), 400),
        ("duplicate-key", text.replace('"Type"', '"Email": "x@example.net", "Type"').encode(), 400),
        ("not-utf8", b"\xff\xfe{}", 400),
    ]


def test_a_malformed_postmark_payload_is_a_4xx_never_a_500(store, site, caplog):
    store.add_subscriber("sami@example.net", "")
    url = f"{site.url}/webhooks/postmark"
    with caplog.at_level(logging.WARNING):
        answers = {case: (httpx.post(url, content=body, auth=("postmark", POSTMARK_SECRET)).status_code, status)
                   for case, body, status in postmark_malformed()}
    assert {case: got for case, (got, wanted) in answers.items() if got != wanted} == {}
    assert store.get_subscriber("sami@example.net").status == "active"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], "no traceback in the log"


ODD_CREDENTIALS = [
    b"Basic \xff\xfe\xfd",  # not ASCII: starlette reads headers as latin-1
    "Basic كلمة السر".encode("utf-8"),
    b"Basic " + base64.b64encode(b"postmark:\xff\xfe"),  # not UTF-8 inside
    b"Basic " + base64.b64encode("postmark:\ud800".encode("utf-8", "surrogatepass")),
    b"Basic ====", b"Basic", b"Basic  " + base64.b64encode(b"postmark:" + POSTMARK_SECRET.encode()),
    b"Bearer " + POSTMARK_SECRET.encode(), b"",
]


def test_odd_postmark_credentials_are_a_401(site, caplog):
    with caplog.at_level(logging.WARNING):
        answers = {authorization: httpx.post(f"{site.url}/webhooks/postmark", content=b"{}",
                                             headers={"Authorization": authorization}).status_code
                   for authorization in ODD_CREDENTIALS}
    assert set(answers.values()) == {401}, answers
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no traceback in the log"
