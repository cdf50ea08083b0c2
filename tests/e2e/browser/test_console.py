"""One 群众点单 → 政府派单 → 志愿者接单 → 群众评单 cycle done wholly in the web console, by the
people who do it: a volunteer, a resident and staff, each in a browser of their own, then
the dashboard. The tests run in this order, each continuing the cycle where the one before
left it (a step whose earlier step failed is skipped). Only the station and the staff
account are made through the API: admins have no console.

The resident orders four needs at a fresh station: A from the service menu (served, rated
poorly, followed up), B in their own words (cancelled by them), C (approved, declined by
the volunteer, then dispatched by hand) and D (rejected by staff)."""
import time
import uuid

import pytest

from tests.e2e.browser.conftest import Person
from tests.e2e.flows import PASSWORD, unique_phone
from tests.support import wait_for

by = Person.by
PASSED = []


@pytest.fixture(scope="module")
def cycle(admin):
    station = "qiongshan.hongqi.web" + uuid.uuid4().hex[:6]
    created = admin.post("/sites", json={"id": station, "name": "网上测试站", "lat": 19.79, "lon": 110.49})
    assert created.status_code == 201, created.text
    staff_phone = unique_phone("138")
    created = admin.post("/accounts", json={"phone": staff_phone, "password": PASSWORD, "name": "红旗镇实践所",
                                            "role": "staff", "site_id": "qiongshan.hongqi"})
    assert created.status_code == 201, created.text
    return {"station": station, "staff_phone": staff_phone, "needs": {}}


@pytest.fixture(scope="module")
def people(browser_ready, stack, tmp_path_factory):
    made = {}
    try:
        for name in ("volunteer", "resident", "staff"):
            made[name] = Person(stack["base"], name, tmp_path_factory.mktemp(f"downloads-{name}"))
        yield made
    finally:
        for person in made.values():
            person.close()


@pytest.fixture
def step(request, people):
    """Skips a step whose earlier step did not pass; records this one when it does, and
    what each browser showed when it did not."""
    missing = [name for name in getattr(request.function, "after", ()) if name not in PASSED]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} first")
    yield
    if getattr(request.node, "passed", False):
        PASSED.append(request.function.__name__)
    else:
        for person in people.values():
            person.shot(f"failed-{request.function.__name__}")


def after(*names):
    def mark(test):
        test.after = names
        return test
    return mark


def sign_up(person, role, name, phone):
    person.open()
    person.click(by("to-register"))
    form = by("register-form")
    person.fill(f"{form} [name=name]", name)
    person.fill(f"{form} [name=phone]", phone)
    person.fill(f"{form} [name=password]", PASSWORD)
    person.choose(f"{form} [name=role]", role)
    person.click(by("register"))
    person.visible(by("who"))


def sign_in(person, phone):
    person.open("login")
    person.fill("[name=phone]", phone)
    person.fill("[name=password]", PASSWORD)
    person.click(by("login"))
    person.visible(by("who"))


def order(person, station, *, title=None, address="红旗镇测试村1号"):
    """Fills the order form: the menu's first project, or (with a title) own words."""
    person.click(by("nav-order"))
    form = by("order-form")
    person.choose(f"{form} [name=site_id]", station)
    menu = f'[data-testid="menu"][data-site="{station}"]'  # the station's own menu, loaded
    person.click(f"{menu} {by('own-words') if title else by('project')}")
    if title:
        person.choose(f"{form} [name=category]", "health")
        person.fill(f"{form} [name=title]", title)
    person.fill(f"{form} [name=address]", address)
    return form


def submitted_need(person):
    person.until(lambda: "#/need/" in person.url() or None, "the need's page")
    person.visible(f'{by("need-detail")} .badge[data-status="submitted"]')
    return person.url().rsplit("/", 1)[1]


