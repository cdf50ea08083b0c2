import re

from marshmallow import ValidationError, fields, validate, validates

from lastmile.validation import QuerySchema, StrictSchema, category_field, phone_field, site_id_field

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


def check_availability(value):
    """``{"mon": [["08:00", "12:00"], ...], ...}`` in local time."""
    if not isinstance(value, dict):
        raise ValidationError("Must map weekdays (mon…sun) to lists of [start, end] times.")
    for day, slots in value.items():
        if day not in WEEKDAYS:
            raise ValidationError(f"Unknown weekday {day!r}; use mon, tue, wed, thu, fri, sat, sun.")
        if not isinstance(slots, list) or len(slots) > 6:
            raise ValidationError(f"{day}: give at most 6 [start, end] slots.")
        for slot in slots:
            if (not isinstance(slot, list) or len(slot) != 2
                    or not all(isinstance(t, str) and CLOCK.match(t) for t in slot)):
                raise ValidationError(f"{day}: each slot is [\"HH:MM\", \"HH:MM\"].")
            if slot[0] >= slot[1]:
                raise ValidationError(f"{day}: a slot must end after it starts.")


class VolunteerCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    skills = fields.List(category_field(), required=True, validate=validate.Length(min=1, max=10))
    site_id = site_id_field(required=True)
    phone = phone_field(load_default=None, allow_none=True)
    id_number = fields.String(
        load_default=None, allow_none=True,
        validate=validate.Regexp(r"^[0-9]{17}[0-9Xx]\Z", error="Must be an 18-character resident identity number."),
    )
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-90, max=90))
    lon = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-180, max=180))
    availability = fields.Dict(load_default=None, allow_none=True)

    @validates("availability")
    def _availability(self, value, **_):
        if value is not None:
            check_availability(value)

    @validates("skills")
    def _skills(self, value, **_):
        if len(set(value)) != len(value):
            raise ValidationError("List each skill once.")


class VolunteerUpdateSchema(VolunteerCreateSchema):
    status = fields.String(validate=validate.OneOf(("active", "suspended")))


class CheckInSchema(StrictSchema):
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-90, max=90))
    lon = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-180, max=180))


class CheckOutSchema(CheckInSchema):
    summary = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    beneficiaries_served = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10000))


TEAM_TYPES = ("party", "social", "university", "school", "other")


class TeamCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=2, max=80))
    type = fields.String(required=True, validate=validate.OneOf(TEAM_TYPES))
    site_id = site_id_field(required=True)
    # Staff name the leader; a volunteer who creates a team leads it.
    leader_volunteer_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=36))


class TeamMemberSchema(StrictSchema):
    volunteer_id = fields.String(required=True, validate=validate.Length(min=1, max=36))


class TeamQuerySchema(QuerySchema):
    site_id = site_id_field(load_default=None)


class HoursRequestSchema(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf(("correction", "backfill")))
    hours = fields.Float(required=True, allow_nan=False)
    service_date = fields.Date(required=True)
    need_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=36))
    reason = fields.String(required=True, validate=validate.Length(min=2, max=1000))


class DecisionSchema(StrictSchema):
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))


class StatusQuerySchema(QuerySchema):
    status = fields.String(load_default=None, validate=validate.OneOf(("pending", "approved", "refused")))


class RecordQuerySchema(QuerySchema):
    flagged = fields.Boolean(load_default=None)
    volunteer_id = fields.String(load_default=None, validate=validate.Length(max=36))


class AssignmentQuerySchema(QuerySchema):
    status = fields.String(load_default=None, validate=validate.OneOf(
        ("assigned", "in_service", "completed", "cancelled", "released")))

