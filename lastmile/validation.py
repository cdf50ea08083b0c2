"""marshmallow helpers shared by every service: one way to validate, one error shape."""
import re

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from lastmile import sites
from lastmile.errors import InvalidInput

CHINESE_MOBILE = re.compile(r"^1[3-9][0-9]{9}\Z")
CATEGORY_CODE = re.compile(r"^[a-z][a-z0-9_]{1,31}\Z")
MAX_PAGE_SIZE = 100


def _nul_at(value, path=()):
    """Where the first text holding a NUL character is (PostgreSQL refuses them in
    text, so one must not get past validation), or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        items = [((str(key),), key) for key in value] + [((str(key),), item) for key, item in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [((str(index),), item) for index, item in enumerate(value)]
    else:
        return None
    for step, item in items:
        found = _nul_at(item, path + step)
        if found is not None:
            return found
    return None


def load(schema, data, partial=False):
    """Validate ``data``; raise InvalidInput naming each bad field."""
    if not isinstance(data, dict):
        raise InvalidInput("The body must be a JSON object", {"body": ["Expected a JSON object."]})
    where = _nul_at(data)
    if where is not None:
        field = ".".join(where).replace("\x00", "\\0")
        raise InvalidInput("Text may not contain NUL characters", {field: ["Must not contain NUL characters."]})
    try:
        return schema.load(data, partial=partial)
    except ValidationError as exc:
        messages = exc.normalized_messages()
        raise InvalidInput("Some fields are invalid: " + ", ".join(sorted(map(str, messages))), messages)


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class QuerySchema(Schema):
    """Query strings: unknown parameters (cache-busters and the like) are ignored."""

    class Meta:
        unknown = EXCLUDE


def phone_field(**kwargs):
    return fields.String(
        validate=validate.Regexp(CHINESE_MOBILE, error="Must be a Chinese mobile number of 11 digits."), **kwargs
    )


def _check_site_id(value):
    if not sites.is_valid(value):
        raise ValidationError("Not a site id such as qiongshan.hongqi.benli.")


def site_id_field(**kwargs):
    # The pattern only documents the id (OpenAPI); _check_site_id enforces it.
    kwargs.setdefault("metadata", {"pattern": sites.SITE_ID.pattern})
    return fields.String(validate=_check_site_id, **kwargs)


def category_field(**kwargs):
    return fields.String(validate=validate.Regexp(CATEGORY_CODE, error="Not a category code."), **kwargs)


# Sequence numbers (event log, notifications) are 32-bit integer columns: a larger
# cursor is refused here rather than overflowing in the database.
MAX_SEQ = 2**31 - 1


def cursor_field(**kwargs):
    return fields.Integer(validate=validate.Range(min=0, max=MAX_SEQ), **kwargs)


class PeriodSchema(QuerySchema):
    """``from`` and ``to``, dates both optional, in order."""

    from_ = fields.Date(load_default=None, data_key="from")
    to = fields.Date(load_default=None)

    @validates_schema
    def _ordered(self, data, **_):
        if data.get("from_") and data.get("to") and data["to"] < data["from_"]:
            raise ValidationError("Must not be before from.", "to")


class PageSchema(QuerySchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    page_size = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


def mask_phone(phone):
    if not phone:
        return phone
    if len(phone) < 11:
        # Landlines and short numbers: show only the last two digits.
        return "*" * max(len(phone) - 2, 4) + phone[-2:]
    return phone[:3] + "****" + phone[-4:]


def mask_id_number(number):
    """A resident identity number as 460***********12: region and birth date hidden."""
    if not number:
        return number
    return number[:3] + "*" * max(len(number) - 5, 4) + number[-2:]


def mask_text(text):
    if not text:
        return text
    return text[:2] + "****" if len(text) > 2 else "****"
