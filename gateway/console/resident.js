// Residents (and collectors, on a resident's behalf): order from the service menu of a
// station or in their own words, follow each order, cancel it, rate the service.
import { get, post } from "./api.js";
import { t } from "./i18n.js";
import { h, replace, field, input, select, button, action, badge, card, empty, when, values, newKey, notice } from "./ui.js";
import { reference, siteName, categoryName, stationOptions, categoryOptions } from "./reference.js";

const CANCELLABLE = ["submitted", "dispatching", "assigned", "unfilled"];
const GROUPS = ["elderly_alone", "left_behind_child", "solitary", "disabled", "low_income", "general"];
const TAGS = ["punctual", "patient", "professional", "kind", "skilled", "late", "no_show", "rude"];
const OWN_WORDS = "";

export async function needs({ main, every, go }) {
  const ref = await reference();
  const list = h("div", { class: "list", "data-testid": "my-needs" });
  replace(main,
    h("div", { class: "heading" }, h("h2", {}, t("needs.title")),
      button(t("nav.order"), () => go("order"), { class: "primary", "data-testid": "new-order" })),
    list);
  let shown = "";
  async function refresh() {
    const page = await get("/needs", { page_size: 50 });
    const signature = JSON.stringify(page.items.map((n) => [n.id, n.status]));
    if (signature === shown) return;
    shown = signature;
    replace(list, page.items.length ? page.items.map((need) => card({ "data-testid": "need", "data-need-id": need.id },
      h("a", { href: `#/need/${need.id}`, class: "card-link" },
        h("div", { class: "row" }, h("strong", {}, need.title), badge(need.status)),
        h("div", { class: "muted" }, `${categoryName(ref, need.category)} · ${siteName(ref, need.site_id)} · ${when(need.created_at)}`))))
      : empty(t("needs.none")));
  }
  await refresh();
  every(4000, () => refresh().catch(() => {}));
}

export async function order({ main, user, go }) {
  const ref = await reference();
  const me = await get("/me");
  const menu = h("div", { class: "menu", "data-testid": "menu", role: "radiogroup" });
  const ownWords = h("div", { class: "own-words" },
    field(t("field.category"), select("category", categoryOptions(ref))));
  const form = h("form", { class: "panel", "data-testid": "order-form" },
    h("h2", {}, t("order.title")),
    field(t("field.site"), select("site_id", stationOptions(ref, user.role === "resident" ? null : user.site_id),
      { "data-testid": "order-site" })),
    h("h3", {}, t("order.menu")), menu, ownWords,
    field(t("field.title"), input("title", { required: true, minlength: 2, maxlength: 60 })),
    field(t("field.description"), h("textarea", { name: "description", rows: 3, maxlength: 2000 })),
    field(t("field.address"), input("address", { required: true, maxlength: 200 })),
    field(t("field.contactPhone"), input("contact_phone", { type: "tel", required: true, value: me.phone })),
    user.role === "resident" ? null : h("fieldset", { class: "grid2" }, h("legend", {}, t("order.onBehalfOf")),
      field(t("field.name"), input("behalf_name", { required: true })),
      field(t("field.phone"), input("behalf_phone", { type: "tel", required: true }))),
    h("div", { class: "grid2" },
      field(t("field.beneficiaryGroup"), select("beneficiary_group", GROUPS.map((g) => ({ value: g, label: t(`group.${g}`) })))),
      field(t("field.beneficiaries"), input("beneficiaries", { type: "number", min: 1, max: 500, value: 1, required: true }))),
    field(t("field.urgency"), select("urgency", ["normal", "urgent"].map((u) => ({ value: u, label: t(`urgency.${u}`) })))),
    h("button", { type: "submit", class: "primary", "data-testid": "submit-order" }, t("order.submit")));
  let projectId = OWN_WORDS;
  const siteSelect = form.elements.site_id;

  function choose(project) {
    projectId = project ? project.id : OWN_WORDS;
    menu.querySelectorAll("button").forEach((b) => b.setAttribute("aria-checked", String(b.dataset.projectId === projectId)));
    ownWords.hidden = Boolean(project);
    if (project) {
      form.elements.category.value = project.category;
      form.elements.title.value = project.name;
    }
  }
  async function loadMenu() {
    const siteId = siteSelect.value;
    const projects = (await get("/projects", { site_id: siteId })).items;
    menu.dataset.site = siteId;
    replace(menu,
      projects.map((p) => h("button", {
        type: "button", role: "radio", class: "menu-item", "data-project-id": p.id, "data-testid": "project",
        onclick: () => choose(p),
      }, h("strong", {}, p.name), h("span", { class: "muted" }, `${categoryName(ref, p.category)}${p.team_name ? ` · ${p.team_name}` : ""}`))),
      h("button", { type: "button", role: "radio", class: "menu-item", "data-project-id": OWN_WORDS, "data-testid": "own-words",
        onclick: () => { choose(null); form.elements.title.focus(); } }, h("strong", {}, t("order.ownWords")),
      h("span", { class: "muted" }, t("order.ownWordsHint"))));
    choose(null);
  }
  siteSelect.addEventListener("change", action(loadMenu, form));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    action(async () => {
      const data = values(form);
      const body = {
        site_id: data.site_id, category: data.category, title: data.title, description: data.description,
        address: data.address, contact_phone: data.contact_phone, beneficiary_group: data.beneficiary_group,
        beneficiaries: data.beneficiaries, urgency: data.urgency, channel: "web", project_id: projectId || null,
      };
      if (user.role !== "resident") body.on_behalf_of = { name: data.behalf_name, phone: data.behalf_phone };
      const need = await post("/needs", body, { headers: { "Idempotency-Key": newKey() } });
      notice(t("order.done"));
      go("need", need.id);
    }, form)(event);
  });
  replace(main, form);
  await loadMenu();
}

