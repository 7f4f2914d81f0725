"""Database: engine creation, the one MetaData, table definitions (``tables_*``), transactions and
Alembic migrations (``migrations/``). SQLAlchemy 2 Core; runs on SQLite and PostgreSQL."""
