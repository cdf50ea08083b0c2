// Staff: the needs waiting for review, the dispatch board (orders, their offers with
// scores, escalation, unfilled needs, manual dispatch) and the follow-ups of poor ratings.
import { get, post } from "./api.js";
import { t } from "./i18n.js";
import { h, replace, field, input, select, button, action, badge, card, empty, when } from "./ui.js";
import { reference, siteName, categoryName } from "./reference.js";

const BOARD_STATUSES = ["unfilled", "dispatching", "assigned", "in_service"];
const volunteerNames = new Map();

async function volunteerName(id) {
  if (!volunteerNames.has(id)) {
    volunteerNames.set(id, get(`/volunteers/${id}`).then((v) => `${v.name} (${v.number})`).catch(() => id.slice(0, 8)));
  }
  return volunteerNames.get(id);
}

function needSummary(ref, need) {
  return [
    h("div", { class: "row" }, h("a", { href: `#/need/${need.id}` }, h("strong", {}, need.title)), badge(need.status)),
    h("div", { class: "muted" }, [categoryName(ref, need.category), siteName(ref, need.site_id),
      `${t(`group.${need.beneficiary_group}`)} × ${need.beneficiaries}`, t(`urgency.${need.urgency}`), when(need.created_at)].join(" · ")),
    need.description ? h("p", {}, need.description) : null,
    need.possible_duplicate ? h("p", { class: "warning" }, t("review.possibleDuplicate")) : null,
  ];
}

// Re-renders a list only when what it shows has changed, so typing is never lost.
function refresher(container, load, draw, emptyText, signatureOf = (i) => [i.id, i.status]) {
  let shown = null;
  return async () => {
    const items = await load();
    const signature = JSON.stringify(items.map(signatureOf));
    if (signature === shown) return;
    shown = signature;
    replace(container, items.length ? await Promise.all(items.map(draw)) : empty(emptyText));
  };
}

export async function review({ main, every }) {
  const ref = await reference();
  const list = h("section", { class: "list", "data-testid": "review-queue" });
  replace(main, h("h2", {}, t("review.title")), list);
  const refresh = refresher(list, async () => (await get("/needs", { status: "submitted", page_size: 50 })).items, (need) => {
    const reject = h("form", { class: "inline", hidden: true },
      field(t("field.reason"), input("reason", { required: true, maxlength: 500 })),
      h("button", { type: "submit", class: "danger", "data-testid": "confirm-reject" }, t("review.reject")));
    const item = card({ "data-testid": "pending-need", "data-need-id": need.id }, needSummary(ref, need),
      h("div", { class: "buttons" },
        button(t("review.approve"), action(async () => {
          await post(`/needs/${need.id}/approve`, {});
          await refresh();
        }, null), { class: "primary", "data-testid": "approve" }),
        button(t("review.reject"), () => { reject.hidden = false; reject.elements.reason.focus(); }, { "data-testid": "reject" })),
      reject);
    reject.addEventListener("submit", (event) => {
      event.preventDefault();
      action(async () => {
        await post(`/needs/${need.id}/reject`, { reason: reject.elements.reason.value.trim() });
        await refresh();
      }, item)(event);
    });
    return item;
  }, t("review.none"));
  await refresh();
  every(5000, () => refresh().catch(() => {}));
}

export async function board({ main, every }) {
  const ref = await reference();
  const list = h("section", { class: "list", "data-testid": "board" });
  const counts = h("div", { class: "chips", "data-testid": "board-counts" });
  replace(main, h("h2", {}, t("board.title")), counts, list);
  const load = async () => {
    const page = await get("/needs", { status: BOARD_STATUSES.join(","), page_size: 50 });
    // Unfilled needs first: they wait for staff.
    const items = page.items.sort((a, b) => BOARD_STATUSES.indexOf(a.status) - BOARD_STATUSES.indexOf(b.status));
    replace(counts, BOARD_STATUSES.map((s) => h("span", { class: `chip status-${s}` },
      `${t(`status.${s}`)} ${items.filter((n) => n.status === s).length}`)));
    const orders = await Promise.all(items.map((n) => get(`/needs/${n.id}/order`).catch(() => null)));
    return items.map((need, i) => ({ ...need, order: orders[i] }));
  };
  const refresh = refresher(list, load, (need) => boardCard(ref, need, refresh), t("board.none"),
    (n) => [n.id, n.status, n.order?.level, n.order?.offers.map((o) => o.status)]);
  await refresh();
  every(5000, () => refresh().catch(() => {}));
}

