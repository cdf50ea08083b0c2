"""Write a new alembic revision for one service from the difference between its
models and its migration history: ``python -m lastmile.makemigration needs "add x"``.

It replays the history into a scratch SQLite database and autogenerates against
it, so no running database is needed. Read the revision before committing it.
"""
import argparse
import tempfile
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from lastmile import topology

ROOT = Path(__file__).resolve().parent.parent


def migrations_dir(service):
    folder = "gateway" if service == "gateway" else f"services/{service}"
    return ROOT / folder / "migrations"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service", choices=sorted(topology.SERVICES))
    parser.add_argument("message")
    args = parser.parse_args(argv)
    topology.service_class(args.service)  # import the models
    with tempfile.TemporaryDirectory() as scratch:
        engine = sa.create_engine(f"sqlite:///{scratch}/scratch.db")
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir(args.service)))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            versions = migrations_dir(args.service) / "versions"
            number = len(list(versions.glob("*.py"))) + 1
            command.revision(cfg, message=args.message, autogenerate=True, rev_id=f"{number:04d}")


if __name__ == "__main__":
    main()
