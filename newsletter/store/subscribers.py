"""Subscriber lists in and out: address validation, CSV import and export.

Import streams the file in chunks and reports every rejected row with its line
number; the good rows go in regardless.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..errors import SubscriberError
from .database import Status, Store

EXPORT_FIELDS = ["email", "name", "status", "created_at", "updated_at", "confirmed_at", "unsubscribed_at"]
IMPORT_CHUNK = 1000


# Every C0/C1 control character (NUL, CR, LF, ESC, DEL, …): none may reach a header.
_CONTROLS = dict.fromkeys([*range(0x00, 0x20), *range(0x7F, 0xA0)], " ")


def clean_name(name: str, max_length: int = 200) -> str:
    """A reader's display name fit for a header: no control characters, single spaces."""
    return " ".join(name.translate(_CONTROLS).split())[:max_length]


def normalise_email(address: str) -> str:
    """Validate an address (syntax only, no DNS) and return its normal form, lowercased."""
    # Loaded on first use: compiling email_validator's patterns costs ~30 ms of every command's start-up.
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(address.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"invalid email address {address.strip()!r}: {exc}") from None
    return result.normalized.lower()


def normalise_search(text: str) -> str:
    """Search text for addresses, in their stored form: a whole address as `normalise_email` makes it,
    a part of one trimmed, NFC and lowercased (stored addresses are lowercase)."""
    text = text.strip()
    if "@" in text:
        try:
            return normalise_email(text)
        except SubscriberError:
            pass
    return unicodedata.normalize("NFC", text).lower()


@dataclass
class ImportReport:
    added: int = 0
    duplicates: int = 0
    suppressed: int = 0
    rejected: list[str] = field(default_factory=list)


# Header names of the address and name columns, as lists exported by other tools spell them (Mailchimp's
# "Email Address", "First Name", "Last Name"; listmonk's "email", "name").
EMAIL_COLUMNS = ("email", "email address", "e-mail", "e-mail address", "mail", "البريد الإلكتروني", "البريد")
NAME_COLUMNS = ("name", "full name", "الاسم")
GIVEN_AND_FAMILY_COLUMNS = (("first name", "last name"), ("fname", "lname"), ("given name", "family name"))


def _rows(handle: TextIO, path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Each row's line and its `email` and `name`: a first line that names an address column is a header;
    one that holds an address is a row; one that does neither is a header this does not understand."""
    reader = csv.reader(handle)
    first = next(reader, None)
    if first is None:
        return
    columns = [cell.strip().lower() for cell in first]
    email_at = next((columns.index(c) for c in EMAIL_COLUMNS if c in columns), None)
    if email_at is None:
        if not any("@" in cell for cell in first):
            raise SubscriberError(f"{path}:1: no column of addresses in the header ({', '.join(first)}): name it "
                                  "`email` (and the readers' names `name`), or leave the header out")
        yield reader.line_num, _plain_row(first)
        for row in reader:  # streamed: a list of a million readers is never in memory
            if row:
                yield reader.line_num, _plain_row(row)
        return
    names = _name_columns(columns)
    for row in reader:
        if any(cell.strip() for cell in row):
            cells = row + [""] * (len(columns) - len(row))
            yield reader.line_num, {"email": cells[email_at], "name": " ".join(cells[i] for i in names).strip()}


def _name_columns(columns: list[str]) -> list[int]:
    """Where the readers' names are: a name column, else given and family name columns."""
    for name in NAME_COLUMNS:
        if name in columns:
            return [columns.index(name)]
    for given, family in GIVEN_AND_FAMILY_COLUMNS:
        if given in columns:
            return [columns.index(given)] + ([columns.index(family)] if family in columns else [])
    return []


def _plain_row(row: list[str]) -> dict[str, str]:
    """A row of a file without a header: the address, then the name."""
    return {"email": row[0], "name": row[1] if len(row) > 1 else ""}


def add_unless_forgotten(store: Store, address: str, name: str, status: Status,
                         email_hash: Callable[[str], str]) -> bool:
    """Add one reader (False: already on the list), unless they unsubscribed and asked to be forgotten: a list
    kept by hand must not bring them back, as an import does not; the signup page (with its confirmation)
    is their way back."""
    if store.suppressed_hashes([email_hash(address)]):
        raise SubscriberError(f"{address} unsubscribed and was forgotten at their request; not added again "
                              "(they can subscribe again on the signup page)")
    return store.add_subscriber(address, name, status)


def import_csv(store: Store, path: Path, email_hash: Callable[[str], str],
               status: Status = Status.active) -> ImportReport:
    """Import `email[,name]` rows (header optional); skip duplicates, report bad rows.

    Readers who unsubscribed and were then forgotten (GDPR) are recognised by
    `email_hash` and never imported again.
    """
    report = ImportReport()
    seen: set[str] = set()
    chunk: list[tuple[str, str]] = []

    def flush() -> None:
        suppressed = store.suppressed_hashes([email_hash(e) for e, _ in chunk])
        if suppressed:
            chunk[:] = [(e, n) for e, n in chunk if email_hash(e) not in suppressed]
            report.suppressed += len(suppressed)
        added = store.add_subscribers(chunk, status)
        report.added += added
        report.duplicates += len(chunk) - added
        chunk.clear()
        seen.clear()

    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise SubscriberError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    with handle:
        try:
            for line, row in _rows(handle, path):
                try:
                    email = normalise_email(row.get("email", ""))
                except SubscriberError as exc:
                    report.rejected.append(f"{path}:{line}: {exc}")
                    continue
                if email in seen:
                    report.duplicates += 1
                    continue
                seen.add(email)
                chunk.append((email, clean_name(row.get("name", ""))))
                if len(chunk) >= IMPORT_CHUNK:
                    flush()
        except (UnicodeDecodeError, csv.Error) as exc:
            report.rejected.append(f"{path}: stopped reading: {exc}")
    flush()
    if report.added:
        store.refresh_statistics()
    return report


# A cell starting with one of these is a formula to a spreadsheet (CSV injection): =HYPERLINK(…), +cmd|…
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """A cell a spreadsheet shows as text, never runs: one starting like a formula gets a leading apostrophe."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def export_lines(store: Store, status: Status | None = None, for_spreadsheets: bool = False) -> Iterator[str]:
    """The list as CSV, a line at a time (the header first), read by keyset pages: memory stays flat.

    `for_spreadsheets` guards every text cell against formula injection (for a download someone opens
    in a spreadsheet); the command's export stays exactly what `subscribers import` reads back.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in store.iter_subscribers(status):
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        cells = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
        if for_spreadsheets:
            cells = {k: spreadsheet_text(v) if isinstance(v, str) else v for k, v in cells.items()}
        writer.writerow(cells)
    yield buffer.getvalue()


def export_csv(store: Store, out: TextIO, status: Status | None = None) -> int:
    """Write the list as CSV to `out`; how many readers it holds."""
    count = -1  # the header is a line too
    for line in export_lines(store, status):
        out.write(line)
        count += 1
    return count

