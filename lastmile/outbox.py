"""Transactional outbox.

A state change and the events it causes are written in one transaction: the
events go to the service's ``outbox`` table, and a relay greenthread publishes
them to the service's nameko event exchange with publisher confirms, marking
the rows once the broker has confirmed every one of them. A crash between commit
and publish only delays an event; it never loses one. Consumers deduplicate on
``event_id``.
"""
import logging
import time

import eventlet
import sqlalchemy as sa
from amqp import spec
from amqp.exceptions import MessageNacked
from eventlet.queue import Full, LightQueue
from kombu import Connection, Producer

from lastmile import topology
from lastmile.consumer import event_exchange
from lastmile.db import UTCDateTime, is_postgres, utcnow
from lastmile.metrics import EVENTS_PUBLISHED

log = logging.getLogger(__name__)

BATCH = 200
CONFIRM_SECONDS = 10  # a batch the broker has not confirmed by then is published again


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


class PublisherConfirms:
    """Publisher confirms for a batch: every message is sent, then the relay waits
    once for the broker to confirm them all, instead of a round trip per message
    (RabbitMQ confirms a persistent message only once it is on disk)."""

    def __init__(self, channel):
        self.channel = channel
        self.sent = 0  # the channel numbers its deliveries 1, 2, 3 …
        self.unconfirmed = set()
        self.refused = False
        channel.confirm_select()
        channel.events["basic_ack"].add(self._ack)
        channel.events["basic_nack"].add(self._nack)

    def sending(self):
        self.sent += 1
        self.unconfirmed.add(self.sent)

    def _ack(self, delivery_tag, multiple):
        if multiple:
            self.unconfirmed = {tag for tag in self.unconfirmed if tag > delivery_tag}
        else:
            self.unconfirmed.discard(delivery_tag)

    def _nack(self, delivery_tag, multiple):
        self.refused = True
        self._ack(delivery_tag, multiple)

    def wait(self, seconds):
        deadline = time.monotonic() + seconds
        while self.unconfirmed and not self.refused:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the broker did not confirm {len(self.unconfirmed)} events in {seconds}s")
            self.channel.wait([spec.Basic.Ack, spec.Basic.Nack], timeout=remaining)
        if self.refused:
            raise MessageNacked("the broker refused an event")


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
                # Connected and declared before the first event waits on it (the
                # first declaration reads every service's handlers: a second of CPU).
                self._producer()
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
            self._connection = Connection(self.amqp_uri)
            self._connection.ensure_connection(max_retries=1)
            channel = self._connection.channel()
            self.exchange(channel).declare()
            topology.declare_consumer_queues(channel, self.service_name)
            self._confirms = PublisherConfirms(channel)
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
                self._confirms.sending()
                producer.publish(
                    row.body,
                    exchange=self.exchange,
                    routing_key=row.type,
                    serializer="json",
                    delivery_mode=2,
                    message_id=row.body["event_id"],
                    headers=headers,
                )
            # Marked published only once the broker has confirmed the whole batch.
            self._confirms.wait(CONFIRM_SECONDS)
            conn.execute(
                sa.update(self.outbox)
                .where(self.outbox.c.id.in_([row.id for row in rows]))
                .values(published_at=utcnow())
            )
        for row in rows:
            EVENTS_PUBLISHED.labels(row.type).inc()
        return len(rows)
