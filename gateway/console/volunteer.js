// Volunteers: their profile and weekly availability, offers to accept or decline, the
// services they are assigned (check-in and check-out with the browser's location when
// allowed), their hours and a certificate to download.
import { get, post, patch, request, ApiError } from "./api.js";
import { t } from "./i18n.js";
import { h, replace, field, input, select, button, action, badge, card, empty, when, values, notice } from "./ui.js";
import { reference, siteName, categoryName, stationOptions } from "./reference.js";

const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

async function myProfile() {
  try {
    return await get("/volunteers/me");
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

// The browser's position when the person allows it; otherwise none (the API takes either).
function position() {
  if (!navigator.geolocation) return Promise.resolve({});
  return new Promise((resolve) => navigator.geolocation.getCurrentPosition(
    (p) => resolve({ lat: Number(p.coords.latitude.toFixed(6)), lon: Number(p.coords.longitude.toFixed(6)) }),
    () => resolve({}), { timeout: 8000, maximumAge: 60000 }));
}

export async function profile({ main }) {
  const [ref, current] = await Promise.all([reference(), myProfile()]);
  const slots = current?.availability || {};
  const form = h("form", { class: "panel", "data-testid": "profile-form" },
    h("h2", {}, t("profile.title")),
    current ? h("p", { class: "muted", "data-testid": "volunteer-number" }, `${t("profile.number")}: ${current.number}`)
      : h("p", { class: "notice" }, t("profile.first")),
    field(t("field.name"), input("name", { required: true, maxlength: 64, value: current?.name })),
    field(t("field.phone"), input("phone", { type: "tel", value: current?.phone })),
    field(t("field.site"), select("site_id", stationOptions(ref), { "data-testid": "profile-site" })),
    h("fieldset", { "data-field": "skills" }, h("legend", {}, t("profile.skills")),
      ref.categories.map((c) => h("label", { class: "tag" }, h("input", {
        type: "checkbox", name: "skill", value: c.code, "data-testid": `skill-${c.code}`,
        checked: current?.skills.includes(c.code),
      }), categoryName(ref, c.code))),
      h("span", { class: "field-error" })),
    h("fieldset", { class: "grid2", "data-field": "location" }, h("legend", {}, t("profile.location")),
      field(t("field.lat"), input("lat", { type: "number", step: "any", min: -90, max: 90, value: current?.lat })),
      field(t("field.lon"), input("lon", { type: "number", step: "any", min: -180, max: 180, value: current?.lon })),
      button(t("profile.useLocation"), (event) => action(async () => {
        const here = await position();
        if (here.lat === undefined) throw new ApiError(0, { code: "no_location", message: "" });
        form.elements.lat.value = here.lat;
        form.elements.lon.value = here.lon;
      }, form)(event), { "data-testid": "use-location" })),
    h("fieldset", { class: "availability", "data-field": "availability" }, h("legend", {}, t("profile.availability")),
      WEEKDAYS.map((day) => {
        const slot = (slots[day] || [])[0];
        return h("div", { class: "slot", "data-day": day },
          h("label", { class: "tag" }, h("input", { type: "checkbox", name: `on-${day}`, "data-testid": `day-${day}`, checked: Boolean(slot) }),
            t(`weekday.${day}`)),
          h("input", { type: "time", name: `from-${day}`, "aria-label": t("profile.from"), value: slot ? slot[0] : "08:00" }),
          h("input", { type: "time", name: `to-${day}`, "aria-label": t("profile.to"), value: slot ? (slot[1] === "24:00" ? "23:59" : slot[1]) : "18:00" }));
      }),
      h("span", { class: "field-error" })),
    h("button", { type: "submit", class: "primary", "data-testid": "save-profile" }, t("profile.save")));
  if (current) form.elements.site_id.value = current.site_id;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    action(async () => {
      const data = values(form);
      const availability = {};
      for (const day of WEEKDAYS) {
        if (!form.elements[`on-${day}`].checked) continue;
        const end = data[`to-${day}`] === "23:59" ? "24:00" : data[`to-${day}`];
        availability[day] = [[data[`from-${day}`], end]];
      }
      const body = {
        name: data.name, phone: data.phone || null, site_id: data.site_id, availability,
        skills: [...form.querySelectorAll("input[name=skill]:checked")].map((c) => c.value),
        lat: data.lat === "" ? null : data.lat, lon: data.lon === "" ? null : data.lon,
      };
      if (current) await patch(`/volunteers/${current.id}`, body);
      else await post("/volunteers", body);
      notice(t("profile.saved"));
      await profile({ main });
    }, form)(event);
  });
  replace(main, form);
}

