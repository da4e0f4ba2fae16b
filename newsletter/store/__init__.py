"""The store: the schema, its migrations, subscribers and issues, and the delivery log (SQLite or PostgreSQL)."""
