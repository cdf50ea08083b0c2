"""Configuration, read from environment variables only.

Every variable Lastmile reads is listed in ``VARIABLES`` with its default, so the
README, the operations guide and the compose file can be checked against one list.
"""
import os

VARIABLES = {
    "LASTMILE_AMQP_URI": ("amqp://guest:guest@localhost:5672/", "RabbitMQ connection URI"),
    "LASTMILE_DATABASE_URL": ("", "PostgreSQL server URL; unset means one SQLite file per service"),
    "LASTMILE_DATABASE_PREFIX": ("lastmile", "prefix of each service's database name on the server"),
    "LASTMILE_DATA_DIR": ("var", "folder of the SQLite files and logs"),
    "LASTMILE_PORT": ("8000", "HTTP port of the gateway"),
    "LASTMILE_SECRET_KEY": ("", "key that signs tokens; unset means one generated and kept in the gateway's database"),
    "LASTMILE_TOKEN_TTL": ("86400", "seconds a token stays valid"),
    "LASTMILE_ADMIN_PHONE": ("", "phone of the first admin account, created at start"),
    "LASTMILE_ADMIN_PASSWORD": ("", "password of the first admin account"),
    "LASTMILE_RPC_TIMEOUT": ("1.8", "seconds the gateway waits for a service before answering 504"),
    "LASTMILE_PROXY_HOPS": ("0", "reverse proxies in front of the gateway, each appending X-Forwarded-For; the client address (for rate limits and logs) is taken that many entries from its end; 0 trusts the header not at all"),
    "LASTMILE_RATE_LIMIT": ("600", "requests a minute per token and per client address; 0 turns the limit off"),
    "LASTMILE_EVENT_RETRY_DELAYS": ("1,5,30,120,600", "seconds between retries of a failing event handler; then it dead-letters"),
    "LASTMILE_MAX_WORKERS": ("10", "concurrent workers per service process"),
    "LASTMILE_MESSAGE_RETENTION_DAYS": ("30", "days a published event stays in a service's outbox and a consumed event in its ledger of consumed events"),
    "LASTMILE_GATEWAY_WORKERS": ("100", "concurrent requests per gateway process"),
    "LASTMILE_OFFER_MINUTES_NORMAL": ("30", "deadline of an offer for a normal need"),
    "LASTMILE_OFFER_MINUTES_URGENT": ("10", "deadline of an offer for an urgent need"),
    "LASTMILE_DISPATCH_STRATEGIES": ("", "JSON overriding strategy, size and deadline per category and urgency"),
    "LASTMILE_BROADCAST_SIZE": ("3", "offers made at once for an urgent need"),
    "LASTMILE_OFFERS_PER_LEVEL": ("3", "offers at the station, then at the institute, before widening (the district asks until no one is left)"),
    "LASTMILE_MAX_ACTIVE_ASSIGNMENTS": ("2", "assignments a volunteer may hold at once"),
    "LASTMILE_HOURS_MINIMUM_MINUTES": ("15", "service shorter than this credits no hours"),
    "LASTMILE_HOURS_STEP_MINUTES": ("30", "credited time is rounded down to a multiple of this"),
    "LASTMILE_HOURS_DAILY_CAP": ("12", "hours one volunteer may be credited for one day"),
    "LASTMILE_GEOFENCE_METRES": ("500", "a check-in farther than this from the need is flagged"),
    "LASTMILE_FOLLOW_UP_DAYS": ("3", "days a follow-up may stay open at its station before the institute takes it"),
    "LASTMILE_SMS_URL": ("", "the SMS provider's endpoint (POST JSON {to, text}, bearer key); unset turns SMS off"),
    "LASTMILE_SMS_KEY": ("", "the bearer key of the SMS provider"),
    "LASTMILE_SMS_PER_HOUR": ("5", "SMS one person receives in an hour at most; the rest wait (0: no limit)"),
    "LASTMILE_QUIET_HOURS": ("22:00-07:00", "default quiet hours (China time): SMS wait till they end, except offers for urgent needs; off for none"),
    "LASTMILE_REVIEW_MINUTES": ("60", "minutes a need may wait for review before staff of its station and institute are told"),
    "LASTMILE_REMINDER_MINUTES": ("60", "minutes before a service window starts that the assigned volunteer is reminded"),
    "LASTMILE_LOG_LEVEL": ("INFO", "log level of every process"),
}


def get(name):
    default, _ = VARIABLES[name]
    return os.environ.get(name, default)


def get_int(name):
    value = get(name)
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not {value!r}")


def get_float(name):
    value = get(name)
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"{name} must be a number, not {value!r}")


def retry_delays():
    raw = get("LASTMILE_EVENT_RETRY_DELAYS")
    try:
        delays = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"LASTMILE_EVENT_RETRY_DELAYS must be whole seconds, not {raw!r}")
    if any(delay <= 0 for delay in delays):
        raise SystemExit("LASTMILE_EVENT_RETRY_DELAYS must be positive")
    return delays


def nameko_config(max_workers=None):
    """The nameko container configuration, built here rather than in YAML so that
    values such as ``0123`` or ``no`` are never re-read as numbers or booleans."""
    return {
        "AMQP_URI": get("LASTMILE_AMQP_URI"),
        "max_workers": max_workers or get_int("LASTMILE_MAX_WORKERS"),
        "parent_calls_tracked": 10,
        "serializer": "json",
        "WEB_SERVER_ADDRESS": "0.0.0.0:" + get("LASTMILE_PORT"),
    }
