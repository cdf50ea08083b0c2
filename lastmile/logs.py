"""Structured JSON logs, one object a line, each naming its service."""
import json
import logging
import sys
from datetime import datetime, timezone

from eventlet.corolocal import local

from lastmile import config

# The request id of the work a greenthread is doing, set by every service's Store.
current = local()


class JsonFormatter(logging.Formatter):
    def __init__(self, service):
        super().__init__()
        self.service = service

    def format(self, record):
        entry = {
            "at": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or getattr(current, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(service):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.get("LASTMILE_LOG_LEVEL").upper())
    # kombu and amqp are chatty at INFO about every reconnect attempt.
    logging.getLogger("amqp").setLevel(logging.WARNING)
