"""Alembic migrations of the store: one revision a file in versions/, applied by `newsletter db upgrade`."""
