"""Errors a user can cause, each with a message that says what to do.

Anything raised from here is caught at the CLI edge and printed as one line;
everything else is a bug and keeps its traceback.
"""


class NewsletterError(Exception):
    """Root of the errors the CLI reports as one line."""

    exit_code = 1


class ConfigError(NewsletterError):
    """A setting has a wrong value; the run cannot start."""

    exit_code = 2


class FeedError(NewsletterError):
    """One news source could not be read; the others still count."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class NoStoriesError(NewsletterError):
    """The selection came out empty: there is nothing worth sending."""

    exit_code = 3


class NotApprovedError(NewsletterError):
    """NEWSLETTER_APPROVAL=required and no editor has approved the day's issue (as it now is): nothing sent."""

    exit_code = 4


class TemplateError(NewsletterError):
    """A template in templates/ could not be rendered."""


class EmailTooLargeError(TemplateError):
    """The issue's HTML is over Gmail's clipping limit: readers would see it cut off; nothing is sent."""

    exit_code = 65  # EX_DATAERR: the issue itself must change (fewer stories, shorter text); a re-run will not help

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the issue's HTML is {size / 1024:.1f} KB, over Gmail's {limit // 1024} KB clipping limit; "
                         "not sent: choose fewer stories (NEWSLETTER_MAX_STORIES, the editorial file) "
                         "or shorten the template")
        self.size = size
        self.limit = limit


class SubscriberError(NewsletterError):
    """A subscriber address or row is invalid."""


class SendLockedError(NewsletterError):
    """Another `newsletter send` is already working on this issue."""

    exit_code = 75


class SchemaError(NewsletterError):
    """The database's schema is not the one this version works with: `newsletter db upgrade`."""

    exit_code = 2


class DeliveryLogError(NewsletterError):
    """The delivery log could not be written mid-send (database gone, session ended): stop, run again."""

    exit_code = 75

    def __init__(self, cause: Exception) -> None:
        reason = " ".join(str(getattr(cause, "orig", None) or cause).split())
        super().__init__(f"the delivery log could not be written ({reason}); the send stopped: "
                         "run `newsletter send` again to finish")


class MailboxError(NewsletterError):
    """The IMAP mailbox of bounces could not be reached or opened; nothing was read or changed."""

    exit_code = 75  # EX_TEMPFAIL: a server down or a network cut; cron's next run tries again


class EditorError(NewsletterError):
    """An editor account cannot be added or removed as asked (already there, not there)."""
