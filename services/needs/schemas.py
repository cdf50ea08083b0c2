from datetime import timezone

from marshmallow import ValidationError, fields, validate

from lastmile.validation import QuerySchema, StrictSchema, category_field, phone_field, site_id_field
from services.needs import domain


class OnBehalfOfSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    phone = phone_field(required=True)


class NeedCreateSchema(StrictSchema):
    category = category_field(load_default=None)
    title = fields.String(required=True, validate=validate.Length(min=2, max=60))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    site_id = site_id_field(required=True)
    address = fields.String(required=True, validate=validate.Length(min=1, max=200))
    contact_phone = phone_field(required=True)
    beneficiary_group = fields.String(required=True, validate=validate.OneOf(domain.BENEFICIARY_GROUPS))
    beneficiaries = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=500))
    urgency = fields.String(load_default="normal", validate=validate.OneOf(domain.URGENCIES))
    window_start = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=timezone.utc)
    window_end = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=timezone.utc)
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-90, max=90))
    lon = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-180, max=180))
    project_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=36))
    on_behalf_of = fields.Nested(OnBehalfOfSchema, load_default=None, allow_none=True)
    channel = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(domain.CHANNELS))


class ReasonSchema(StrictSchema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class RejectSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class ApproveSchema(StrictSchema):
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


def _check_statuses(value):
    unknown = [s for s in value.split(",") if s not in domain.STATUSES]
    if unknown:
        raise ValidationError(f"Unknown status {', '.join(unknown)}; one or more of {', '.join(domain.STATUSES)}.")


class NeedQuerySchema(QuerySchema):
    # One status, or several separated by commas.
    status = fields.String(load_default=None, validate=_check_statuses)
    created_from = fields.AwareDateTime(load_default=None, default_timezone=timezone.utc)
    created_to = fields.AwareDateTime(load_default=None, default_timezone=timezone.utc)
    ids = fields.String(load_default=None, validate=validate.Length(max=2000))
    site_id = site_id_field(load_default=None)
    category = category_field(load_default=None)
    channel = fields.String(load_default=None, validate=validate.OneOf(domain.CHANNELS))
    q = fields.String(load_default=None, validate=validate.Length(max=100))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    page_size = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class SiteCreateSchema(StrictSchema):
    id = site_id_field(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    auto_approve = fields.Boolean(load_default=False)
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-90, max=90))
    lon = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-180, max=180))


class SiteUpdateSchema(StrictSchema):
    name = fields.String(validate=validate.Length(min=1, max=64))
    auto_approve = fields.Boolean()
    lat = fields.Float(allow_none=True, validate=validate.Range(min=-90, max=90))
    lon = fields.Float(allow_none=True, validate=validate.Range(min=-180, max=180))


class CategoryCreateSchema(StrictSchema):
    code = category_field(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))


class ProjectCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=2, max=80))
    category = category_field(required=True)
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    team_name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=80))
    site_id = site_id_field(required=True)
    active = fields.Boolean(load_default=True)


class ProjectUpdateSchema(StrictSchema):
    name = fields.String(validate=validate.Length(min=2, max=80))
    category = category_field()
    description = fields.String(validate=validate.Length(max=2000))
    team_name = fields.String(allow_none=True, validate=validate.Length(max=80))
    active = fields.Boolean()


class BeneficiaryCountSchema(StrictSchema):
    group = fields.String(required=True, validate=validate.OneOf(domain.BENEFICIARY_GROUPS))
    count = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=1000000))


class BeneficiaryEntrySchema(StrictSchema):
    group = fields.String(required=True, validate=validate.OneOf(domain.BENEFICIARY_GROUPS))
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    phone = phone_field(load_default=None, allow_none=True)
    id_number = fields.String(
        load_default=None, allow_none=True,
        validate=validate.Regexp(r"^[0-9]{17}[0-9Xx]\Z", error="Must be an 18-character resident identity number."),
    )
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class ProjectQuerySchema(QuerySchema):
    site_id = site_id_field(load_default=None)
    category = category_field(load_default=None)