export async function tasks({ main, every, go }) {
  const [ref, me] = await Promise.all([reference(), myProfile()]);
  if (!me) {
    go("profile");
    return;
  }
  const offers = h("section", { class: "list", "data-testid": "offers" });
  const assignments = h("section", { class: "list", "data-testid": "assignments" });
  replace(main, h("h2", {}, t("tasks.offers")), offers, h("h2", {}, t("tasks.assignments")), assignments);
  const shown = { offers: "", assignments: "" };

  function describe(need) {
    if (!need) return null;
    return [
      h("strong", {}, need.title),
      h("div", { class: "muted" }, [categoryName(ref, need.category), siteName(ref, need.site_id),
        need.beneficiary_group ? `${t(`group.${need.beneficiary_group}`)} × ${need.beneficiaries}` : null,
        need.urgency ? t(`urgency.${need.urgency}`) : null].filter(Boolean).join(" · ")),
      need.address ? h("div", {}, `${t("field.address")}: ${need.address}`) : null,
      need.contact_phone ? h("div", {}, `${t("field.contactPhone")}: ${need.contact_phone}`) : null,
      need.description ? h("p", {}, need.description) : null,
    ];
  }

  function offerCard(offer) {
    const decline = h("form", { class: "inline", hidden: true },
      field(t("field.reason"), input("reason", { maxlength: 500 })),
      h("button", { type: "submit", class: "danger", "data-testid": "confirm-decline" }, t("tasks.decline")));
    const item = card({ "data-testid": "offer", "data-offer-id": offer.id, "data-need-id": offer.need_id },
      describe(offer.need),
      h("div", { class: "muted" }, `${t("tasks.deadline")}: ${when(offer.deadline)}${offer.manual ? ` · ${t("tasks.manual")}` : ""}`),
      h("div", { class: "buttons" },
        button(t("tasks.accept"), action(async () => {
          await post(`/offers/${offer.id}/accept`);
          notice(t("tasks.accepted"));
          await refresh();
        }, null), { class: "primary", "data-testid": "accept" }),
        button(t("tasks.decline"), () => { decline.hidden = false; }, { "data-testid": "decline" })),
      decline);
    decline.addEventListener("submit", (event) => {
      event.preventDefault();
      action(async () => {
        await post(`/offers/${offer.id}/decline`, { reason: decline.elements.reason.value.trim() || null });
        await refresh();
      }, item)(event);
    });
    return item;
  }

  function assignmentCard(assignment) {
    const item = card({ "data-testid": "assignment", "data-need-id": assignment.need_id, "data-status": assignment.status },
      h("div", { class: "row" }, h("a", { href: `#/need/${assignment.need_id}` }, t("tasks.details")), badge(assignment.status)),
      describe(assignment.need));
    if (assignment.status === "assigned") {
      item.append(button(t("tasks.checkIn"), action(async () => {
        const record = await post(`/needs/${assignment.need_id}/check-in`, await position());
        notice(record.flagged ? t("tasks.checkedInFlagged") : t("tasks.checkedIn"));
        await refresh();
      }, item), { class: "primary", "data-testid": "check-in" }));
    }
    if (assignment.status === "in_service") {
      const form = h("form", { class: "inline", "data-testid": "check-out-form" },
        field(t("field.summary"), h("textarea", { name: "summary", rows: 2, required: true, maxlength: 2000 })),
        field(t("field.served"), input("beneficiaries_served", { type: "number", min: 0, value: assignment.need?.beneficiaries ?? 1, required: true })),
        h("button", { type: "submit", class: "primary", "data-testid": "check-out" }, t("tasks.checkOut")));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        action(async () => {
          const record = await post(`/needs/${assignment.need_id}/check-out`, { ...values(form), ...(await position()) });
          notice(`${t("tasks.checkedOut")} ${t("hours.credited", { hours: record.hours ?? 0 })}`);
          await refresh();
        }, form)(event);
      });
      item.append(form);
    }
    return item;
  }

  async function refresh() {
    const [pending, mine] = await Promise.all([get("/offers", { status: "pending" }), get("/assignments")]);
    const offerSignature = JSON.stringify(pending.items.map((o) => o.id));
    if (offerSignature !== shown.offers) {
      shown.offers = offerSignature;
      replace(offers, pending.items.length ? pending.items.map(offerCard) : empty(t("tasks.noOffers")));
    }
    const open = mine.items.filter((a) => ["assigned", "in_service"].includes(a.status));
    const done = mine.items.filter((a) => !open.includes(a)).slice(0, 10);
    const assignmentSignature = JSON.stringify(mine.items.map((a) => [a.id, a.status]));
    if (assignmentSignature !== shown.assignments) {
      shown.assignments = assignmentSignature;
      replace(assignments, open.length || done.length ? [...open, ...done].map(assignmentCard) : empty(t("tasks.noAssignments")));
    }
  }
  await refresh();
  every(4000, () => refresh().catch(() => {}));
}

