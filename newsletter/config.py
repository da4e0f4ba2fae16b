"""All settings in one place, read once at the edge (CLI) and passed down.

Every field is documented in `.env.example`; keep the two in step.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
import os
import re
import secrets
from enum import Enum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, IPvAnyNetwork, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError, NewsletterError
from .issue.ranking import ARAB_LEAGUE
from .issue.similarity import gazetteer

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SAMPLE_FEEDS_DIR = PACKAGE_DIR / "sample_feeds"
ENV_EXAMPLE = PROJECT_DIR / ".env.example"

DEFAULT_PORTS = {"http": 80, "https": 443}
MIN_SECRET_KEY_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16
# Keys that were ever shipped as examples: whoever knows them forges every link.
KNOWN_PLACEHOLDER_KEYS = frozenset({"change-me", "changeme", "secret", "test-secret"})
# A host name in ASCII (an IDN in its xn-- form): labels of letters, digits and inner hyphens.
HOST_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
# A sender's mailbox as MAIL FROM and the From header carry it unquoted: an ASCII dot-atom, one @, a host name.
_MAILBOX = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@" + HOST_NAME)


def _sample_feeds() -> list[str]:
    return sorted(str(p) for p in SAMPLE_FEEDS_DIR.iterdir() if p.suffix in {".xml", ".atom"})


class SmtpTls(str, Enum):
    none = "none"
    starttls = "starttls"
    tls = "tls"


class Tracking(str, Enum):
    """What story links count: nothing, per story anonymously (unique readers by a short-lived salt), or per reader."""

    off = "off"
    anonymous = "anonymous"
    individual = "individual"


class Approval(str, Enum):
    """Whether an editor must approve the day's issue before `newsletter send` sends it."""

    none = "none"
    required = "required"


class LogFormat(str, Enum):
    """How commands and serve write their log: lines for people, or one JSON object a line for log shippers."""

    text = "text"
    json = "json"


class EventLoop(str, Enum):
    """The event loop a send runs on: uvloop (written in C) when installed, or Python's own."""

    auto = "auto"
    uvloop = "uvloop"
    asyncio = "asyncio"


