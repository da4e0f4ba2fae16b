"""Alembic's entry point: runs the revisions in versions/ on the connection the newsletter hands it.

`newsletter db upgrade` (newsletter/store/migrate.py) opens the connection, takes the schema lock and
passes the connection in `config.attributes["connection"]`; nothing here reads a URL or a file.
"""

from alembic import context

from newsletter.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
