"""Each process's pooled connections to PostgreSQL: kept open and reused, and one
the server has closed is replaced before any work is given to it."""
import time

import sqlalchemy as sa

from lastmile import db

BACKEND_PID = sa.text("SELECT pg_backend_pid()")


def backend_pid(engine):
    with engine.connect() as conn:
        return conn.execute(BACKEND_PID).scalar()


def test_a_connection_is_reused_and_one_the_server_closed_is_replaced(infrastructure):
    engine = db.make_engine("pooltest")
    admin = sa.create_engine(db.database_url("pooltest").set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        first = backend_pid(engine)
        assert backend_pid(engine) == first  # the same connection, not a new one each time

        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
            deadline = time.monotonic() + 10
            while conn.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": first}).first():
                assert time.monotonic() < deadline, "the backend did not stop"
                time.sleep(0.05)

        # The closed connection is never handed out: the next checkout is a fresh one.
        second = backend_pid(engine)
        assert second != first
        assert backend_pid(engine) == second
    finally:
        engine.dispose()
        admin.dispose()
