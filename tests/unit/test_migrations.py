"""Each service's alembic history builds, on SQLite (the database of `make run`),
exactly the schema its models describe — so a model change without its migration,
or a migration SQLite cannot run, fails here rather than on someone's machine."""
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from lastmile import db, topology
from lastmile.makemigration import migrations_dir
from lastmile.store import Store


@pytest.mark.parametrize("service", sorted(topology.SERVICES))
def test_migrations_build_the_models_schema_on_sqlite(service, tmp_path, monkeypatch):
    monkeypatch.setenv("LASTMILE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LASTMILE_DATABASE_URL", raising=False)
    engine = db.make_engine(service)
    db.migrate(engine, migrations_dir(service))
    store = next(v for v in vars(topology.service_class(service)).values() if isinstance(v, Store))
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), store.metadata)
    engine.dispose()
    assert differences == []


@pytest.mark.parametrize("service", sorted(topology.SERVICES))
def test_migrating_twice_changes_nothing(service, tmp_path, monkeypatch):
    monkeypatch.setenv("LASTMILE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LASTMILE_DATABASE_URL", raising=False)
    engine = db.make_engine(service)
    db.migrate(engine, migrations_dir(service))
    db.migrate(engine, migrations_dir(service))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()
