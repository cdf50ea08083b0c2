"""Each service owns one database: a SQLite file when ``LASTMILE_DATABASE_URL`` is
unset, otherwise a database of its own on that PostgreSQL server, created when
missing. Its schema comes only from its alembic history, applied at start."""
import logging
import os
import uuid
import zlib
from datetime import datetime, timezone
from pathlib import Path

import psycogreen.eventlet
import sqlalchemy as sa
from eventlet.patcher import original
from sqlalchemy.engine import make_url

from lastmile import config

# The operating system's select, even under eventlet: a look that must not wait.
_real_select = original("select").select

log = logging.getLogger(__name__)


class UTCDateTime(sa.types.TypeDecorator):
    """Stores naive UTC, hands back aware UTC, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware one")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


def utcnow():
    return datetime.now(timezone.utc)


def new_id():
    return str(uuid.uuid4())


def database_name(service_name):
    return f"{config.get('LASTMILE_DATABASE_PREFIX')}_{service_name}"


def database_url(service_name):
    server = config.get("LASTMILE_DATABASE_URL")
    if not server:
        data_dir = Path(config.get("LASTMILE_DATA_DIR"))
        data_dir.mkdir(parents=True, exist_ok=True)
        return make_url(f"sqlite:///{(data_dir / (database_name(service_name) + '.db')).resolve()}")
    url = make_url(server)
    if url.get_backend_name() != "postgresql":
        raise SystemExit("LASTMILE_DATABASE_URL must be a postgresql:// URL")
    return url.set(drivername="postgresql+psycopg2", database=database_name(service_name))


def ensure_database(url):
    """Create the service's PostgreSQL database when it does not exist yet."""
    if url.get_backend_name() != "postgresql":
        return
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            ).scalar()
            if not exists:
                try:
                    conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
                    log.info("created database %s", url.database)
                except sa.exc.DBAPIError as exc:
                    # Another replica created it first.
                    if "already exists" not in str(exc):
                        raise
    finally:
        admin.dispose()


# Connections per process: at most 8. A district runs a dozen processes or so against
# one PostgreSQL (100 connections by default); a bigger pool would exhaust it under load.
# All 8 stay open once made: an overflow connection is closed as soon as it is returned,
# so under load every checkout past the pool would connect afresh, which cost a busy
# process a third of its CPU.
POOL_SIZE = 8
# A second, smaller pool whose connections are always in autocommit mode, for single
# statements outside a transaction (a token's account, an event-log entry). Lending a
# connection of the main pool in that mode costs setting it on checkout and resetting it
# on return: 0.24 ms of CPU a statement against 0.10 ms here.
AUTOCOMMIT_POOL_SIZE = 4


def make_engine(service_name, pool_size=POOL_SIZE, autocommit=False):
    url = database_url(service_name)
    if url.get_backend_name() == "postgresql":
        # psycopg2 is written in C and would block the whole process while it waits
        # for PostgreSQL; this hands each wait to eventlet's hub instead.
        psycogreen.eventlet.patch_psycopg()
    ensure_database(url)
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **options)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    engine = sa.create_engine(url, pool_size=pool_size, max_overflow=0, **options)
    sa.event.listen(engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_conn, _record, _proxy):
    """A pooled connection PostgreSQL has closed (a restart, an administrator) is
    replaced before use. Between transactions the server says nothing unless it is
    closing the connection, so a socket with something to read is a closed one: seen
    without the round trip of a ping, which cost a fifth of every short transaction."""
    if dbapi_conn.closed or _real_select([dbapi_conn.fileno()], [], [], 0)[0]:
        # The pool throws this connection away and checks out another.
        raise sa.exc.DisconnectionError("PostgreSQL closed this connection")


def is_postgres(bind):
    """For an engine, a connection or an ORM session."""
    dialect = bind.get_bind().dialect if hasattr(bind, "get_bind") else bind.dialect
    return dialect.name == "postgresql"


