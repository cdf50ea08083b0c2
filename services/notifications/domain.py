"""Who is told what, and when an SMS may go, as pure rules: no I/O and no clock
(``now`` is always passed in), unit-tested alone.

An event becomes a plan: a list of ``Message`` — one kind (a template of
``templates.yml``), one addressee (a person, or the staff of a site), the fields the
template is filled with. Channels (in-app, SMS) then carry each message to the people
behind its addressee. A message is keyed by the event it comes from (or by a
synthetic key for timer-made ones), so however often an event is delivered each
person hears of it once.
"""
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from lastmile import sites

LOCAL_TIME = ZoneInfo("Asia/Shanghai")
HOUR = timedelta(hours=1)

USER, SITE = "user", "site"
IN_APP, SMS = "in_app", "sms"
CHANNELS = (IN_APP, SMS)

# What each kind of message may say: the fields ``plan`` gives it. A template may use
# only these (and the defaults it declares); tests/unit/test_notifications_domain.py
# checks templates.yml against this.
KIND_FIELDS = {
    # volunteers
    "offer_made": {"title", "deadline"},
    "offer_withdrawn": {"title", "reason"},
    "assignment_withdrawn": {"title"},
    "assignment_cancelled": {"title"},
    "window_reminder": {"title", "start"},
    # residents (the need's owner and the collector who registered it)
    "need_approved": {"title"},
    "need_rejected": {"title", "reason"},
    "need_assigned": {"title", "volunteer_name", "when"},
    "service_started": {"title"},
    "service_completed": {"title", "link"},
    "need_unfilled": {"title"},
    # staff of the need's station (seen by every enclosing site's staff too)
    "review_overdue": {"title", "minutes"},
    "order_escalated": {"title", "level"},
    "order_unfilled": {"title"},
    "rating_flagged": {"title", "stars", "tags"},
    "follow_up_overdue": {"title"},
}

# Events a plan cannot be made for without the need's facts: an offer's urgency decides
# whether it may wake someone up, and an escalation is for the staff of the need's
# station, neither of which the event carries.
NEEDS_FACTS = frozenset({"offer_made", "order_escalated"})

# A need in these states will not be served any more: no reminder for it.
CLOSED_STATUSES = frozenset({"in_service", "completed", "rated", "cancelled", "rejected"})

RATING_LINK = "/needs/{need_id}/rating"


@dataclass(frozen=True)
class To:
    """An addressee: one person (``user``, an account id) or the staff of a site
    (``site``), which staff of that site and of every site enclosing it see."""

    type: str
    id: str


@dataclass(frozen=True)
class NeedFacts:
    """What notifications keep of a need, from the needs and dispatch events."""

    need_id: str
    title: str = ""
    site_id: str | None = None
    urgency: str = "normal"
    owner_id: str | None = None
    collector_id: str | None = None
    window_start: datetime | None = None
    assignee_user_id: str | None = None
    submitted_at: datetime | None = None


@dataclass(frozen=True)
class Message:
    key: str  # one message per key per addressee: the event id, or a timer's own key
    kind: str
    to: To
    need_id: str | None
    fields: dict = field(default_factory=dict, compare=True)
    urgent: bool = False  # an offer for an urgent need: quiet hours do not hold it
    expires_at: datetime | None = None  # worthless after this (an offer's deadline)
    topic: str | None = None  # what it is about, e.g. "offer:<id>", for later messages to follow up
    follows: str | None = None  # the topic this one closes: its unsent SMS are dropped, and
    # this one goes by SMS only if an SMS of that topic was sent


# ---- who --------------------------------------------------------------------------------


def residents(owner_id, collector_id):
    """The need's owner and the collector who registered it, each once."""
    people = []
    for person in (owner_id, collector_id):
        if person and person not in people:
            people.append(person)
    return [To(USER, person) for person in people]


def staff_sms_sites(site_id):
    """Whose staff get an SMS about a need at ``site_id``: its station and its
    institute (the district sees it in the app, as every enclosing site does)."""
    if not sites.is_valid(site_id):
        return []
    return [s for s in sites.ancestors(site_id) if sites.level(s) != "district"]


def sees(actor_role, actor_id, actor_site_id, to):
    """Whether an actor sees a message addressed to ``to``."""
    if to.type == USER:
        return to.id == actor_id
    if actor_role == "admin":
        return True
    return actor_role == "staff" and sites.is_inside(to.id, actor_site_id)


# ---- what, by event ---------------------------------------------------------------------


