"""A bare nameko stack on the same broker and database as Lastmile, with nothing
of Lastmile in it: no authentication, no validation, no outbox, no idempotent
consumers. Its HTTP entrypoint makes one RPC that writes one row and dispatches
one event; a second service handles that event by writing one row, which a GET
reads back. What it does per request is what nameko, RabbitMQ, SQLAlchemy and
PostgreSQL cost at least, so Lastmile's figures are read as ratios to it.

    python -m bench.baseline.services {http,writer,effects}

Configuration: ``BASELINE_AMQP_URI``, ``BASELINE_DATABASE_URL`` (a database of its
own, created by the bench), ``BASELINE_PORT``, ``BASELINE_MAX_WORKERS``.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
import eventlet  # noqa: E402

eventlet.monkey_patch()  # noqa: E402

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import psycogreen.eventlet  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from nameko.events import EventDispatcher, event_handler  # noqa: E402
from nameko.extensions import DependencyProvider  # noqa: E402
from nameko.rpc import RpcProxy, rpc  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402
from nameko.web.handlers import http  # noqa: E402
from werkzeug.wrappers import Response  # noqa: E402

metadata = sa.MetaData()
writes = sa.Table(
    "writes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(64), nullable=False, index=True),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
)
effects = sa.Table(
    "effects", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("write_id", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
    sa.Index("ix_effects_key_step", "key", "step"),
)


def database_url():
    # psycopg2, as Lastmile uses, its waits handed to eventlet's hub (psycogreen).
    psycogreen.eventlet.patch_psycopg()
    return sa.engine.make_url(os.environ["BASELINE_DATABASE_URL"]).set(drivername="postgresql+psycopg2")


class Database(DependencyProvider):
    """One engine per process, its connections kept open: one for each worker, at most 8
    (as Lastmile's, lastmile/db.py)."""

    def setup(self):
        workers = self.container.config["max_workers"]
        self.engine = sa.create_engine(database_url(), pool_size=min(workers, 8), max_overflow=0)

    def get_dependency(self, worker_ctx):
        return self.engine


class WriterService:
    name = "baseline_writer"

    db = Database()
    dispatch = EventDispatcher()

    @rpc
    def write(self, body):
        with self.db.begin() as conn:
            row = conn.execute(
                sa.insert(writes).values(key=body["key"], step=body["step"], body=body)
                .returning(writes.c.id, writes.c.created_at)
            ).one()
        self.dispatch("written", {"id": row.id, "key": body["key"], "step": body["step"]})
        return {"id": row.id, "key": body["key"], "step": body["step"], "created_at": row.created_at.isoformat()}


class EffectsService:
    name = "baseline_effects"

    db = Database()

    @event_handler("baseline_writer", "written")
    def on_written(self, event):
        with self.db.begin() as conn:
            conn.execute(sa.insert(effects).values(key=event["key"], step=event["step"], write_id=event["id"]))

    @rpc
    def effect(self, key, step):
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(effects.c.write_id, effects.c.created_at).where(effects.c.key == key, effects.c.step == step)
            ).first()
        if row is None:
            return None
        return {"key": key, "step": step, "write_id": row.write_id, "created_at": row.created_at.isoformat()}


def json_answer(status, body):
    return Response(json.dumps(body), status=status, mimetype="application/json")


class HttpService:
    name = "baseline_http"

    writer = RpcProxy("baseline_writer")
    effects = RpcProxy("baseline_effects")

    @http("POST", "/writes")
    def post_write(self, request):
        return json_answer(201, self.writer.write(json.loads(request.get_data())))

    @http("GET", "/effects/<key>/<int:step>")
    def get_effect(self, request, key, step):
        found = self.effects.effect(key, step)
        return json_answer(200, found) if found else json_answer(404, {"error": "not yet"})


SERVICES = {"http": HttpService, "writer": WriterService, "effects": EffectsService}


def create_schema():
    engine = sa.create_engine(database_url())
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def main(name):
    if name == "writer":
        create_schema()  # the writer starts first; the others find the tables made
    workers = int(os.environ.get("BASELINE_MAX_WORKERS", "10"))
    runner = ServiceRunner({
        "AMQP_URI": os.environ["BASELINE_AMQP_URI"],
        "max_workers": 100 if name == "http" else workers,
        "serializer": "json",
        "WEB_SERVER_ADDRESS": "127.0.0.1:" + os.environ.get("BASELINE_PORT", "8001"),
    })
    runner.add_service(SERVICES[name])
    signal.signal(signal.SIGTERM, lambda *_: eventlet.spawn_n(runner.stop))
    runner.start()
    runner.wait()


if __name__ == "__main__":
    main(sys.argv[1])
