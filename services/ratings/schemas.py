"""What the ratings service accepts (the gateway validates with these too)."""
from marshmallow import fields, validate

from lastmile.validation import PeriodSchema, QuerySchema, StrictSchema, site_id_field
from services.ratings import domain


class RatingSchema(StrictSchema):
    stars = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    tags = fields.List(fields.String(validate=validate.OneOf(domain.TAGS)), load_default=list,
                       validate=validate.Length(max=len(domain.TAGS)))
    comment = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class RatingQuerySchema(QuerySchema):
    volunteer_id = fields.String(load_default=None, validate=validate.Length(max=36))
    team_id = fields.String(load_default=None, validate=validate.Length(max=36))
    site_id = site_id_field(load_default=None)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    page_size = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class StatsQuerySchema(PeriodSchema):
    site_id = site_id_field(load_default=None)


class FollowUpQuerySchema(QuerySchema):
    status = fields.String(load_default="open", validate=validate.OneOf(("open", "resolved", "all")))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    page_size = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class ResolveSchema(StrictSchema):
    note = fields.String(required=True, validate=validate.Length(min=1, max=1000))
