"""Pictures for the bundled sample feeds, whose image URLs are on made-up hosts (*.example).

Only the demo and the preview use them, so that the sample issue shows pictures rather than
broken-image icons; a real feed's pictures are never touched.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path

from .config import SAMPLE_FEEDS_DIR

PICTURES_DIR = SAMPLE_FEEDS_DIR / "pictures"
# An image URL on a reserved example host (RFC 2606), inside an attribute.
_MADE_UP_PICTURE = re.compile(r"""https?://[a-z0-9.-]+\.example/[^"'\s<>]+\.(?:jpe?g|png|gif|webp)""", re.IGNORECASE)


def pictures() -> list[Path]:
    return sorted(PICTURES_DIR.glob("sample-*.png"))


def picture_for(url: str) -> Path:
    """The same sample picture for the same URL, every time."""
    found = pictures()
    return found[zlib.crc32(url.encode("utf-8")) % len(found)]


def with_sample_pictures(html: str, address_of: Callable[[Path], str]) -> str:
    """`html` with each made-up host's picture replaced by a sample picture, at `address_of(picture)`."""
    if not pictures():
        return html
    return _MADE_UP_PICTURE.sub(lambda match: address_of(picture_for(match.group(0))), html)