@after()
def test_a_volunteer_registers_and_sets_profile_location_and_availability(cycle, people, step):
    volunteer = people["volunteer"]
    cycle["volunteer_phone"] = unique_phone("139")
    sign_up(volunteer, "volunteer", "志愿者小王", cycle["volunteer_phone"])
    # No profile yet: the console asks for one before any offer.
    form = by("profile-form")
    volunteer.fill(f"{form} [name=name]", "志愿者小王")
    volunteer.fill(f"{form} [name=phone]", cycle["volunteer_phone"])
    volunteer.choose(f"{form} [name=site_id]", cycle["station"])
    for category in ("theory", "education", "culture", "science", "health", "fitness"):
        volunteer.check(by(f"skill-{category}"))
    volunteer.click(by("use-location"))  # the browser's location, granted
    volunteer.until(lambda: volunteer.value(f"{form} [name=lat]") == "19.79" or None, "the location")
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        volunteer.check(by(f"day-{day}"))
        volunteer.fill(f'{form} [name="from-{day}"]', "00:00")
        volunteer.fill(f'{form} [name="to-{day}"]', "23:59")  # the whole day: any time of the test is inside
    volunteer.click(by("save-profile"))
    volunteer.visible(by("volunteer-number"))
    assert volunteer.read(by("skill-health"), lambda box: box.is_selected())
    volunteer.shot("1-profile")


@after("test_a_volunteer_registers_and_sets_profile_location_and_availability")
def test_a_resident_orders_from_the_menu_and_in_own_words_and_cancels(cycle, people, step):
    resident = people["resident"]
    cycle["resident_phone"] = unique_phone("137")
    sign_up(resident, "resident", "王阿姨", cycle["resident_phone"])
    resident.visible(by("my-needs"))

    form = order(resident, cycle["station"])
    assert resident.value(f"{form} [name=title]")  # the project's name
    resident.shot("2-order-from-the-menu")
    resident.click(by("submit-order"))
    cycle["needs"]["A"] = submitted_need(resident)

    # A bad field is named beside the field, from the API's error body.
    form = order(resident, cycle["station"], title="帮忙量血压")
    resident.fill(f"{form} [name=contact_phone]", "12345")
    resident.click(by("submit-order"))
    assert resident.attribute(by("error"), "data-code") == "invalid_input"
    assert resident.text(f'{form} [data-field="contact_phone"] .field-error')
    resident.shot("2-order-error")
    resident.fill(f"{form} [name=contact_phone]", "13700000009")
    resident.click(by("submit-order"))
    cycle["needs"]["C"] = submitted_need(resident)

    for name, title in (("D", "帮忙写一副春联"), ("B", "帮忙修理轮椅")):
        order(resident, cycle["station"], title=title)
        resident.click(by("submit-order"))
        cycle["needs"][name] = submitted_need(resident)

    resident.fill(f'{by("cancel-form")} [name=reason]', "家人已经帮忙修好了")
    resident.click(by("cancel"))
    resident.visible(f'{by("need-detail")} .badge[data-status="cancelled"]')

    resident.click(by("nav-needs"))
    for name in "ABCD":
        resident.visible(by("need", need_id=cycle["needs"][name]))
    resident.shot("2-my-orders")


@after("test_a_resident_orders_from_the_menu_and_in_own_words_and_cancels")
def test_staff_approve_and_reject_in_the_queue_and_see_the_offers_scored(cycle, people, step):
    staff, needs = people["staff"], cycle["needs"]
    sign_in(staff, cycle["staff_phone"])
    for name in "ACD":
        staff.visible(by("pending-need", need_id=needs[name]))
    assert staff.count(by("pending-need", need_id=needs["B"])) == 0  # cancelled: nothing to review
    staff.shot("3-review-queue")
    for name in "AC":
        staff.click(f'{by("pending-need", need_id=needs[name])} {by("approve")}')
        staff.gone(by("pending-need", need_id=needs[name]))
    rejected = by("pending-need", need_id=needs["D"])
    staff.click(f"{rejected} {by('reject')}")
    staff.fill(f"{rejected} [name=reason]", "不属于志愿服务范围，已转交社区")
    staff.click(f"{rejected} {by('confirm-reject')}")
    staff.gone(rejected)

    staff.click(by("nav-board"))
    for name in "AC":
        card = by("board-need", need_id=needs[name])
        score = staff.text(f"{card} {by('offer-row')} {by('offer-score')}")
        assert float(score) > 0
        assert staff.text(f"{card} {by('order-level')}")
    staff.shot("3-dispatch-board")


