"""Transactional outbox.

A state change and the events it causes are written in one transaction: the
events go to the service's ``outbox`` table, and a relay greenthread publishes
them to the service's nameko event exchange with publisher confirms, marking
each row once the broker has it. A crash between commit and publish only delays
an event; it never loses one. Consumers deduplicate on ``event_id``.
"""
import logging

import eventlet
import sqlalchemy as sa
from eventlet.queue import Full, LightQueue
from kombu import Connection, Producer

from lastmile import topology
from lastmile.consumer import event_exchange
from lastmile.db import UTCDateTime, is_postgres, utcnow
from lastmile.metrics import EVENTS_PUBLISHED

log = logging.getLogger(__name__)

BATCH = 200


def messaging_tables(metadata):
    """Add the outbox and the consumed-event ledger to a service's metadata."""
    outbox = sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("need_id", sa.String(36), nullable=True),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("published_at", UTCDateTime, nullable=True),
        sa.Index("ix_outbox_pending", "published_at", "id"),
    )
    consumed = sa.Table(
        "consumed_events",
        metadata,
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("consumer", sa.String(120), primary_key=True),
        sa.Column("consumed_at", UTCDateTime, nullable=False),
    )
    return outbox, consumed


class OutboxRelay:
    def __init__(self, service_name, engine, outbox, amqp_uri, poll_seconds=1.0):
        self.service_name = service_name
        self.engine = engine
        self.outbox = outbox
        self.amqp_uri = amqp_uri
        self.poll_seconds = poll_seconds
        self.exchange = event_exchange(service_name)
        self._wake = LightQueue(maxsize=1)
        self._running = False
        self._connection = None

    def kick(self):
        """Called after a commit that wrote events: publish now, not at the next poll."""
        try:
            self._wake.put_nowait(True)
        except Full:
            pass

    def run(self):
        self._running = True
        backoff = 0.5
        while self._running:
            try:
                published = self.publish_pending()
                backoff = 0.5
                if published >= BATCH:
                    continue
            except Exception:
                log.exception("outbox relay of %s failed; retrying in %.1fs", self.service_name, backoff)
                self._close()
                eventlet.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            try:
                self._wake.get(timeout=self.poll_seconds)
            except eventlet.queue.Empty:
                pass

    def stop(self):
        self._running = False
        self.kick()
        self._close()

    def _producer(self):
        if self._connection is None:
            self._connection = Connection(self.amqp_uri, transport_options={"confirm_publish": True})
            self._connection.ensure_connection(max_retries=1)
            channel = self._connection.channel()
            self.exchange(channel).declare()
            topology.declare_consumer_queues(channel, self.service_name)
            self._producer_obj = Producer(channel)
        return self._producer_obj

    def _close(self):
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:
                pass
            self._connection = None

    def publish_pending(self):
        with self.engine.begin() as conn:
            query = (
                sa.select(self.outbox.c.id, self.outbox.c.type, self.outbox.c.body)
                .where(self.outbox.c.published_at.is_(None))
                .order_by(self.outbox.c.id)
                .limit(BATCH)
            )
            if is_postgres(conn):
                # Replicas relay side by side without publishing a row twice.
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                return 0
            producer = self._producer()
            for row in rows:
                headers = {}
                if row.body.get("request_id"):
                    headers["nameko.request_id"] = row.body["request_id"]
                producer.publish(
                    row.body,
                    exchange=self.exchange,
                    routing_key=row.type,
                    serializer="json",
                    delivery_mode=2,
                    message_id=row.body["event_id"],
                    headers=headers,
                )
            conn.execute(
                sa.update(self.outbox)
                .where(self.outbox.c.id.in_([row.id for row in rows]))
                .values(published_at=utcnow())
            )
        for row in rows:
            EVENTS_PUBLISHED.labels(row.type).inc()
        return len(rows)
