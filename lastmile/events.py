"""The one envelope every Lastmile event travels in.

``{event_id, type, version, occurred_at, source, need_id, data}`` — consumers
deduplicate on ``event_id`` because delivery is at least once.
"""
import uuid
from datetime import datetime, timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from lastmile.errors import InvalidInput

ENVELOPE_VERSION = 1


class EnvelopeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    event_id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    version = fields.Integer(required=True, validate=validate.Range(min=1))
    occurred_at = fields.AwareDateTime(required=True, default_timezone=timezone.utc)
    source = fields.String(required=True, validate=validate.Length(min=1, max=32))
    need_id = fields.String(allow_none=True, load_default=None)
    request_id = fields.String(allow_none=True, load_default=None)
    data = fields.Dict(required=True)


_envelope = EnvelopeSchema()


def isoformat(moment):
    """ISO-8601 in UTC with a ``Z``, the one time format on the wire."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def make_event(source, type, data, need_id=None, request_id=None, occurred_at=None):
    return {
        "event_id": str(uuid.uuid4()),
        "type": type,
        "version": ENVELOPE_VERSION,
        "occurred_at": isoformat(occurred_at or datetime.now(timezone.utc)),
        "source": source,
        "need_id": need_id,
        "request_id": request_id,
        "data": data,
    }


def parse(body):
    """Validate an incoming envelope; returns it as a dict of plain JSON values."""
    try:
        _envelope.load(body)
    except ValidationError as exc:
        raise InvalidInput("Malformed event envelope", exc.normalized_messages())
    return body
