"""What the notifications service accepts (the gateway validates with these too)."""
from marshmallow import ValidationError, fields, validate, validates_schema

from lastmile.validation import PageSchema, StrictSchema, cursor_field
from services.notifications import domain

CLOCK = validate.Regexp(domain.CLOCK, error="Must be a time of day HH:MM.")


class NotificationQuerySchema(PageSchema):
    unread = fields.Boolean(load_default=False)
    # Only those after this seq (newest first still): what a live stream has not shown yet.
    after = cursor_field(load_default=None, allow_none=True)


class PreferencesSchema(StrictSchema):
    """Quiet hours in China time; both null for none. What is left out stays as it was."""

    quiet_start = fields.String(allow_none=True, validate=CLOCK)
    quiet_end = fields.String(allow_none=True, validate=CLOCK)
    sms = fields.Boolean(truthy={True}, falsy={False})  # JSON true or false, not "yes"

    @validates_schema
    def _both_or_neither(self, data, **_):
        if ("quiet_start" in data) != ("quiet_end" in data):
            missing = "quiet_end" if "quiet_start" in data else "quiet_start"
            raise ValidationError("Give quiet_start and quiet_end together.", missing)
        if "quiet_start" in data and (data["quiet_start"] is None) != (data["quiet_end"] is None):
            raise ValidationError("Both null (no quiet hours) or both times.", "quiet_end")


class DeliveryQuerySchema(PageSchema):
    user_id = fields.String(load_default=None, validate=validate.Length(max=36))
    need_id = fields.String(load_default=None, validate=validate.Length(max=36))
    channel = fields.String(load_default=None, validate=validate.OneOf(domain.CHANNELS))
    outcome = fields.String(load_default=None, validate=validate.Length(max=12))
