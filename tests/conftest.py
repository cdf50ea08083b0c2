"""Test set-up shared by every suite.

Service and end-to-end tests run on the machine's real RabbitMQ and PostgreSQL,
each test session in a RabbitMQ virtual host and a set of databases of its own
(``lmtest_<random>_<service>``), removed afterwards.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
import eventlet  # noqa: E402

# nameko's containers need a green world, as under `nameko run`.
eventlet.monkey_patch()

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import uuid  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402

TEST_DATABASE_URL = os.environ.get("LASTMILE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/")
TEST_AMQP_ROOT = os.environ.get("LASTMILE_TEST_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")


def _rabbitmqctl(*args):
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def infrastructure(tmp_path_factory):
    """Environment of an isolated Lastmile on the real broker and database, for
    service tests (set in this process's environment while they run)."""
    with isolated_environment(tmp_path_factory) as env:
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextmanager
def isolated_environment(tmp_path_factory):
    """A RabbitMQ virtual host and a database prefix of their own, removed afterwards,
    so that no other test's consumers or data are seen."""
    run_id = uuid.uuid4().hex[:8]
    vhost = f"lmtest-{run_id}"
    have_ctl = shutil.which("rabbitmqctl") is not None
    if have_ctl:
        created = _rabbitmqctl("add_vhost", vhost)
        if created.returncode == 0:
            _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        else:
            have_ctl = False
    amqp_uri = TEST_AMQP_ROOT.rstrip("/") + "/" + (vhost if have_ctl else "")
    env = {
        "LASTMILE_AMQP_URI": amqp_uri,
        "LASTMILE_DATABASE_URL": TEST_DATABASE_URL,
        "LASTMILE_DATABASE_PREFIX": f"lmtest_{run_id}",
        "LASTMILE_DATA_DIR": str(tmp_path_factory.mktemp("lastmile-data")),
        "LASTMILE_EVENT_RETRY_DELAYS": "1,1,2",
    }
    try:
        yield env
    finally:
        _drop_databases(env["LASTMILE_DATABASE_PREFIX"])
        if have_ctl:
            _rabbitmqctl("delete_vhost", vhost)


def _drop_databases(prefix):
    engine = sa.create_engine(
        sa.engine.make_url(TEST_DATABASE_URL).set(drivername="postgresql+psycopg2", database="postgres"),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as conn:
            names = conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": prefix + "\\_%"}
            ).scalars().all()
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
