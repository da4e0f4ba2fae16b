"""Editors of the desk: their accounts, one-time password links, sessions, and the audit log.

Tokens (a session's, a password link's) are random and handed out once; the store keeps only
their SHA-256, so its tables, a backup or an export sign nobody in. Expiry is judged by the
database's clock, the one every worker and machine shares.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from ..errors import EditorError
from .schema import as_utc, audit_log, db_epoch_seconds, editor_sessions, editors, password_links, utcnow

TOKEN_BYTES = 32
PASSWORD_LINK_HOURS = 24
# A session's last-seen time is written at most this often: a page view is not a write each time.
LAST_SEEN_GRANULARITY_SECONDS = 30.0


def token_id(token: str) -> str:
    """What the store keeps of a token: its SHA-256 (the token has 256 random bits: no salt needed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def reader_detail(subscriber_id: int, email: str) -> str:
    """How the audit log names a reader an editor acted on (`reader-…` actions): "#id address"."""
    return f"#{subscriber_id} {email}"


def erase_readers_from_audit(conn: Connection, readers: list[tuple[int, str]]) -> None:
    """Forgotten readers' addresses out of the audit log, in the transaction that forgets them: the log must
    not keep what forgetting erased. Their lines keep "#id" alone (ids are never reused)."""
    if not readers:
        return
    detail = audit_log.c.detail
    first_word = (func.split_part(detail, " ", 1) if conn.dialect.name == "postgresql"
                  else func.substr(detail, 1, func.instr(detail, " ") - 1))
    conn.execute(update(audit_log)
                 .where(audit_log.c.action.startswith("reader-"),
                        detail.in_([reader_detail(subscriber_id, email) for subscriber_id, email in readers]))
                 .values(detail=first_word))


@dataclass(frozen=True)
class Editor:
    id: int
    email: str
    has_password: bool
    created_at: dt.datetime
    sessions: int = 0


@dataclass(frozen=True)
class EditorSession:
    """A signed-in editor, as the desk sees them on each request."""

    editor_id: int
    email: str
    token: str

    @property
    def csrf_token(self) -> str:
        """The token the desk's forms carry: derived from the session's, so nothing more is stored."""
        return hashlib.sha256(b"desk-csrf:" + self.token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    at: dt.datetime
    actor: str
    action: str
    detail: str


class Editors:
    """The editors' accounts and sessions, and the audit log of who did what."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.now = db_epoch_seconds(engine)

    def _clock(self, conn) -> float:
        # PostgreSQL's extract() is a numeric (Decimal): made a float like the columns it is compared with.
        return float(conn.execute(select(self.now)).scalar_one())

    # Accounts --------------------------------------------------------------

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(editors)).scalar_one()

    def add(self, email: str, actor: str, link_seconds: float) -> str:
        """Add an editor with no password yet; the token of their one-time link to set one."""
        with self.engine.begin() as conn:
            if conn.execute(select(editors.c.id).where(editors.c.email == email)).first():
                raise EditorError(f"{email} is already an editor; to give them a new link, "
                                  f"`newsletter editors remove {email}` then add them again")
            editor_id = conn.execute(insert(editors).values(email=email, created_at=utcnow())).inserted_primary_key[0]
            token = self._new_link(conn, editor_id, link_seconds)
            self._record(conn, actor, "editor-added", email)
        return token

    def _new_link(self, conn, editor_id: int, link_seconds: float) -> str:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        conn.execute(insert(password_links).values(id=token_id(token), editor_id=editor_id,
                                                   expires_epoch=self.now + link_seconds))
        return token

    def list(self) -> list[Editor]:
        sessions = (select(editor_sessions.c.editor_id, func.count().label("n"))
                    .group_by(editor_sessions.c.editor_id).subquery())
        query = (select(editors.c.id, editors.c.email, editors.c.password_hash.is_not(None), editors.c.created_at,
                        func.coalesce(sessions.c.n, 0))
                 .outerjoin(sessions, sessions.c.editor_id == editors.c.id).order_by(editors.c.email))
        with self.engine.connect() as conn:
            return [Editor(*row) for row in conn.execute(query)]

    def remove(self, email: str, actor: str) -> None:
        """Remove an editor: their sessions and links end with them, at once."""
        with self.engine.begin() as conn:
            editor_id = conn.execute(select(editors.c.id).where(editors.c.email == email)).scalar()
            if editor_id is None:
                raise EditorError(f"{email} is not an editor (`newsletter editors list` shows who is)")
            # Explicitly, not only by the foreign keys' cascade: a SQLite connection opened
            # without PRAGMA foreign_keys would leave the sessions working.
            conn.execute(delete(editor_sessions).where(editor_sessions.c.editor_id == editor_id))
            conn.execute(delete(password_links).where(password_links.c.editor_id == editor_id))
            conn.execute(delete(editors).where(editors.c.id == editor_id))
            self._record(conn, actor, "editor-removed", email)

    def credentials(self, email: str) -> tuple[int, str | None] | None:
        """(id, password hash) of an editor, for signing in; None when there is no such editor."""
        with self.engine.connect() as conn:
            row = conn.execute(select(editors.c.id, editors.c.password_hash).where(editors.c.email == email)).first()
        return (row[0], row[1]) if row else None

    def replace_hash(self, editor_id: int, password_hash: str) -> None:
        """Store a stronger hash of the same password (made at sign-in, when the parameters went up)."""
        with self.engine.begin() as conn:
            conn.execute(update(editors).where(editors.c.id == editor_id).values(password_hash=password_hash))

    # One-time links ----------------------------------------------------------

    def link_holder(self, token: str) -> str | None:
        """The address of the editor a password link is for, while it is unused and unexpired."""
        query = (select(editors.c.email).join(password_links, password_links.c.editor_id == editors.c.id)
                 .where(password_links.c.id == token_id(token), password_links.c.expires_epoch > self.now))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def set_password(self, token: str, password_hash: str) -> str | None:
        """Use a one-time link: set the password, end every session of the editor; their address, or None.

        The link is deleted in the same transaction that checks it, so two tabs posting it at once
        set one password, and the other is told the link is used.
        """
        with self.engine.begin() as conn:
            editor_id = conn.execute(select(password_links.c.editor_id).where(
                password_links.c.id == token_id(token), password_links.c.expires_epoch > self.now)).scalar()
            if editor_id is None or conn.execute(delete(password_links).where(
                    password_links.c.id == token_id(token))).rowcount != 1:
                return None
            conn.execute(delete(password_links).where(password_links.c.editor_id == editor_id))
            conn.execute(update(editors).where(editors.c.id == editor_id).values(password_hash=password_hash))
            conn.execute(delete(editor_sessions).where(editor_sessions.c.editor_id == editor_id))
            email = conn.execute(select(editors.c.email).where(editors.c.id == editor_id)).scalar_one()
            self._record(conn, email, "password-set", "")
        return email

    # Sessions ----------------------------------------------------------------

    def start_session(self, editor_id: int) -> str:
        """A new session for a signed-in editor; its token, for the cookie. Always a new one: never fixation."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self.engine.begin() as conn:
            now = self._clock(conn)
            conn.execute(insert(editor_sessions).values(id=token_id(token), editor_id=editor_id,
                                                        created_epoch=now, last_seen_epoch=now))
            email = conn.execute(select(editors.c.email).where(editors.c.id == editor_id)).scalar_one()
            self._record(conn, email, "sign-in", "")
        return token

    def session(self, token: str, idle_seconds: float, max_seconds: float) -> EditorSession | None:
        """The session a cookie's token stands for, if it is alive (not idle too long, not too old); seen now."""
        if not token:
            return None
        with self.engine.begin() as conn:
            now = self._clock(conn)
            row = conn.execute(
                select(editor_sessions.c.editor_id, editors.c.email, editor_sessions.c.last_seen_epoch)
                .join(editors, editors.c.id == editor_sessions.c.editor_id)
                .where(editor_sessions.c.id == token_id(token),
                       editor_sessions.c.last_seen_epoch > now - idle_seconds,
                       editor_sessions.c.created_epoch > now - max_seconds)).first()
            if row is None:
                return None
            if now - row.last_seen_epoch >= LAST_SEEN_GRANULARITY_SECONDS:
                conn.execute(update(editor_sessions).where(editor_sessions.c.id == token_id(token))
                             .values(last_seen_epoch=now))
        return EditorSession(row.editor_id, row.email, token)

    def end_session(self, session: EditorSession) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(editor_sessions).where(editor_sessions.c.id == token_id(session.token)))
            self._record(conn, session.email, "sign-out", "")

    def drop_expired(self, idle_seconds: float, max_seconds: float) -> int:
        """Delete sessions nobody can use any more, and used-up links; how many sessions went."""
        with self.engine.begin() as conn:
            now = self._clock(conn)
            gone = conn.execute(delete(editor_sessions).where(
                (editor_sessions.c.last_seen_epoch <= now - idle_seconds)
                | (editor_sessions.c.created_epoch <= now - max_seconds))).rowcount
            conn.execute(delete(password_links).where(password_links.c.expires_epoch <= now))
        return gone

    # The audit log -----------------------------------------------------------

    def record(self, actor: str, action: str, detail: str = "") -> None:
        with self.engine.begin() as conn:
            self._record(conn, actor, action, detail)

    def _record(self, conn, actor: str, action: str, detail: str) -> None:
        conn.execute(insert(audit_log).values(at=utcnow(), actor=actor[:320], action=action[:40], detail=detail))

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """The newest entries first."""
        query = (select(audit_log.c.at, audit_log.c.actor, audit_log.c.action, audit_log.c.detail)
                 .order_by(audit_log.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [AuditEntry(as_utc(at), actor, action, detail)
                    for at, actor, action, detail in conn.execute(query)]