@after("test_staff_approve_and_reject_in_the_queue_and_see_the_offers_scored")
def test_the_volunteer_declines_one_offer_accepts_another_serves_and_gets_a_certificate(cycle, people, step):
    volunteer, needs = people["volunteer"], cycle["needs"]
    volunteer.click(by("nav-tasks"))
    declined = by("offer", need_id=needs["C"])
    volunteer.visible(declined)
    volunteer.visible(by("offer", need_id=needs["A"]))
    volunteer.shot("4-offers")
    volunteer.click(f"{declined} {by('decline')}")
    volunteer.fill(f"{declined} [name=reason]", "这周在外地")
    volunteer.click(f"{declined} {by('confirm-decline')}")
    volunteer.gone(declined)

    volunteer.click(f'{by("offer", need_id=needs["A"])} {by("accept")}')
    # The resident's contact is shown while the service is the volunteer's to do.
    volunteer.wait_text(by("assignment", need_id=needs["A"], status="assigned"), cycle["resident_phone"])
    # The browser's location goes with the check-in (granted, at the station).
    volunteer.click(f'{by("assignment", need_id=needs["A"])} {by("check-in")}')
    serving = by("assignment", need_id=needs["A"], status="in_service")
    volunteer.visible(serving)
    time.sleep(2.5)  # a few seconds of service: the test stack credits hours by the 1.2 s
    volunteer.fill(f"{serving} [name=summary]", "宣讲了防诈骗知识，老人们听得很认真")
    volunteer.click(f"{serving} {by('check-out')}")
    volunteer.visible(by("assignment", need_id=needs["A"], status="completed"))
    volunteer.shot("4-served")

    volunteer.click(by("nav-hours"))
    assert float(volunteer.text(f'{by("total-hours")} strong')) > 0
    volunteer.click(by("issue-certificate"))
    assert volunteer.text(by("certificate-number")).strip()
    volunteer.click(by("download-certificate"))
    pdf = volunteer.download(".pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    volunteer.shot("4-hours-and-certificate")


@after("test_the_volunteer_declines_one_offer_accepts_another_serves_and_gets_a_certificate")
def test_the_resident_follows_the_order_to_completion_and_rates_it(cycle, people, step):
    resident, need = people["resident"], cycle["needs"]["A"]
    resident.click(f'{by("need", need_id=need)} a')
    for status in ("submitted", "dispatching", "assigned", "in_service", "completed"):
        resident.visible(f'{by("history")} [data-status="{status}"]')
    resident.wait_text(by("need-detail"), "志愿者小王")  # who served
    form = by("rating-form")
    resident.check(by("star-2"))
    resident.check(by("tag-late"))
    resident.fill(f"{form} [name=comment]", "来晚了半小时")
    resident.shot("5-rating")

    def rated():
        # The ratings service may hear of the completion a moment after the resident's
        # page does: then the rating is refused (409, shown) and sent again.
        resident.click(by("rate"))
        resident.visible(f'{by("rated")}, {form} {by("error")}')
        return resident.count(by("rated")) == 1

    wait_for(rated, 10, interval=0.5, message="the rating to be taken")
    resident.visible(f'{by("history")} [data-status="rated"]')
    resident.shot("5-rated")


@after("test_the_resident_follows_the_order_to_completion_and_rates_it")
def test_staff_dispatch_the_declined_need_by_hand_and_resolve_the_follow_up(cycle, people, step):
    staff, needs = people["staff"], cycle["needs"]
    staff.click(by("nav-board"))
    card = by("board-need", need_id=needs["C"])
    rows = f"{card} {by('offer-row')}"
    volunteer_id = staff.until(lambda: next((row.get_attribute("data-volunteer-id") for row in staff.elements(rows)
                                             if "志愿者小王" in row.text), None), "the volunteer's declined offer")
    staff.choose(f"{card} {by('dispatch-target')}", f"volunteer:{volunteer_id}")
    staff.fill(f"{card} [name=note]", "电话联系后改期，由小王服务")
    staff.click(f"{card} {by('dispatch')}")
    staff.wait_text(card, "人工派单")
    staff.shot("6-manual-dispatch")

    staff.click(by("nav-follow-ups"))
    follow_up = by("follow-up", need_id=needs["A"])
    staff.wait_text(follow_up, "late")
    staff.fill(f"{follow_up} [name=note]", "已电话回访，志愿者已致歉")
    staff.shot("6-follow-up")
    staff.click(f"{follow_up} {by('resolve')}")
    staff.gone(follow_up)

    volunteer = people["volunteer"]
    volunteer.click(by("nav-tasks"))
    volunteer.visible(by("offer", need_id=needs["C"]))  # the offer made by hand reaches the volunteer


@after("test_staff_dispatch_the_declined_need_by_hand_and_resolve_the_follow_up")
def test_the_dashboard_shows_the_figures_as_charts_for_a_site_and_a_period(cycle, people, step):
    staff = people["staff"]
    staff.click(by("nav-dashboard"))
    staff.visible(by("chart-by-category"))
    staff.shot("7-dashboard")
    filters = by("dashboard-filters")
    staff.choose(f"{filters} [name=site_id]", cycle["station"])

    def station_figures():
        staff.click(by("preset-7"))
        time.sleep(0.3)
        return (staff.attribute(by("dashboard"), "data-site") == cycle["station"]
                and staff.text(f'{by("kpi-needs_submitted")} .value') == "4"
                and staff.text(f'{by("kpi-average_rating")} .value') == "2")

    wait_for(station_figures, 10, interval=0.5, message="the station's figures")
    for name in ("by-category", "by-site", "hours", "ratings", "fill-rate", "acceptance"):
        canvas = staff.visible(f'{by(f"chart-{name}")} canvas')
        assert staff.evaluate("return Boolean(window.Chart.getChart(arguments[0]))", canvas), name
    assert staff.attribute(by("chart-hours"), "data-points") == "7"  # the last 7 days, a day each

    def plotted(name):
        canvas = staff.visible(f'{by(f"chart-{name}")} canvas')
        return staff.evaluate("return window.Chart.getChart(arguments[0]).data.datasets[0].data", canvas)

    assert plotted("hours")[-1] > 0  # served today (seconds of service here: a small figure)
    stars = plotted("ratings")
    assert len(stars) == 5 and stars[1] >= 1  # the resident's two stars
    staff.shot("7-dashboard-station")

    # English on a switch, kept across visits; Chinese again for whoever comes next.
    staff.click(by("language"))
    staff.until(lambda: staff.evaluate("return document.documentElement.lang") == "en" or None, "English")
    staff.wait_text(by("nav-dashboard"), "Dashboard")
    staff.driver.refresh()
    staff.visible(by("chart-by-category"))
    staff.wait_text(by("nav-dashboard"), "Dashboard")
    staff.shot("7-dashboard-english")
    staff.click(by("language"))
    staff.wait_text(by("nav-dashboard"), "数据看板")


def test_both_languages_say_everything_and_no_request_leaves_the_gateway(people):
    staff = people["staff"]
    staff.open()
    missing = staff.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/console/i18n.js').then(({ dictionaries }) => {
            const keys = (d) => new Set(Object.keys(d).filter((k) => !k.startsWith('category.')));
            const zh = keys(dictionaries.zh), en = keys(dictionaries.en);
            done([...zh].filter((k) => !en.has(k)).concat([...en].filter((k) => !zh.has(k))));
        });""")
    assert missing == []
    for person in people.values():
        assert person.outside() == [], person.name
        assert person.requests, person.name
        assert person.problems == [], (person.name, person.problems)