export async function need({ main, arg, user, every }) {
  const ref = await reference();
  const summary = h("section", { class: "panel", "data-testid": "need-detail" });
  const actions = h("section", { class: "actions" });
  replace(main, summary, actions);
  let status = null;
  let rated = false;

  async function refresh() {
    const item = await get(`/needs/${arg}`);
    let order = null;
    if (!["submitted", "rejected"].includes(item.status)) {
      order = await get(`/needs/${arg}/order`).catch(() => null);
    }
    const volunteer = item.volunteer_id ? await get(`/volunteers/${item.volunteer_id}`).catch(() => null) : null;
    replace(summary,
      h("div", { class: "row" }, h("h2", {}, item.title), badge(item.status)),
      h("dl", { class: "facts" },
        fact(t("field.category"), categoryName(ref, item.category)),
        fact(t("field.site"), siteName(ref, item.site_id)),
        fact(t("field.address"), item.address),
        fact(t("field.contactPhone"), item.contact_phone),
        fact(t("field.beneficiaries"), `${t(`group.${item.beneficiary_group}`)} × ${item.beneficiaries}`),
        fact(t("field.urgency"), t(`urgency.${item.urgency}`)),
        item.description ? fact(t("field.description"), item.description) : null,
        item.rejection_reason ? fact(t("need.rejectionReason"), item.rejection_reason) : null,
        order ? fact(t("need.dispatchLevel"), `${t(`level.${order.level}`)} · ${siteName(ref, order.level_site_id)}`) : null,
        volunteer ? fact(t("need.volunteer"), `${volunteer.name} (${volunteer.number})`) : null),
      h("h3", {}, t("need.history")),
      h("ol", { class: "timeline", "data-testid": "history" }, (item.history || []).map((entry) => h("li", {},
        badge(entry.status), " ", h("span", { class: "muted" }, when(entry.at)), entry.note ? h("div", {}, entry.note) : null))));
    if (item.status !== status) {
      status = item.status;
      replace(actions, actionsFor(item));
    }
  }

  function actionsFor(item) {
    const mine = ["resident", "collector"].includes(user.role);
    const out = [];
    if (item.status === "completed" && mine && !rated) out.push(ratingForm(item));
    if (CANCELLABLE.includes(item.status) && user.role !== "volunteer") out.push(cancelForm(item));
    return out;
  }

  function cancelForm(item) {
    const form = h("form", { class: "panel", "data-testid": "cancel-form" },
      h("h3", {}, t("need.cancel")),
      field(t("field.reason"), input("reason", { maxlength: 500 })),
      h("button", { type: "submit", class: "danger", "data-testid": "cancel" }, t("need.cancel")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      action(async () => {
        await post(`/needs/${item.id}/cancel`, { reason: form.elements.reason.value.trim() || null });
        notice(t("need.cancelled"));
        await refresh();
      }, form)(event);
    });
    return form;
  }

  function ratingForm(item) {
    const form = h("form", { class: "panel", "data-testid": "rating-form" },
      h("h3", {}, t("rating.title")),
      h("div", { class: "stars", role: "radiogroup", "data-field": "stars" },
        [1, 2, 3, 4, 5].map((n) => h("label", { class: "star" },
          h("input", { type: "radio", name: "stars", value: n, "data-testid": `star-${n}`, checked: n === 5 }), `${n}★`)),
        h("span", { class: "field-error" })),
      h("div", { class: "tags", "data-field": "tags" }, TAGS.map((tag) => h("label", { class: "tag" },
        h("input", { type: "checkbox", name: "tag", value: tag, "data-testid": `tag-${tag}` }), t(`tag.${tag}`))),
      h("span", { class: "field-error" })),
      field(t("field.comment"), h("textarea", { name: "comment", rows: 2, maxlength: 500 })),
      h("button", { type: "submit", class: "primary", "data-testid": "rate" }, t("rating.submit")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      action(async () => {
        const stars = Number(form.querySelector("input[name=stars]:checked").value);
        const tags = [...form.querySelectorAll("input[name=tag]:checked")].map((c) => c.value);
        await post(`/needs/${item.id}/rating`, { stars, tags, comment: form.elements.comment.value.trim() || null });
        rated = true;
        replace(actions, h("p", { class: "notice", "data-testid": "rated" }, t("rating.done")));
      }, form)(event);
    });
    return form;
  }

  await refresh();
  every(3000, () => refresh().catch(() => {}));
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}
