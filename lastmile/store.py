"""The ``Store`` dependency: a service's database, its migrations, its outbox relay,
and per worker a unit of work that commits state and events together."""
import logging
from contextlib import contextmanager
from datetime import timedelta

import sqlalchemy as sa
from nameko.extensions import DependencyProvider
from sqlalchemy.orm import sessionmaker

from lastmile import config, logs
from lastmile.db import AUTOCOMMIT_POOL_SIZE, insert_missing_rows, make_engine, migrate, utcnow
from lastmile.events import make_event
from lastmile.metrics import EVENTS_CONSUMED
from lastmile.outbox import OutboxRelay

log = logging.getLogger(__name__)


class UnitOfWork:
    def __init__(self, store, worker_ctx):
        self._store = store
        self._worker_ctx = worker_ctx

    @property
    def request_id(self):
        if self._worker_ctx is None:
            return None
        return self._worker_ctx.context_data.get("request_id")

    @contextmanager
    def session(self):
        """One transaction: everything written in it, events included, commits or
        rolls back as one."""
        session = self._store.Session()
        try:
            yield session
            wrote_events = bool(session.info.get("events"))
            session.commit()
            if wrote_events:
                self._store.relay.kick()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def reading(self):
        """A session for one statement that reads, or one that writes a single row:
        each statement is its own transaction, so no BEGIN and COMMIT go to the
        database around it (two of its three round trips). Not for several statements
        that must see, or change, the data together."""
        return self._store.Autocommit()

    def emit(self, session, type, data, need_id=None):
        """Record an event in the outbox of the session's transaction."""
        event = make_event(self._store.service_name, type, data, need_id=need_id, request_id=self.request_id)
        session.execute(
            sa.insert(self._store.outbox).values(
                event_id=event["event_id"], type=type, need_id=need_id, body=event, created_at=utcnow()
            )
        )
        session.info.setdefault("events", []).append(event)
        return event

    def first_delivery(self, session, event, consumer):
        """Mark ``event`` consumed by ``consumer`` in this transaction; False when
        it already was, so a redelivered event changes nothing."""
        return bool(self.first_deliveries(session, [event], consumer))

    def first_deliveries(self, session, events, consumer):
        """``first_delivery`` for a list of events, in one statement: those not yet
        consumed by ``consumer`` (a name, or a function of the event giving it), each
        once, in their order; the rest are copies and change nothing."""
        name_of = consumer if callable(consumer) else (lambda event: consumer)
        keyed = {}
        for event in events:
            keyed.setdefault((event["event_id"], name_of(event)), event)
        now = utcnow()
        # INSERT … ON CONFLICT DO NOTHING: a copy delivered to another replica at the same
        # moment waits for the first to commit, then finds the row and skips. In key order,
        # so two replicas marking the same events take their locks in one order.
        rows = [{"event_id": event_id, "consumer": name, "consumed_at": now} for event_id, name in sorted(keyed)]
        table = self._store.consumed
        marked = insert_missing_rows(session, table, rows, (table.c.event_id, table.c.consumer))
        for event_id, name in keyed.keys() - marked:
            EVENTS_CONSUMED.labels(name, "duplicate").inc()
        return [event for key, event in keyed.items() if key in marked]

    def prune_messaging(self):
        return self._store.prune_messaging()


class Store(DependencyProvider):
    def __init__(self, metadata, migrations_dir, messaging):
        self.metadata = metadata
        self.migrations_dir = migrations_dir
        self.outbox, self.consumed = messaging

    def setup(self):
        self.service_name = self.container.service_name
        self.engine = make_engine(self.service_name)
        migrate(self.engine, self.migrations_dir)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.autocommit_engine = make_engine(self.service_name, pool_size=AUTOCOMMIT_POOL_SIZE, autocommit=True)
        self.Autocommit = sessionmaker(self.autocommit_engine, expire_on_commit=False)
        self.relay = OutboxRelay(
            self.service_name, self.engine, self.outbox, self.container.config.get("AMQP_URI", config.get("LASTMILE_AMQP_URI"))
        )

    def start(self):
        self.container.spawn_managed_thread(self.relay.run)

    def stop(self):
        self.relay.stop()
        self._dispose()

    def kill(self):
        self.relay.stop()
        self._dispose()

    def _dispose(self):
        # The pools keep their connections open: a stopped container hands them back now.
        self.engine.dispose()
        self.autocommit_engine.dispose()

    def get_dependency(self, worker_ctx):
        return UnitOfWork(self, worker_ctx)

    def prune_messaging(self):
        """Forget events published, and events consumed, longer ago than the retention:
        both tables would otherwise grow for as long as the service runs. A consumed
        event is remembered far longer than any redelivery takes (retries last minutes);
        one that failed for good is a dead letter, never in the ledger, so a replay of it
        is applied once whenever it comes. Returns (outbox rows, ledger rows) removed."""
        cutoff = utcnow() - timedelta(days=config.get_float("LASTMILE_MESSAGE_RETENTION_DAYS"))
        outbox, consumed = self.outbox, self.consumed
        with self.Session.begin() as session:
            published = session.execute(sa.delete(outbox).where(
                outbox.c.published_at.is_not(None), outbox.c.published_at < cutoff)).rowcount
            remembered = session.execute(sa.delete(consumed).where(consumed.c.consumed_at < cutoff)).rowcount
        if published or remembered:
            log.info("pruned %d published and %d consumed events older than %s", published, remembered, cutoff)
        return published, remembered

    def worker_setup(self, worker_ctx):
        # Every log line of this worker carries the request id it serves.
        logs.current.request_id = worker_ctx.context_data.get("request_id")

    def worker_teardown(self, worker_ctx):
        logs.current.request_id = None