def parse_time(value):
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def local_time(moment, now):
    """``14:30`` today, ``明天 14:30`` tomorrow, else ``3月9日 14:30``, in China time."""
    if moment is None:
        return None
    local, today = moment.astimezone(LOCAL_TIME), now.astimezone(LOCAL_TIME).date()
    clock = local.strftime("%H:%M")
    if local.date() == today:
        return clock
    if local.date() == today + timedelta(days=1):
        return f"明天 {clock}"
    return f"{local.month}月{local.day}日 {clock}"


def _title(data, need):
    return (data or {}).get("title") or (need.title if need else "") or None


def _rating_reason(reason):
    """``2 stars, no_show, rude`` (as ratings words it) as stars and tags."""
    parts = [p.strip() for p in (reason or "").split(",") if p.strip()]
    stars = parts[0].split()[0] if parts and parts[0].split()[0].isdigit() else None
    return stars, [p for p in parts[1:]]


def plan(event, need, now):
    """The messages one event calls for. ``need`` is what is known of its need
    (``NeedFacts`` after the event was applied), or None."""
    planner = _PLANNERS.get(event["type"])
    return planner(event, event.get("data") or {}, need, now) if planner else []


def _offer_made(event, data, need, now):
    if not data.get("user_id"):
        return []
    deadline = parse_time(data.get("deadline"))
    return [Message(event["event_id"], "offer_made", To(USER, data["user_id"]), event.get("need_id"),
                    {"title": _title(None, need), "deadline": local_time(deadline, now)},
                    urgent=bool(need and need.urgency == "urgent"), expires_at=deadline,
                    topic=f"offer:{data.get('offer_id')}")]


def _offer_withdrawn(event, data, need, now):
    if not data.get("user_id"):
        return []
    return [Message(event["event_id"], "offer_withdrawn", To(USER, data["user_id"]), event.get("need_id"),
                    {"title": _title(None, need), "reason": data.get("reason")},
                    follows=f"offer:{data.get('offer_id')}")]


def _order_reassigned(event, data, need, now):
    if not data.get("previous_user_id"):
        return []
    return [Message(event["event_id"], "assignment_withdrawn", To(USER, data["previous_user_id"]),
                    event.get("need_id"), {"title": _title(None, need)})]


def _order_assigned(event, data, need, now):
    snapshot = data.get("need") or {}
    fields = {"title": _title(snapshot, need), "volunteer_name": data.get("volunteer_name"),
              "when": local_time(parse_time(snapshot.get("window_start")), now)}
    return [Message(event["event_id"], "need_assigned", to, event.get("need_id"), fields)
            for to in residents(snapshot.get("owner_id"), snapshot.get("collector_id"))]


def _to_residents(kind, extra=None):
    def planner(event, data, need, now):
        fields = {"title": _title(data, need), **{k: data.get(k) for k in (extra or ())}}
        return [Message(event["event_id"], kind, to, event.get("need_id"), fields)
                for to in residents(data.get("owner_id"), data.get("collector_id"))]
    return planner


_STATUS_KINDS = {"in_service": "service_started", "completed": "service_completed", "unfilled": "need_unfilled"}


def _need_status_changed(event, data, need, now):
    kind = _STATUS_KINDS.get(data.get("to"))
    if kind is None:
        return []
    fields = {"title": _title(data, need)}
    if kind == "service_completed":
        fields["link"] = RATING_LINK.format(need_id=event.get("need_id"))
    return [Message(event["event_id"], kind, to, event.get("need_id"), fields)
            for to in residents(data.get("owner_id"), data.get("collector_id"))]


def _need_cancelled(event, data, need, now):
    """A volunteer who holds the assignment hears that it is off."""
    if data.get("previous_status") != "assigned" or need is None or not need.assignee_user_id:
        return []
    return [Message(event["event_id"], "assignment_cancelled", To(USER, need.assignee_user_id),
                    event.get("need_id"), {"title": _title(data, need)})]


def _station_of(data, need):
    return (need.site_id if need and need.site_id else None) or data.get("site_id")


def _order_escalated(event, data, need, now):
    station = _station_of(data, need)
    if not station:
        return []
    return [Message(event["event_id"], "order_escalated", To(SITE, station), event.get("need_id"),
                    {"title": _title(None, need), "level": data.get("to_level")})]


def _order_unfilled(event, data, need, now):
    station = _station_of(data, need)
    if not station:
        return []
    return [Message(event["event_id"], "order_unfilled", To(SITE, station), event.get("need_id"),
                    {"title": _title(None, need)})]


