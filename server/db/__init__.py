"""Storage: SQLAlchemy 2 models, engine/session helpers and Alembic migrations."""

from server.db.session import Database, get_session

__all__ = ["Database", "get_session"]
