"""services/notifications/domain.py: who is told what for each event, what staff of
which sites see, quiet hours, the hourly limit, retries, masking, and the templates."""
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from services.notifications import domain
from services.notifications.domain import SITE, USER, Message, NeedFacts, Preferences, To

TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "notifications" / "templates.yml"
UTC = timezone.utc
# 10:00 in Haikou (UTC+8), a Monday.
NOW = datetime(2026, 3, 9, 2, 0, tzinfo=UTC)
STATION, INSTITUTE, DISTRICT = "qiongshan.hongqi.benli", "qiongshan.hongqi", "qiongshan"


def local(hour, minute=0, day=9):
    """A moment given in China time, as aware UTC."""
    return datetime(2026, 3, day, hour, minute, tzinfo=domain.LOCAL_TIME).astimezone(UTC)


def event(type_, data, need_id="need-1", event_id="event-1"):
    return {"event_id": event_id, "type": type_, "need_id": need_id, "occurred_at": "2026-03-09T02:00:00Z",
            "source": "test", "version": 1, "data": data}


def need(**kwargs):
    values = dict(need_id="need-1", title="上门量血压", site_id=STATION, urgency="normal", owner_id="resident-1",
                  collector_id=None)
    values.update(kwargs)
    return NeedFacts(**values)


def snapshot(**kwargs):
    values = {"need_id": "need-1", "title": "上门量血压", "site_id": STATION, "urgency": "normal",
              "owner_id": "resident-1", "collector_id": None, "window_start": None, "category": "health"}
    values.update(kwargs)
    return values


def who(messages):
    return [(m.kind, m.to.type, m.to.id) for m in messages]