def _rating_flagged(event, data, need, now):
    if not data.get("site_id"):
        return []
    stars, tags = _rating_reason(data.get("reason"))
    return [Message(event["event_id"], "rating_flagged", To(SITE, data["site_id"]), event.get("need_id"),
                    {"title": _title(None, need), "stars": stars, "tags": tags})]


def _follow_up_escalated(event, data, need, now):
    site_id = data.get("responsible_site_id")
    if not site_id:
        return []
    return [Message(event["event_id"], "follow_up_overdue", To(SITE, site_id), event.get("need_id"),
                    {"title": _title(None, need)})]


_PLANNERS = {
    "offer_made": _offer_made,
    "offer_withdrawn": _offer_withdrawn,
    "order_reassigned": _order_reassigned,
    "order_assigned": _order_assigned,
    "need_approved": _to_residents("need_approved"),
    "need_rejected": _to_residents("need_rejected", ("reason",)),
    "need_status_changed": _need_status_changed,
    "need_cancelled": _need_cancelled,
    "order_escalated": _order_escalated,
    "order_unfilled": _order_unfilled,
    "rating_flagged": _rating_flagged,
    "follow_up_escalated": _follow_up_escalated,
}
PLANNED_EVENTS = frozenset(_PLANNERS)


# ---- what, by the clock ------------------------------------------------------------------


def review_overdue(submitted_at, reviewed, alerted, now, minutes):
    """A need nobody has approved or rejected ``minutes`` after it was submitted."""
    return (not reviewed and not alerted and submitted_at is not None
            and now - submitted_at >= timedelta(minutes=minutes))


def review_message(need, now):
    waited = int((now - need.submitted_at).total_seconds() // 60)
    return Message(f"review:{need.need_id}", "review_overdue", To(SITE, need.site_id), need.need_id,
                   {"title": need.title, "minutes": str(waited)})


def reminder_due(window_start, now, lead_minutes):
    """Within ``lead_minutes`` before the window starts (and not after it started)."""
    return window_start is not None and now < window_start <= now + timedelta(minutes=lead_minutes)


def reminder_message(need, now):
    return Message(f"reminder:{need.need_id}:{need.assignee_user_id}", "window_reminder",
                   To(USER, need.assignee_user_id), need.need_id,
                   {"title": need.title, "start": local_time(need.window_start, now)},
                   expires_at=need.window_start)


# ---- quiet hours and the hourly limit ---------------------------------------------------

CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")


def parse_clock(text):
    match = CLOCK.match(text or "")
    if not match:
        raise ValueError(f"not a time of day HH:MM: {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


def parse_quiet_hours(text):
    """``22:00-07:00`` as (start, end); empty or ``off`` as (None, None)."""
    text = (text or "").strip()
    if text.lower() in ("", "off", "none"):
        return None, None
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"quiet hours must be HH:MM-HH:MM, not {text!r}")
    return parse_clock(start.strip()), parse_clock(end.strip())


@dataclass(frozen=True)
class Preferences:
    quiet_start: time | None = time(22, 0)
    quiet_end: time | None = time(7, 0)
    sms: bool = True


def quiet_until(now, prefs, tz=LOCAL_TIME):
    """When the quiet hours ``now`` falls in end (aware UTC), or None when it is
    not in quiet hours. A window from 22:00 to 07:00 runs over midnight."""
    start, end = prefs.quiet_start, prefs.quiet_end
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(tz)
    clock, day = local.time().replace(tzinfo=None), local.date()
    if start < end:
        inside, end_day = start <= clock < end, day
    elif clock >= start:
        inside, end_day = True, day + timedelta(days=1)
    else:
        inside, end_day = clock < end, day
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=tz).astimezone(now.tzinfo)


@dataclass(frozen=True)
class Decision:
    action: str  # send, hold (until), expire, cancel
    until: datetime | None = None
    reason: str | None = None


