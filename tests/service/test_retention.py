"""Every service forgets, hourly, the events it published and consumed longer ago
than LASTMILE_MESSAGE_RETENTION_DAYS, and nothing else."""
import uuid
from datetime import timedelta

import sqlalchemy as sa
from nameko.testing.services import entrypoint_hook
from sqlalchemy.pool import NullPool

from lastmile.db import database_url, utcnow
from services.ratings.models import MESSAGING
from services.ratings.service import RatingsService

OUTBOX, CONSUMED = MESSAGING


def test_old_published_and_consumed_events_are_pruned_but_unpublished_ones_kept(run_services, monkeypatch):
    monkeypatch.setenv("LASTMILE_MESSAGE_RETENTION_DAYS", "30")
    [container] = run_services(RatingsService)
    now = utcnow()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    rows = {  # name: (created_at, published_at)
        "old published": (old, old), "recent published": (recent, recent), "old never published": (old, None)}
    engine = sa.create_engine(database_url("ratings"), poolclass=NullPool)
    with engine.begin() as conn:
        for name, (created_at, published_at) in rows.items():
            conn.execute(sa.insert(OUTBOX).values(event_id=str(uuid.uuid4()), type=name, body={}, created_at=created_at,
                                                  published_at=published_at))
        for name, at in (("old", old), ("recent", recent)):
            conn.execute(sa.insert(CONSUMED).values(event_id=str(uuid.uuid4()), consumer=f"ratings.{name}",
                                                    consumed_at=at))

    with entrypoint_hook(container, "prune_messaging") as prune:
        prune()

    with engine.connect() as conn:
        kept = set(conn.scalars(sa.select(OUTBOX.c.type).where(OUTBOX.c.type.in_(rows))))
        remembered = set(conn.scalars(sa.select(CONSUMED.c.consumer).where(CONSUMED.c.consumer.like("ratings.%"))))
    engine.dispose()
    assert kept == {"recent published", "old never published"}  # the relay still owes the last one
    assert "ratings.old" not in remembered and "ratings.recent" in remembered
