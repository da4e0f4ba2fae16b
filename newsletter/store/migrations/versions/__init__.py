"""One Alembic revision a file, named by its number."""