@pytest.fixture(scope="module")
def templates():
    return domain.Templates(yaml.safe_load(TEMPLATES.read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------- volunteers


def test_an_offer_is_told_to_its_volunteer_with_its_deadline_and_expires_with_it():
    deadline = local(10, 30)
    [message] = domain.plan(event("offer_made", {"offer_id": "o1", "user_id": "vol-1", "deadline":
                                                 deadline.isoformat().replace("+00:00", "Z")}), need(), NOW)
    assert who([message]) == [("offer_made", USER, "vol-1")]
    assert message.fields == {"title": "上门量血压", "deadline": "10:30"}
    assert message.key == "event-1" and message.need_id == "need-1"
    assert message.expires_at == deadline and message.topic == "offer:o1"
    assert message.urgent is False


def test_only_offers_for_urgent_needs_are_urgent():
    data = {"offer_id": "o1", "user_id": "vol-1", "deadline": "2026-03-09T02:10:00Z"}
    [urgent] = domain.plan(event("offer_made", data), need(urgency="urgent"), NOW)
    assert urgent.urgent is True
    assert domain.NEEDS_FACTS == {"offer_made", "order_escalated"}


def test_a_withdrawn_offer_follows_up_its_offer():
    [message] = domain.plan(event("offer_withdrawn", {"offer_id": "o1", "user_id": "vol-1",
                                                      "reason": "another volunteer accepted"}), need(), NOW)
    assert who([message]) == [("offer_withdrawn", USER, "vol-1")]
    assert message.follows == "offer:o1" and message.fields["reason"] == "another volunteer accepted"


def test_a_reassignment_tells_the_volunteer_who_had_it():
    data = {"previous_volunteer_id": "v1", "previous_user_id": "vol-1", "by": "staff-1", "note": None}
    assert who(domain.plan(event("order_reassigned", data), need(), NOW)) == [("assignment_withdrawn", USER, "vol-1")]
    assert domain.plan(event("order_reassigned", dict(data, previous_user_id=None)), need(), NOW) == []


def test_a_cancelled_assignment_tells_its_volunteer_only_if_one_held_it():
    data = dict(snapshot(), previous_status="assigned", reason="不需要了")
    assert who(domain.plan(event("need_cancelled", data), need(assignee_user_id="vol-1"), NOW)) == [
        ("assignment_cancelled", USER, "vol-1")]
    assert domain.plan(event("need_cancelled", dict(data, previous_status="dispatching")),
                       need(assignee_user_id="vol-1"), NOW) == []
    assert domain.plan(event("need_cancelled", data), need(), NOW) == []


def test_a_reminder_is_due_within_the_lead_time_before_the_window_and_not_after_it_started():
    start = NOW + timedelta(minutes=45)
    assert domain.reminder_due(start, NOW, 60)
    assert not domain.reminder_due(start, NOW, 30)
    assert not domain.reminder_due(NOW, NOW, 60)
    assert not domain.reminder_due(None, NOW, 60)
    message = domain.reminder_message(need(window_start=start, assignee_user_id="vol-1"), NOW)
    assert who([message]) == [("window_reminder", USER, "vol-1")]
    assert message.key == "reminder:need-1:vol-1" and message.fields["start"] == "10:45"
    assert message.expires_at == start


# ------------------------------------------------------------------------------- residents


@pytest.mark.parametrize("type_, kind", [("need_approved", "need_approved"), ("need_rejected", "need_rejected")])
def test_the_owner_and_the_registering_collector_hear_of_the_review(type_, kind):
    data = dict(snapshot(owner_id="collector-1", collector_id="collector-1"), reason="不在服务范围")
    assert who(domain.plan(event(type_, data), None, NOW)) == [(kind, USER, "collector-1")]  # once
    data = dict(snapshot(owner_id="resident-1", collector_id="collector-1"), reason="不在服务范围")
    messages = domain.plan(event(type_, data), None, NOW)
    assert who(messages) == [(kind, USER, "resident-1"), (kind, USER, "collector-1")]
    if type_ == "need_rejected":
        assert messages[0].fields["reason"] == "不在服务范围"


def test_an_assignment_says_who_is_coming_and_when():
    data = {"order_id": "or1", "offer_id": "o1", "volunteer_id": "v1", "user_id": "vol-1", "volunteer_name": "小李",
            "need": snapshot(window_start=local(15, 0, day=10).isoformat())}
    [message] = domain.plan(event("order_assigned", data), None, NOW)
    assert who([message]) == [("need_assigned", USER, "resident-1")]
    assert message.fields == {"title": "上门量血压", "volunteer_name": "小李", "when": "明天 15:00"}


@pytest.mark.parametrize("to, kind", [("in_service", "service_started"), ("completed", "service_completed"),
                                      ("unfilled", "need_unfilled")])
def test_status_changes_residents_hear_of(to, kind):
    data = dict(snapshot(collector_id="collector-1"), **{"from": "x", "to": to, "by": "system", "note": None})
    messages = domain.plan(event("need_status_changed", data), None, NOW)
    assert who(messages) == [(kind, USER, "resident-1"), (kind, USER, "collector-1")]
    if kind == "service_completed":
        assert messages[0].fields["link"] == "/needs/need-1/rating"


@pytest.mark.parametrize("to", ["submitted", "dispatching", "assigned", "rated", "cancelled", "rejected"])
def test_status_changes_told_otherwise_or_not_at_all(to):
    data = dict(snapshot(), **{"from": "x", "to": to, "by": "system", "note": None})
    assert domain.plan(event("need_status_changed", data), None, NOW) == []


# ----------------------------------------------------------------------------------- staff


def test_staff_are_addressed_by_the_need_s_station():
    escalated = domain.plan(event("order_escalated", {"order_id": "or1", "from_level": "station",
                                                      "to_level": "institute", "site_id": INSTITUTE}), need(), NOW)
    assert who(escalated) == [("order_escalated", SITE, STATION)]
    assert escalated[0].fields["level"] == "institute"
    # (The service waits for the need's facts; were they lost, the level's site would do.)
    assert who(domain.plan(event("order_escalated", {"to_level": "district", "site_id": DISTRICT}), None, NOW)) == [
        ("order_escalated", SITE, DISTRICT)]
    assert who(domain.plan(event("order_unfilled", {"order_id": "or1", "site_id": STATION}), None, NOW)) == [
        ("order_unfilled", SITE, STATION)]


def test_a_poor_rating_tells_the_station_with_its_stars_and_tags():
    data = {"id": "f1", "site_id": STATION, "responsible_site_id": STATION, "reason": "1 stars, no_show, rude"}
    [message] = domain.plan(event("rating_flagged", data), need(), NOW)
    assert who([message]) == [("rating_flagged", SITE, STATION)]
    assert message.fields == {"title": "上门量血压", "stars": "1", "tags": ["no_show", "rude"]}
    later = dict(data, responsible_site_id=INSTITUTE)
    assert who(domain.plan(event("follow_up_escalated", later), need(), NOW)) == [
        ("follow_up_overdue", SITE, INSTITUTE)]


def test_a_need_nobody_reviews_in_time_is_told_once():
    submitted = NOW - timedelta(minutes=61)
    assert domain.review_overdue(submitted, False, False, NOW, 60)
    assert not domain.review_overdue(submitted, True, False, NOW, 60)
    assert not domain.review_overdue(submitted, False, True, NOW, 60)
    assert not domain.review_overdue(NOW - timedelta(minutes=59), False, False, NOW, 60)
    message = domain.review_message(need(submitted_at=submitted), NOW)
    assert who([message]) == [("review_overdue", SITE, STATION)]
    assert message.key == "review:need-1" and message.fields["minutes"] == "61"


def test_staff_see_their_site_and_everything_inside_it():
    to_station = To(SITE, STATION)
    assert domain.sees("staff", "s1", STATION, to_station)
    assert domain.sees("staff", "s2", INSTITUTE, to_station)
    assert domain.sees("staff", "s3", DISTRICT, to_station)
    assert not domain.sees("staff", "s4", "qiongshan.fucheng", to_station)
    assert not domain.sees("staff", "s5", STATION, To(SITE, INSTITUTE))  # not what is above them
    assert not domain.sees("volunteer", "v1", STATION, to_station)
    assert domain.sees("admin", "a1", None, to_station)
    assert domain.sees("resident", "r1", None, To(USER, "r1"))
    assert not domain.sees("staff", "s1", STATION, To(USER, "r1"))


def test_staff_sms_go_to_the_station_and_its_institute_not_the_district():
    assert domain.staff_sms_sites(STATION) == [STATION, INSTITUTE]
    assert domain.staff_sms_sites(INSTITUTE) == [INSTITUTE]
    assert domain.staff_sms_sites(DISTRICT) == []
    assert domain.staff_sms_sites("not a site") == []


def test_events_no_one_is_told_of():
    for type_ in ("need_submitted", "offer_accepted", "offer_declined", "offer_expired", "rating_submitted",
                  "score_updated", "hours_credited", "something_new"):
        assert domain.plan(event(type_, snapshot()), need(), NOW) == []


# ------------------------------------------------------------------- quiet hours, limits


def test_local_times_say_today_tomorrow_or_the_date():
    assert domain.local_time(local(10, 30), NOW) == "10:30"
    assert domain.local_time(local(8, 5, day=10), NOW) == "明天 08:05"
    assert domain.local_time(local(8, 5, day=12), NOW) == "3月12日 08:05"
    assert domain.local_time(None, NOW) is None


@pytest.mark.parametrize("hour, minute, until", [
    (22, 0, local(7, 0, day=10)), (23, 59, local(7, 0, day=10)), (0, 0, local(7, 0)), (6, 59, local(7, 0)),
    (7, 0, None), (12, 0, None), (21, 59, None),
])
def test_quiet_hours_run_over_midnight(hour, minute, until):
    assert domain.quiet_until(local(hour, minute), Preferences()) == until


def test_quiet_hours_within_a_day_and_none():
    afternoon = Preferences(quiet_start=time(13, 0), quiet_end=time(15, 0))
    assert domain.quiet_until(local(14, 0), afternoon) == local(15, 0)
    assert domain.quiet_until(local(15, 0), afternoon) is None
    assert domain.quiet_until(local(23, 0), Preferences(quiet_start=None, quiet_end=None)) is None
    assert domain.quiet_until(local(23, 0), Preferences(quiet_start=time(1, 0), quiet_end=time(1, 0))) is None


def test_quiet_hours_are_read_from_text():
    assert domain.parse_quiet_hours("22:00-07:00") == (time(22, 0), time(7, 0))
    assert domain.parse_quiet_hours(" 21:30 - 06:45 ") == (time(21, 30), time(6, 45))
    assert domain.parse_quiet_hours("off") == (None, None) == domain.parse_quiet_hours("")
    for bad in ("22:00", "24:00-07:00", "22-07", "10pm-7am"):
        with pytest.raises(ValueError):
            domain.parse_quiet_hours(bad)


def decide(now=None, urgent=False, expires_at=None, prefs=Preferences(), has_phone=True, recent=(), per_hour=5):
    return domain.sms_decision(now or local(10), urgent=urgent, expires_at=expires_at, prefs=prefs,
                               has_phone=has_phone, recent_sends=list(recent), per_hour=per_hour)


def test_an_sms_goes_at_once_by_day_and_waits_for_the_morning_by_night():
    assert decide().action == "send"
    held = decide(now=local(23, 0))
    assert (held.action, held.until, held.reason) == ("hold", local(7, 0, day=10), "quiet hours")


def test_offers_for_urgent_needs_go_out_in_quiet_hours():
    assert decide(now=local(23, 0), urgent=True).action == "send"


def test_a_held_sms_is_not_held_past_its_deadline_and_expires_there():
    deadline = local(23, 30)
    assert decide(now=local(23, 0), expires_at=deadline).until == deadline
    assert decide(now=deadline, expires_at=deadline).action == "expire"


def test_no_phone_or_sms_turned_off_cancels():
    assert decide(has_phone=False).action == "cancel"
    assert decide(prefs=Preferences(sms=False)).action == "cancel"


def test_at_most_so_many_sms_an_hour_and_the_rest_wait_their_turn():
    now = local(10)
    sent = [now - timedelta(minutes=m) for m in (50, 40, 30, 20, 10)]
    held = decide(now=now, recent=sent)
    assert (held.action, held.until) == ("hold", now + timedelta(minutes=10))  # when the one of 50 min ago ages out
    assert decide(now=now, recent=sent[1:]).action == "send"
    assert decide(now=now, recent=[now - timedelta(minutes=61)] * 9).action == "send"
    assert decide(now=now, recent=sent, per_hour=0).action == "send"
    assert decide(now=now, recent=sent, urgent=True).action == "hold"  # urgency passes quiet hours, not the limit


def test_a_failing_provider_is_retried_with_growing_delays():
    assert [domain.retry_delay(n) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert [domain.provider_outcome(c) for c in (200, 202, None, 500, 503, 429, 408, 400, 401, 404)] == [
        "sent", "sent", "retry", "retry", "retry", "retry", "retry", "failed", "failed", "failed"]


def test_phones_in_texts_are_masked():
    assert domain.mask_phones("请联系13712345678或 13900001111。") == "请联系137****5678或 139****1111。"
    assert domain.mask_phones("编号 123456789012 不是电话") == "编号 123456789012 不是电话"
    assert domain.mask_phones(None) is None


# -------------------------------------------------------------------------------- templates


def test_every_kind_has_a_template_that_uses_only_its_fields(templates):
    assert templates.problems() == []
    assert set(templates.specs) == set(domain.KIND_FIELDS)


def test_template_problems_are_named():
    broken = domain.Templates({"templates": {
        "offer_made": {"channels": ["in_app", "pager"], "title": "t", "body": "{title} {colour}"},
        "nonsense": {"channels": ["in_app"], "title": "t", "body": "b"}}})
    problems = broken.problems()
    assert "offer_made: channels must be some of in_app, sms" in problems
    assert "offer_made.body: unknown field {colour}" in problems
    assert "nonsense: no such kind of message" in problems
    assert "need_approved: no template" in problems


def test_rendering_fills_translates_defaults_and_masks(templates):
    offer = Message("k", "offer_made", To(USER, "v"), "n", {"title": "帮忙联系13712345678", "deadline": "10:30"})
    rendered = templates.render(offer)
    assert "137****5678" in rendered.body and "13712345678" not in rendered.body + rendered.sms
    assert rendered.sms.startswith(templates.signature) and "10:30" in rendered.sms
    withdrawn = templates.render(Message("k", "offer_withdrawn", To(USER, "v"), "n",
                                         {"title": "量血压", "reason": "another volunteer accepted"}))
    assert "已有其他志愿者接单" in withdrawn.body
    flagged = templates.render(Message("k", "rating_flagged", To(SITE, STATION), "n",
                                       {"title": "量血压", "stars": "1", "tags": ["no_show", "rude"]}))
    assert "1星" in flagged.body and "未到场、态度不好" in flagged.body
    untitled = templates.render(Message("k", "need_assigned", To(USER, "r"), "n",
                                        {"title": None, "volunteer_name": "小李", "when": None}))
    assert "「服务需求」" in untitled.body and "约定时间" in untitled.body and "{" not in untitled.body


def test_kinds_only_in_the_app_have_no_sms_and_completion_links_to_rating(templates):
    started = templates.render(Message("k", "service_started", To(USER, "r"), "n", {"title": "量血压"}))
    assert started.sms is None
    completed = templates.render(Message("k", "service_completed", To(USER, "r"), "n-1",
                                         {"title": "量血压", "link": "/needs/n-1/rating"}))
    assert completed.link == "/needs/n-1/rating" and completed.sms


def test_every_planned_message_renders_without_a_placeholder_left(templates):
    data = {"offer_id": "o", "user_id": "u", "deadline": "2026-03-09T03:00:00Z", "reason": "x", "previous_user_id": "p",
            "volunteer_name": "小李", "need": snapshot(collector_id="c"), "to": "completed", "from": "in_service",
            "previous_status": "assigned", "to_level": "district", "site_id": STATION,
            "responsible_site_id": INSTITUTE, **snapshot(collector_id="c")}
    kinds = set()
    for type_ in domain.PLANNED_EVENTS:
        for message in domain.plan(event(type_, data), need(assignee_user_id="u"), NOW):
            rendered = templates.render(message)
            kinds.add(message.kind)
            for text in (rendered.title, rendered.body, rendered.sms or ""):
                assert "{" not in text and "}" not in text, (message.kind, text)
    assert kinds >= set(domain.KIND_FIELDS) - {"review_overdue", "window_reminder", "service_started",
                                               "need_unfilled"}