export async function hours({ main, go }) {
  const [ref, me] = await Promise.all([reference(), myProfile()]);
  if (!me) {
    go("profile");
    return;
  }
  const ledger = await get(`/volunteers/${me.id}/hours`);
  const certificate = h("section", { class: "panel", "data-testid": "certificate" });
  replace(main,
    h("section", { class: "panel" },
      h("h2", {}, t("hours.title")),
      h("p", { class: "figure", "data-testid": "total-hours" }, h("strong", {}, String(ledger.total_hours)), ` ${t("hours.unit")}`),
      h("table", { class: "table", "data-testid": "hours-records" },
        h("thead", {}, h("tr", {}, [t("hours.date"), t("field.title"), t("hours.hours"), t("hours.rating")].map((c) => h("th", {}, c)))),
        h("tbody", {}, ledger.records.map((r) => h("tr", {},
          h("td", {}, r.service_date),
          h("td", {}, r.record ? `${r.record.title} · ${siteName(ref, r.record.site_id)}` : t(`hours.kind.${r.kind}`)),
          h("td", {}, String(r.hours)),
          h("td", {}, r.record?.rating ? `${r.record.rating.stars}★` : "—")))))),
    certificate);
  replace(certificate, h("h2", {}, t("certificate.title")), h("p", { class: "muted" }, t("certificate.hint")),
    button(t("certificate.issue"), action(async () => {
      const issued = await get(`/volunteers/${me.id}/certificate`);
      replace(certificate, h("h2", {}, t("certificate.title")),
        h("dl", { class: "facts" },
          h("dt", {}, t("certificate.number")), h("dd", { "data-testid": "certificate-number" }, issued.certificate_number),
          h("dt", {}, t("hours.title")), h("dd", {}, `${issued.total_hours} ${t("hours.unit")}`),
          h("dt", {}, t("certificate.issued")), h("dd", {}, when(issued.issued_at))),
        button(t("certificate.download"), action(() => download(me), certificate),
          { class: "primary", "data-testid": "download-certificate" }));
    }, certificate), { class: "primary", "data-testid": "issue-certificate" }));
}

// The PDF needs the bearer token, so it is fetched and handed to the browser as a file.
async function download(volunteer) {
  const response = await request("GET", `/volunteers/${volunteer.id}/certificate`, { query: { format: "pdf" }, raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: `certificate-${volunteer.number}.pdf` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
