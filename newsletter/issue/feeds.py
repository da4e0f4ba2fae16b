"""Read the newsroom's feeds (RSS 2.0 and Atom) into plain `Story` records.

Remote sources are fetched concurrently; a source that fails is reported and
skipped, so one broken feed never costs the morning issue.
"""

from __future__ import annotations

import asyncio
import calendar
import html
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlparse, urlsplit, urlunsplit

import feedparser
import httpx
import lxml.html
from lxml.etree import ParserError

from ..errors import FeedError

USER_AGENT = "arabic-morning-newsletter/0.1 (+https://github.com/)"
_SPACES = re.compile(r"\s+")
_BLOCK_TAGS = ("p", "div", "br", "li", "tr", "td", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote")
# Query parameters that say who sent a reader, not which article: aggregators and
# newsletters add them to other outlets' links, so one article reaches us under many URLs.
_TRACKING_PARAMETER = re.compile(
    r"utm_\w*|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|igshid|mc_cid|mc_eid|_ga|ocid|cmpid"
    r"|at_\w+|ref|ref_src|xtor|ito|__twitter_impression|amp",
    re.IGNORECASE,
)
_AMP_SEGMENT = re.compile(r"(?:^|/)amp(?=/|$)|\.amp(?=\.html?$|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Story:
    """One report from one feed. Everything in it is untrusted text."""

    url: str
    title: str
    summary: str
    published: dt.datetime | None
    source: str
    position: int
    image: str | None = None
    image_alt: str = ""
    categories: tuple[str, ...] = field(default_factory=tuple)
    # Who wrote it, for counting outlets: the feed's site (two feeds of one site are one
    # outlet) or the name given in NEWSLETTER_FEED_OUTLETS. Empty means `source`.
    outlet: str = ""

    @property
    def outlet_key(self) -> str:
        return self.outlet or self.source


def without_tracking(url: str) -> str:
    """The link with tracking parameters and the fragment removed: what readers are sent to."""
    parts = urlsplit(url)
    parameters = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in parameters if not _TRACKING_PARAMETER.fullmatch(k)]
    query = urlencode(kept) if len(kept) < len(parameters) else parts.query  # untouched unless needed
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def link_key(url: str) -> str:
    """One key per article, whatever copy of its URL a feed gave.

    Ignores the scheme, "www.", tracking parameters, the fragment, the order of the
    other parameters, AMP variants (/amp/…, …/amp, .amp.html) and a trailing slash.
    """
    parts = urlsplit(without_tracking(url.strip()))
    host = (parts.hostname or "").removeprefix("www.").removeprefix("amp.")
    path = _AMP_SEGMENT.sub("", parts.path).rstrip("/") or "/"
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return f"{host}{path}?{query}" if query else f"{host}{path}"


def site_of(url: str) -> str:
    """An outlet's identity from its web address: the host without "www."."""
    return (urlparse(url).hostname or "").removeprefix("www.")


@dataclass
class FeedBatch:
    """What a read of all sources produced: the stories and the sources that failed."""

    stories: list[Story]
    failures: list[FeedError]


def plain_text(fragment: str) -> str:
    """Strip tags, decode entities and collapse whitespace in a feed's HTML fragment."""
    if not fragment:
        return ""
    if "<" in fragment or "&" in fragment:
        try:
            root = lxml.html.fragment_fromstring(fragment, create_parent="div")
        except (ParserError, ValueError):
            pass
        else:
            for block in root.iter(*_BLOCK_TAGS):
                # «البلاد.<p>وأعلنت» must not run together, before or after a block.
                block.text = " " + (block.text or "")
                block.tail = " " + (block.tail or "")
            fragment = root.text_content()
    return _SPACES.sub(" ", fragment).strip()


def _text_field(entry: feedparser.FeedParserDict, key: str) -> str:
    """A title or summary as plain text, honouring whether the feed says it is HTML.

    Plain-text fields keep what looks like markup (a headline about
    «<script>» is about the word); they are unescaped once, because many
    feeds escape entities twice.
    """
    value = entry.get(key, "")
    if entry.get(f"{key}_detail", {}).get("type") == "text/plain":
        return _SPACES.sub(" ", html.unescape(value)).strip()
    return plain_text(value)


def _first_image_in_html(fragment: str) -> str | None:
    if "<img" not in fragment:
        return None
    try:
        root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except (ParserError, ValueError):
        return None
    sources = root.xpath("//img/@src")
    return str(sources[0]) if sources else None


def _image_of(entry: feedparser.FeedParserDict) -> str | None:
    for media in entry.get("media_content", []) + entry.get("media_thumbnail", []):
        url = media.get("url")
        if url and media.get("medium", "image") == "image":
            return url
    for link in entry.get("enclosures", []) + entry.get("links", []):
        if link.get("type", "").startswith("image/") and link.get("href"):
            return link["href"]
    for content in [entry.get("summary", "")] + [c.get("value", "") for c in entry.get("content", [])]:
        url = _first_image_in_html(content)
        if url:
            return url
    return None


def _published_of(entry: feedparser.FeedParserDict) -> dt.datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    try:
        return dt.datetime.fromtimestamp(calendar.timegm(parsed), tz=dt.timezone.utc)
    except (ValueError, OverflowError, OSError):  # year 10000 and the like: that item is undated, the feed goes on
        return None


def _is_safe_link(url: str) -> bool:
    return urlparse(url).scheme in {"http", "https"}


def _outlet_of(feed: feedparser.FeedParserDict, source: str, outlets: Mapping[str, str]) -> tuple[str, str]:
    """(display name, identity) of the outlet behind one feed.

    A name set in NEWSLETTER_FEED_OUTLETS (for the feed, or for its site) wins;
    otherwise the feed's title names it and its site identifies it.
    """
    site = site_of(feed.get("link", "")) or site_of(source)
    named = outlets.get(source) or (outlets.get(site) if site else None)
    if named:
        return named, named
    name = plain_text(feed.get("title", "")) or site or Path(source).stem
    return name, site or name


def parse_feed(content: bytes, source: str, outlets: Mapping[str, str] | None = None) -> list[Story]:
    """Parse one feed document; raise FeedError when nothing usable is in it."""
    parsed = feedparser.parse(content)
    if not parsed.entries:
        reason = str(parsed.get("bozo_exception") or "no items in the feed")
        raise FeedError(source, f"unreadable feed: {reason}")
    name, outlet = _outlet_of(parsed.feed, source, outlets or {})
    stories = []
    for position, entry in enumerate(parsed.entries, start=1):
        url = (entry.get("link") or "").strip()
        title = _text_field(entry, "title")
        if not url or not title or not _is_safe_link(url):
            continue
        image = _image_of(entry)
        stories.append(
            Story(
                url=without_tracking(url),
                title=title,
                summary=_text_field(entry, "summary"),
                published=_published_of(entry),
                source=name,
                outlet=outlet,
                position=position,
                image=image if image and _is_safe_link(image) else None,
                image_alt=title,
                categories=tuple(plain_text(t.get("term", "")) for t in entry.get("tags", []) if t.get("term")),
            )
        )
    if not stories:
        raise FeedError(source, f"none of its {len(parsed.entries)} item(s) has a title and an http(s) link")
    return stories


async def _fetch(client: httpx.AsyncClient, url: str, max_bytes: int) -> bytes:
    try:
        async with client.stream("GET", url) as response:
            if response.status_code >= 400:
                raise FeedError(url, f"HTTP {response.status_code} {response.reason_phrase}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise FeedError(url, f"larger than {max_bytes} bytes (NEWSLETTER_FEED_MAX_BYTES)")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.TimeoutException:
        raise FeedError(url, "timed out (NEWSLETTER_FEED_TIMEOUT)") from None
    except httpx.HTTPError as exc:
        raise FeedError(url, f"unreachable: {exc or type(exc).__name__}") from None


def _read_local(path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise FeedError(path, f"cannot read file: {exc.strerror or exc}") from None


async def _read_source(client: httpx.AsyncClient, source: str, max_bytes: int,
                       outlets: Mapping[str, str]) -> list[Story]:
    is_remote = source.startswith(("http://", "https://"))
    content = await _fetch(client, source, max_bytes) if is_remote else _read_local(source)
    return parse_feed(content, source, outlets)


async def read_feeds_async(sources: list[str], timeout: float, max_bytes: int,
                           outlets: Mapping[str, str] | None = None) -> FeedBatch:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/rss+xml, application/atom+xml, */*"}
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True, headers=headers) as client:
        results = await asyncio.gather(
            *(_read_source(client, s, max_bytes, outlets or {}) for s in sources), return_exceptions=True
        )
    batch = FeedBatch(stories=[], failures=[])
    for source, result in zip(sources, results, strict=True):
        if isinstance(result, FeedError):
            batch.failures.append(result)
        elif isinstance(result, BaseException):
            batch.failures.append(FeedError(source, f"unexpected error: {result!r}"))
        else:
            batch.stories.extend(result)
    return batch


def read_feeds(sources: list[str], timeout: float = 15.0, max_bytes: int = 5_000_000,
               outlets: Mapping[str, str] | None = None) -> FeedBatch:
    """Read every source; failures are collected, never raised."""
    return asyncio.run(read_feeds_async(sources, timeout, max_bytes, outlets))
