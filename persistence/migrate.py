"""Schema migrations (Alembic), driven from code so they work from an installed package.

ensure_schema() is what `reserves serve` and `reserves persist` call on start: it brings an
empty (or older) database to the newest revision and does nothing when it is current. On
Postgres an advisory lock makes concurrent starts wait for each other instead of racing.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from persistence.errors import translate
from persistence.store import create_db_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_ADVISORY_LOCK_ID = 0x7265736572766573  # "reserves"


def alembic_config(database_url: str, connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"migrations must have one head, found {heads}"
    return heads[0]


def current_revision(database_url: str) -> str | None:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sa.exc.SQLAlchemyError as exc:
        raise translate(exc) from exc
    finally:
        engine.dispose()


def _run(database_url: str, action: str, revision: str) -> None:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
            cfg = alembic_config(database_url, conn)
            if action == "upgrade":
                current = MigrationContext.configure(conn).get_current_revision()
                if current != revision and not (revision == "head" and current == head_revision()):
                    command.upgrade(cfg, revision)
            else:
                command.downgrade(cfg, revision)
            conn.commit()
    except sa.exc.SQLAlchemyError as exc:
        raise translate(exc) from exc
    finally:
        engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    _run(database_url, "upgrade", revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    _run(database_url, "downgrade", revision)


def ensure_schema(database_url: str) -> None:
    """Apply the migrations the database lacks (all of them when it is empty)."""
    if current_revision(database_url) == head_revision():
        return
    upgrade(database_url)
