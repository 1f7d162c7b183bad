"""Persistence: SQLAlchemy 2 async models, repositories and sessions (SQLite and PostgreSQL)."""
