"""Relays that report over HTTP: Amazon SES through SNS (signatures checked against a certificate made
here) and Postmark (HTTP Basic), posted to the real app under uvicorn. Only the internet is stood in
for: the app's `fetch` answers the certificate and subscription URLs an SNS message names."""

from __future__ import annotations

import base64
import datetime as dt
import json

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.web.app import create_app

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


def notification(ses_event: dict, message_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324") -> dict:
    return {"Type": "Notification", "MessageId": message_id, "TopicArn": TOPIC,
            "Message": json.dumps(ses_event), "Timestamp": "2026-11-30T05:02:11.123Z"}


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
    """What the app fetches: the certificate, and the subscription confirmation it must visit."""

    def __init__(self) -> None:
        self.visited: list[str] = []

    async def __call__(self, url: str) -> bytes:
        self.visited.append(url)
        if url == CERT_URL:
            return CERTIFICATE
        if url == SUBSCRIBE_URL:
            return b"<ConfirmSubscriptionResponse/>"
        raise httpx.ConnectError(f"no route to {url}")


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
                    "Timestamp": "2026-11-30T04:00:00.000Z"}
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
