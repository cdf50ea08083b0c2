"""What the dispatch service accepts (the gateway validates with these too)."""
from marshmallow import ValidationError, fields, validate, validates_schema

from lastmile.validation import QuerySchema, StrictSchema
from services.dispatch import domain


class OfferQuerySchema(QuerySchema):
    status = fields.String(load_default=None, validate=validate.OneOf(domain.OFFER_STATUSES))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    page_size = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class DeclineSchema(StrictSchema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class ManualDispatchSchema(StrictSchema):
    volunteer_id = fields.String(load_default=None, validate=validate.Length(min=1, max=36))
    team_id = fields.String(load_default=None, validate=validate.Length(min=1, max=36))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))

    @validates_schema
    def _one_target(self, data, **_):
        if bool(data.get("volunteer_id")) == bool(data.get("team_id")):
            raise ValidationError("Give exactly one of volunteer_id and team_id.", "volunteer_id")