async function boardCard(ref, need, refresh) {
  const order = need.order;
  const item = card({ "data-testid": "board-need", "data-need-id": need.id, "data-status": need.status }, needSummary(ref, need));
  if (!order) return item;
  item.append(h("div", { class: "muted", "data-testid": "order-level" },
    `${t("need.dispatchLevel")}: ${t(`level.${order.level}`)} · ${siteName(ref, order.level_site_id)}`,
    order.level !== "station" ? h("span", { class: "chip warning" }, t("board.escalated")) : null));
  const rows = await Promise.all(order.offers.map(async (offer) => h("tr", { "data-testid": "offer-row", "data-volunteer-id": offer.volunteer_id },
    h("td", {}, await volunteerName(offer.volunteer_id), offer.manual ? h("span", { class: "chip" }, t("tasks.manual")) : null),
    h("td", {}, badge(`offer-${offer.status}`)),
    h("td", { class: "num", "data-testid": "offer-score" }, offer.score === null || offer.score === undefined ? "—" : offer.score.toFixed(3)),
    h("td", { class: "muted small" }, Object.entries(offer.score_parts || {}).map(([k, v]) => `${t(`score.${k}`)} ${Number(v).toFixed(2)}`).join(" · ")))));
  item.append(order.offers.length
    ? h("div", { class: "scroll" }, h("table", { class: "table", "data-testid": "offers-table" },
      h("thead", {}, h("tr", {}, [t("board.volunteer"), t("board.offerStatus"), t("board.score"), t("board.scoreParts")].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows)))
    : empty(t("board.noOffers")));
  if (need.status !== "in_service") item.append(await dispatchForm(ref, need, order, refresh));
  return item;
}

// Manual dispatch: to a volunteer already offered, a team of the need's site, or any volunteer by id.
async function dispatchForm(ref, need, order, refresh) {
  const teams = (await get("/teams", { site_id: need.site_id }).catch(() => ({ items: [] }))).items;
  const offered = [...new Set(order.offers.map((o) => o.volunteer_id))];
  const options = [
    ...await Promise.all(offered.map(async (id) => ({ value: `volunteer:${id}`, label: await volunteerName(id) }))),
    ...teams.map((team) => ({ value: `team:${team.id}`, label: `${t("board.team")}: ${team.name}` })),
    { value: "", label: t("board.byId") },
  ];
  const form = h("form", { class: "inline dispatch", "data-testid": "dispatch-form" },
    h("strong", {}, need.status === "assigned" ? t("board.reassign") : t("board.dispatch")),
    field(t("board.to"), select("target", options, { "data-testid": "dispatch-target" })),
    field(t("board.volunteerId"), input("volunteer_id", { maxlength: 36, "data-testid": "dispatch-volunteer-id" })),
    field(t("field.note"), input("note", { maxlength: 500 })),
    h("button", { type: "submit", class: "primary", "data-testid": "dispatch" }, t("board.dispatch")));
  // The id field is for "by volunteer id" only.
  const byId = form.querySelector('[data-field="volunteer_id"]');
  const showById = () => { byId.hidden = form.elements.target.value !== ""; };
  form.elements.target.addEventListener("change", showById);
  showById();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    action(async () => {
      const [kind, id] = form.elements.target.value.split(":");
      const body = kind === "team" ? { team_id: id } : { volunteer_id: id || form.elements.volunteer_id.value.trim() };
      body.note = form.elements.note.value.trim() || null;
      await post(`/needs/${need.id}/dispatch`, body);
      await refresh();
    }, form)(event);
  });
  return form;
}

export async function followUps({ main, every }) {
  const ref = await reference();
  const list = h("section", { class: "list", "data-testid": "follow-ups" });
  replace(main, h("h2", {}, t("followUps.title")), list);
  const refresh = refresher(list, async () => (await get("/follow-ups", { page_size: 50 })).items, async (followUp) => {
    const need = await get(`/needs/${followUp.need_id}`).catch(() => null);
    const form = h("form", { class: "inline" },
      field(t("field.note"), input("note", { required: true, maxlength: 1000 })),
      h("button", { type: "submit", class: "primary", "data-testid": "resolve" }, t("followUps.resolve")));
    const item = card({ "data-testid": "follow-up", "data-need-id": followUp.need_id },
      need ? needSummary(ref, need) : h("a", { href: `#/need/${followUp.need_id}` }, followUp.need_id),
      h("p", {}, `${t("followUps.reason")}: ${followUp.reason}`),
      h("div", { class: "muted" }, `${siteName(ref, followUp.responsible_site_id)} · ${when(followUp.created_at)}`),
      form);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      action(async () => {
        await post(`/follow-ups/${followUp.id}/resolve`, { note: form.elements.note.value.trim() });
        await refresh();
      }, form)(event);
    });
    return item;
  }, t("followUps.none"));
  await refresh();
  every(8000, () => refresh().catch(() => {}));
}
