"""What every Lastmile service answers besides its own work."""
import sqlalchemy as sa
from nameko.rpc import rpc
from nameko.timer import timer

from lastmile import metrics


class LastmileService:
    """Base of the services: a ``health`` probe that touches the database, the
    process's metrics for the gateway's ``/metrics``, and an hourly pruning of the
    outbox and the ledger of consumed events."""

    name = None
    db = None  # each service's Store

    @rpc
    def health(self):
        with self.db.session() as session:
            session.execute(sa.text("SELECT 1"))
        return {"service": self.name, "ok": True}

    @rpc
    def metrics(self):
        return metrics.samples()

    @timer(interval=3600)
    def prune_messaging(self):
        self.db.prune_messaging()