# The most stories an issue can hold and stay under Gmail's 102 KB clipping limit with the default
# template. Measured by rendering long stories (a 150-character headline, a summary cut at 260
# characters, a picture with a 160-character alt text, four outlets, 90-character URLs): the issue's
# fixed part and its lead come to ~16.0 KB and each further story to ~7.0 KB, so 12 stories make
# ~93 KB, leaving ~9 KB for an editor's intro and longer headlines (13 would make ~100 KB).
# tests/test_render.py renders this many such stories, intro included, and checks the size;
# `newsletter send` refuses any issue over the limit all the same.
MAX_STORIES_LIMIT = 12


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        allow_inf_nan=False,  # "inf" seconds or "nan" messages a second are no setting anyone means
    )

    feeds: Annotated[list[str], NoDecode] = Field(default_factory=_sample_feeds)
    sections: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["دولي", "الدولي", "العالم", "عالمي", "عربي ودولي", "international", "world"]
    )
    feed_outlets: dict[str, str] = Field(default_factory=dict)
    max_stories: int = Field(default=6, ge=1, le=MAX_STORIES_LIMIT)
    # The newsroom's region: the desk's past leads teach how much more a story about it weighs for the lead.
    home_countries: Annotated[list[str], NoDecode] = Field(default_factory=lambda: sorted(ARAB_LEAGUE))
    timezone: str = "Europe/Paris"
    edition_time: dt.time = dt.time(7, 0)
    approval: Approval = Approval.none
    approval_deadline: dt.time | None = None  # with approval required: send the unapproved issue after this time
    window_hours: int = Field(default=24, ge=1, le=168)
    feed_timeout: float = Field(default=15.0, gt=0)
    feed_max_bytes: int = Field(default=5_000_000, gt=0)

    database_url: str = f"sqlite:///{PROJECT_DIR / 'subscribers' / 'subscribers.sqlite3'}"
    templates_dir: Path = PROJECT_DIR / "templates"
    editorial_dir: Path = PROJECT_DIR / "editorial"

    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_tls: SmtpTls = SmtpTls.none
    smtp_ca_file: Path | None = None
    smtp_timeout: float = Field(default=30.0, gt=0)
    smtp_connections: int = Field(default=10, ge=1, le=500)
    smtp_messages_per_connection: int = Field(default=0, ge=0)
    event_loop: EventLoop = EventLoop.auto
    log_format: LogFormat = LogFormat.text
    rate_limit: float = Field(default=0, ge=0)  # messages per second, 0 = unlimited
    send_attempts: int = Field(default=3, ge=1, le=20)
    retry_base_seconds: float = Field(default=2.0, ge=0)
    # Messages a second for some recipient domains ("gmail.com=20,yahoo.com=10"); others unlimited.
    domain_rate_limits: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    # Messages in flight at once for some recipient domains ("gmail.com=5"); others: any connection.
    domain_connections: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    stale_run_seconds: float = Field(default=30.0, ge=1.0)
    # Days an issue keeps one delivery row per reader; `newsletter db compact` folds older ones into totals.
    log_retention_days: int = Field(default=90, ge=1, le=36_500)

    from_address: str = "newsletter@localhost"
    # Where bounces go, with VERP: each message's envelope sender is bounces+<signed token>@domain,
    # naming the issue and the reader. Empty: the envelope sender is NEWSLETTER_FROM_ADDRESS.
    bounce_address: str = ""
    # A reader is `bounced` after this many soft bounces (mailbox full, 4.x.x) on different days
    # within NEWSLETTER_SOFT_BOUNCE_DAYS; one hard bounce (5.x.x) is enough.
    soft_bounce_limit: int = Field(default=3, ge=1, le=100)
    soft_bounce_days: int = Field(default=14, ge=1, le=365)
    # The mailbox `newsletter bounces --imap` reads; handled reports move to the done folder,
    # those it cannot read or attribute to the kept folder.
    imap_host: str = ""
    imap_port: int = Field(default=993, ge=1, le=65535)
    imap_tls: SmtpTls = SmtpTls.tls
    imap_username: str = ""
    imap_password: str = ""
    imap_ca_file: Path | None = None
    imap_folder: str = "INBOX"
    imap_done_folder: str = "Processed"
    imap_kept_folder: str = "Unattributed"
    imap_timeout: float = Field(default=30.0, gt=0)
    # DKIM signing in the app, for relays that do not sign: an RSA key (2048 bits or more) and/or an
    # Ed25519 key, PEM files, each with its selector; both set, every message carries both signatures.
    dkim_domain: str = ""  # d=; default: the From address's domain (aligned for DMARC)
    dkim_rsa_selector: str = ""
    dkim_rsa_key_file: Path | None = None
    dkim_ed25519_selector: str = ""
    dkim_ed25519_key_file: Path | None = None
    # The DNS server `newsletter doctor` asks about SPF, DKIM and DMARC, as address[:port]
    # ("127.0.0.1:5353", "[::1]:53"). Empty: this machine's resolvers (/etc/resolv.conf).
    doctor_nameserver: str = ""
    # Relays that report by webhook to `newsletter serve`: Amazon SES through SNS (the topics whose
    # messages are believed, once their signature checks) and Postmark (HTTP Basic password).
    ses_topic_arns: Annotated[list[str], NoDecode] = Field(default_factory=list)
    postmark_webhook_secret: str = ""
    from_name: str = "الرسالة الإخبارية"
    reply_to: str = ""
    list_id: str = ""
    unsubscribe_mailto: str = ""
    base_url: str = "http://127.0.0.1:8000"
    tracking: Tracking = Tracking.anonymous
    tracking_salt_days: int = Field(default=2, ge=1, le=30)
    secret_key: str = ""
    confirm_max_age_days: float = Field(default=7, gt=0)
    welcome: bool = True  # on: a welcome email right after a reader confirms (NEWSLETTER_WELCOME=on|off)
    # The editors' desk (/desk): a session ends after desk_idle_minutes without a request, and
    # desk_session_hours after sign-in whatever happens. Sign-in attempts allowed per 15 minutes,
    # per account (known or not) and per client address.
    desk_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    desk_session_hours: int = Field(default=12, ge=1, le=24 * 7)
    desk_login_limit: int = Field(default=10, ge=1)
    desk_login_client_limit: int = Field(default=30, ge=1)
    # Readers who never confirm are forgotten this many days after they last asked (signup or a new
    # confirmation email), by `db compact` and by `serve` in the background.
    pending_days: float = Field(default=7, gt=0)

    signup_rate_limit: int = Field(default=5, ge=1)  # signups per IP per window
    # Sites whose pages carry the signup box (the snippet at /embed), as origins:
    # https://www.newsroom.example. Sign-ups posted from any other site get 403.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Reverse proxies whose X-Forwarded-For is believed (addresses or CIDRs).
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)
    signup_rate_window_seconds: int = Field(default=60, ge=1)
    max_request_bytes: int = Field(default=16_384, ge=1024)
    # How long a web request waits for the SQLite write lock (a send holds it
    # in short bursts) before answering 503 with Retry-After.
    web_db_wait_seconds: float = Field(default=5.0, gt=0, le=60)
    # What one `serve` process holds at most (each worker alike): open connections and requests in
    # progress, beyond which it answers 503 at once rather than queue; and how long an idle
    # keep-alive connection stays open. The proxy in front (deploy/nginx) cuts slow clients off.
    web_max_connections: int = Field(default=500, ge=2, le=100_000)
    web_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    # Prometheus: `serve` answers /metrics only to `Authorization: Bearer <metrics_token>` (empty: /metrics
    # is off); `send` writes its figures to metrics_file for node_exporter's textfile collector.
    metrics_token: str = ""
    metrics_file: Path | None = None

    @field_validator("feeds", "sections", "home_countries", "trusted_proxies", "allowed_origins", "ses_topic_arns",
                     mode="before")
    @classmethod
    def _json_or_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("domain_rate_limits", "domain_connections", mode="before")
    @classmethod
    def _domain_numbers(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        rates = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            domain, equals, rate = item.partition("=")
            try:
                rates[domain.strip().lower()] = float(rate)
            except ValueError:
                raise ValueError(f"{item!r} is not domain=number, like gmail.com=20") from None
            if not equals or not domain.strip() or not 0 < rates[domain.strip().lower()] < math.inf:
                raise ValueError(f"{item!r} is not domain=number, like gmail.com=20")
        return rates

    @field_validator("home_countries")
    @classmethod
    def _known_countries(cls, value: list[str]) -> list[str]:
        known = gazetteer().places
        unknown = [country for country in value if country not in known]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}: use the country names of newsletter/issue/places.tsv "
                             "(such as egypt, saudi-arabia, united-arab-emirates)")
        return value

    @field_validator("feeds")
    @classmethod
    def _feeds_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one feed URL or file path")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        origins = []
        for item in value:
            parts = urlsplit(item.strip())
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
                    or parts.query or parts.fragment:
                raise ValueError(f"{item!r} is not an origin like https://www.newsroom.example (no path)")
            port = f":{parts.port}" if parts.port and parts.port != DEFAULT_PORTS[parts.scheme] else ""
            origins.append(f"{parts.scheme}://{parts.hostname}{port}")  # as browsers write Origin
        return origins

    @field_validator("smtp_ca_file", "imap_ca_file", "dkim_rsa_key_file", "dkim_ed25519_key_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("smtp_ca_file", "imap_ca_file", "dkim_rsa_key_file", "dkim_ed25519_key_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("doctor_nameserver")
    @classmethod
    def _nameserver(cls, value: str) -> str:
        value = value.strip()
        if value:
            nameserver_address(value)
        return value

    @field_validator("metrics_token")
    @classmethod
    def _long_metrics_token(cls, value: str) -> str:
        value = value.strip()
        if value and len(value) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(f"is {len(value)} characters; at least {MIN_METRICS_TOKEN_LENGTH} are needed "
                             "(`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        return value

    @field_validator("metrics_file", mode="before")
    @classmethod
    def _prom_file(cls, value: object) -> object:
        if value in ("", None):
            return None
        if not str(value).endswith(".prom"):
            raise ValueError(f"{value} does not end in .prom, and node_exporter's textfile collector reads only those")
        return value

    @field_validator("approval_deadline", mode="before")
    @classmethod
    def _no_deadline_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Beirut)") from None
        return value

    @field_validator("from_address")
    @classmethod
    def _plausible_address(cls, value: str) -> str:
        value = value.strip()
        if not _MAILBOX.fullmatch(value):
            raise ValueError(f"{value!r} is not an email address like newsletter@news.example (ASCII, one @, "
                             "no spaces): it goes into every message's From and the relay's MAIL FROM")
        return value

    @field_validator("dkim_domain")
    @classmethod
    def _dkim_host(cls, value: str) -> str:
        value = value.strip().rstrip(".")
        if value and not re.fullmatch(HOST_NAME, value):
            raise ValueError(f"{value!r} is not a domain such as news.example: it names the DNS record of the key")
        return value

    @field_validator("bounce_address")
    @classmethod
    def _bounce_mailbox(cls, value: str) -> str:
        value = value.strip()
        local, at, domain = value.rpartition("@")
        if value and (not at or not local or not domain or "+" in local or not value.isascii()):
            raise ValueError(f"{value!r} is not a plain ASCII address like bounces@news.example "
                             "(no '+': the return path adds +<token> to it)")
        return value.lower()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 (urlsplit checks the port when asked for it)
        except ValueError:
            raise ValueError(f"{value!r} has a port outside 1-65535") from None
        if not parts.hostname or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not an address such as https://news.example: every link in the "
                             "email starts with it")
        if value.startswith("http://") and not _is_local_host(urlsplit(value).hostname or ""):
            # RFC 8058: mail providers only make a one-click unsubscribe request to an https:// URL.
            raise ValueError(f"{value!r} must start with https:// for a public host (one-click unsubscribe "
                             "needs HTTPS); http:// is for localhost, 127.0.0.1 and ::1 only")
        return value.rstrip("/")

    @property
    def own_origin(self) -> str:
        """The origin of the public pages (scheme://host[:port] of NEWSLETTER_BASE_URL)."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc.lower()}"

    @property
    def base_url_is_local(self) -> bool:
        """True when the links point at this machine only (development, the demo, the tests)."""
        return _is_local_host(urlsplit(self.base_url).hostname or "")

    def served_on(self, port: int) -> Settings:
        """These settings for a server on `port`: a local BASE_URL follows the port, so that the pages'
        own links, forms and styles reach this server; a public one (behind a proxy) is kept."""
        parts = urlsplit(self.base_url)
        if not self.base_url_is_local or parts.port == port:
            return self
        host = parts.hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return self.model_copy(update={"base_url": parts._replace(netloc=f"{host}:{port}").geturl()})

    def require_secret_key(self, listening_publicly: bool = False) -> None:
        """Refuse to sign public links with a missing, example or short key.

        The key signs every confirmation and unsubscribe link: anyone who knows
        it can unsubscribe every reader or confirm a stranger's signup. Only a
        site nobody else can reach (local BASE_URL, served on loopback) may do without.
        """
        if self.base_url_is_local and not listening_publicly:
            return
        key = self.secret_key.strip()
        if not key:
            problem = "is not set"
        elif key.lower() in KNOWN_PLACEHOLDER_KEYS:
            problem = f"is the example value {key!r}"
        elif len(key) < MIN_SECRET_KEY_LENGTH:
            problem = f"is {len(key)} characters; at least {MIN_SECRET_KEY_LENGTH} are needed"
        else:
            return
        raise ConfigError(
            f"setting NEWSLETTER_SECRET_KEY {problem}, and it signs every link of a public site: "
            "run `newsletter init` to write a .env with a random key (or set one from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )

    @property
    def confirm_max_age_seconds(self) -> int:
        return int(self.confirm_max_age_days * 86400)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def sender_domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1]

    @property
    def signs_dkim(self) -> bool:
        """Whether a DKIM key is set at all (its file and selector are checked when it is loaded)."""
        return any((self.dkim_rsa_key_file, self.dkim_rsa_selector, self.dkim_ed25519_key_file,
                    self.dkim_ed25519_selector))

    @property
    def effective_list_id(self) -> str:
        return self.list_id or f"morning.{self.sender_domain}"


def nameserver_address(value: str) -> tuple[str, int]:
    """("127.0.0.1", 5353) from "127.0.0.1:5353"; an IPv6 address in brackets when it has a port."""
    parts = urlsplit(f"dns://{value}")
    try:
        host, port = parts.hostname or "", parts.port or 53
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address with an optional port, like 127.0.0.1:5353") from None
    return host, port


def _is_local_host(host: str) -> bool:
    """localhost, a name under .localhost, or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_env_file(path: Path, force: bool = False) -> Path:
    """A new .env from .env.example with a random secret key; never overwrites one silently."""
    if path.exists() and not force:
        raise NewsletterError(f"{path} already exists; edit it, or pass --force to replace it")
    example = ENV_EXAMPLE.read_text(encoding="utf-8") if ENV_EXAMPLE.is_file() else "NEWSLETTER_SECRET_KEY=\n"
    key = secrets.token_urlsafe(48)
    lines = [f"NEWSLETTER_SECRET_KEY={key}" if line.startswith("NEWSLETTER_SECRET_KEY=") else line
             for line in example.splitlines()]
    # Private from the first byte: it holds the key and, once filled in, the SMTP password.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file replaced with --force keeps its old mode otherwise
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning a validation failure into one line naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "NEWSLETTER_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        if len(first["loc"]) > 1:  # one item of a list setting: say which
            message += f": {first['input']!r}"
        raise ConfigError(f"setting {name}: {message}") from None
    except (json.JSONDecodeError, ValueError) as exc:
        # pydantic-settings names the field, not the variable, of a value that is not JSON.
        field = re.search(r'error parsing value for field "(\w+)"', str(exc))
        if field:
            raise ConfigError(f"setting NEWSLETTER_{field.group(1).upper()}: not valid JSON "
                              f"({exc.__cause__ or exc})") from None
        if isinstance(exc, UnicodeDecodeError):
            raise ConfigError(f"settings: the .env file is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        raise ConfigError(f"settings: {exc}") from None
