"""The web: the reader-facing app (signup, confirm, unsubscribe, archive) and the editor's preview."""