def _insert(session, target):
    """An INSERT with ON CONFLICT clauses, in the session's dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if is_postgres(session) else sqlite.insert)(target)


def insert_missing(session, table, **values):
    """INSERT … ON CONFLICT DO NOTHING on PostgreSQL and SQLite alike: creates a
    row unless another transaction already did (that one waits its turn instead of
    failing). Returns True when this call inserted it."""
    return session.execute(_insert(session, table).values(**values).on_conflict_do_nothing()).rowcount == 1


def insert_missing_rows(session, table, rows, returning):
    """``insert_missing`` for many rows in one statement; the ``returning`` columns of
    the rows it inserted, as a set of tuples."""
    if not rows:
        return set()
    stmt = _insert(session, table).values(rows).on_conflict_do_nothing().returning(*returning)
    return {tuple(row) for row in session.execute(stmt)}


def upsert(session, table, values, changes):
    """The row of ``table`` whose primary key ``values`` hold, made from ``values``
    when missing, else given ``changes`` (column name → value, or an SQL expression of
    the row's columns); locked until the transaction ends and returned as it now is.
    One statement, INSERT … ON CONFLICT DO UPDATE … RETURNING, without the ORM."""
    return session.execute(_upsert(session, table, values, changes).returning(*table.c)).one()


def _upsert(session, target, values, changes=None):
    """INSERT … ON CONFLICT (the primary key) DO UPDATE, into a table or a mapped class."""
    keys = [column.name for column in sa.inspect(target).primary_key]
    stmt = _insert(session, target).values(**values)
    changes = changes or {keys[0]: stmt.excluded[keys[0]]}  # a write that changes nothing, for the lock
    return stmt.on_conflict_do_update(index_elements=keys, set_=changes)


def locked_row(session, model, **values):
    """The row of ``model`` whose primary key ``values`` hold, locked until the
    transaction ends (as SELECT … FOR UPDATE), made from ``values`` first when it is
    missing. One statement: INSERT … ON CONFLICT DO UPDATE (a write of the key that
    changes nothing) … RETURNING, so a transaction creating the same row at the same
    moment waits its turn instead of failing."""
    stmt = _upsert(session, model, values).returning(model)
    return session.scalars(stmt, execution_options={"populate_existing": True}).one()


def paged(session, stmt, order_by, page, size):
    """Page ``page`` (from 1) of ``size`` rows of ``stmt`` in ``order_by`` order, and
    how many rows it has in all: ``(rows, total)``. One statement, the total counted
    beside each row (a window is counted before LIMIT); only a page past the end asks
    for the count alone."""
    counted = stmt.add_columns(sa.func.count().over().label("lastmile_total"))
    rows = session.execute(counted.order_by(*order_by).offset((page - 1) * size).limit(size)).all()
    if rows:
        return [tuple(row)[:-1] for row in rows], rows[0][-1]
    return [], session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery())) if page > 1 else 0


def migrate(engine, migrations_dir):
    """Bring the schema to the newest revision of the service's alembic history.
    Replicas starting together serialise on an advisory lock."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    with engine.begin() as conn:
        # Keyed by the service's name, so every replica of it, wherever it runs, waits its turn.
        lock_key = zlib.crc32(Path(migrations_dir).resolve().parent.name.encode()) & 0x7FFFFFFF
        if is_postgres(conn):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def run_migrations_env(target_metadata):
    """The body of every service's ``migrations/env.py``."""
    from alembic import context

    conn = context.config.attributes.get("connection")
    if conn is None:
        # Invoked from the alembic command line: use the service's own database.
        service_name = Path(context.config.get_main_option("script_location")).resolve().parent.name
        engine = make_engine(service_name)
        with engine.begin() as conn:
            _run(context, conn, target_metadata)
        return
    _run(context, conn, target_metadata)


def _run(context, conn, target_metadata):
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        render_as_batch=conn.dialect.name == "sqlite",
    )
    context.run_migrations()


def data_dir():
    path = Path(config.get("LASTMILE_DATA_DIR"))
    os.makedirs(path, exist_ok=True)
    return path