def sms_decision(now, *, urgent, expires_at, prefs, has_phone, recent_sends, per_hour):
    """What to do now with one SMS that is due: send it, hold it (quiet hours, the
    hourly limit), let it expire (its deadline passed) or cancel it (no phone, or
    the person turned SMS off). ``recent_sends`` are the times SMS went to this
    person (in flight ones count as now); ``per_hour`` 0 means no limit."""
    if expires_at is not None and now >= expires_at:
        return Decision("expire", reason="past its deadline")
    if not has_phone:
        return Decision("cancel", reason="no phone for this person")
    if not prefs.sms:
        return Decision("cancel", reason="SMS turned off by this person")
    if not urgent:
        quiet_end = quiet_until(now, prefs)
        if quiet_end is not None:
            until = min(quiet_end, expires_at) if expires_at else quiet_end
            return Decision("hold", until, "quiet hours")
    if per_hour > 0:
        window = sorted(t for t in recent_sends if t > now - HOUR)
        if len(window) >= per_hour:
            until = window[len(window) - per_hour] + HOUR
            if expires_at:
                until = min(until, expires_at)
            return Decision("hold", until, f"{per_hour} SMS an hour already")
    return Decision("send")


BACKOFF_BASE_SECONDS = 1
BACKOFF_CAP_SECONDS = 300


def retry_delay(attempts):
    """Seconds before the next try after ``attempts`` failed ones: 1, 2, 4 … 300."""
    return min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_CAP_SECONDS)


def provider_outcome(status_code):
    """``sent``, ``retry`` (the provider is down, busy or unreachable: None) or
    ``failed`` (it refused this message for good)."""
    if status_code is None:
        return "retry"
    if 200 <= status_code < 300:
        return "sent"
    if status_code in (408, 425, 429) or status_code >= 500:
        return "retry"
    return "failed"


# ---- what it says -------------------------------------------------------------------------

PHONE_IN_TEXT = re.compile(r"(?<![0-9])(1[3-9][0-9])([0-9]{4})([0-9]{4})(?![0-9])")


def mask_phones(text):
    """Every mobile number in a text as 138****0000."""
    return PHONE_IN_TEXT.sub(r"\1****\3", text) if text else text


@dataclass(frozen=True)
class Rendered:
    title: str
    body: str
    sms: str | None  # None when this kind does not go by SMS
    link: str | None


class _Fields(dict):
    def __init__(self, values, defaults):
        super().__init__(values)
        self.defaults = defaults

    def __missing__(self, name):
        return self.defaults.get(name, "")


PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class Templates:
    """The Chinese wording of every kind of message, as data (templates.yml)."""

    def __init__(self, data):
        self.signature = data.get("signature", "")
        self.phrases = data.get("phrases") or {}
        self.specs = data.get("templates") or {}

    def problems(self):
        """What is wrong with the templates: every kind has one, channels are known,
        placeholders name fields the kind has (or a default)."""
        found = []
        for kind in sorted(set(KIND_FIELDS) - set(self.specs)):
            found.append(f"{kind}: no template")
        for kind, spec in sorted(self.specs.items()):
            if kind not in KIND_FIELDS:
                found.append(f"{kind}: no such kind of message")
                continue
            channels = spec.get("channels") or []
            if not channels or set(channels) - set(CHANNELS):
                found.append(f"{kind}: channels must be some of {', '.join(CHANNELS)}")
            for part in ("title", "body"):
                if not spec.get(part):
                    found.append(f"{kind}: no {part}")
            if SMS in channels and not (spec.get("sms") or spec.get("body")):
                found.append(f"{kind}: no sms text")
            known = KIND_FIELDS[kind] | set(spec.get("defaults") or {})
            for part in ("title", "body", "sms", "link"):
                for name in PLACEHOLDER.findall(spec.get(part) or ""):
                    if name not in known:
                        found.append(f"{kind}.{part}: unknown field {{{name}}}")
        return found

    def channels(self, kind):
        return tuple(self.specs[kind].get("channels") or ())

    def _value(self, name, value):
        words = self.phrases.get(name) or {}
        if isinstance(value, (list, tuple)):
            value = "、".join(str(words.get(item, item)) for item in value if item)
        elif value is not None:
            value = str(words.get(value, value))
        if value in (None, ""):
            return None
        return mask_phones(value)

    def render(self, message):
        spec = self.specs[message.kind]
        values = {}
        for name, value in message.fields.items():
            shown = self._value(name, value)
            if shown is not None:
                values[name] = shown
        fields = _Fields(values, spec.get("defaults") or {})

        def fill(text):
            return mask_phones(text.format_map(fields)).strip() if text else None

        sms = None
        if SMS in self.channels(message.kind):
            sms = self.signature + fill(spec.get("sms") or spec["body"])
        return Rendered(title=fill(spec["title"]), body=fill(spec["body"]), sms=sms,
                        link=fill(spec.get("link")) or message.fields.get("link"))
