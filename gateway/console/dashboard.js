// The center's work at a glance: the figures of GET /stats for a site and a period, as
// charts (Chart.js, served by the gateway) with each chart's numbers in a table beside it.
import { get } from "./api.js";
import { t, language } from "./i18n.js";
import { h, replace, field, input, select, button, action } from "./ui.js";
import { reference, siteName, categoryName, inside } from "./reference.js";

const PRESETS = [7, 30, 90, 365];
const STARS = [1, 2, 3, 4, 5];
const COLORS = ["#c8102e", "#e8a33d", "#2e7d6b", "#3b6ea8", "#7a4fa3", "#8a8a8a"];
let charts = [];

function isoDate(date) {
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 10);
}

// Dates are the center's (China Standard Time, as /stats reads them), whatever the
// browser's own time zone: near midnight the two disagree on what "today" is.
const CENTER_DATE = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit" });

function centerToday() {
  return new Date(`${CENTER_DATE.format(new Date())}T00:00:00`);
}

function daysBefore(days, from = centerToday()) {
  return new Date(from.getFullYear(), from.getMonth(), from.getDate() - days);
}

// The period cut into at most about a dozen spans (days, weeks or months): the points of
// the hours chart, each the sum of the per-day figures /stats gives for its days.
function spans(fromIso, toIso) {
  const from = new Date(`${fromIso}T00:00:00`);
  const to = new Date(`${toIso}T00:00:00`);
  const days = Math.round((to - from) / 86400000) + 1;
  const out = [];
  if (days <= 14 || days > 14 * 31) {
    const step = days <= 14 ? 1 : Math.ceil(days / 12);
    for (let d = 0; d < days; d += step) {
      const start = new Date(from.getFullYear(), from.getMonth(), from.getDate() + d);
      const end = new Date(from.getFullYear(), from.getMonth(), from.getDate() + Math.min(d + step, days) - 1);
      out.push([isoDate(start), isoDate(end)]);
    }
  } else if (days <= 120) {
    for (let d = 0; d < days; d += 7) {
      const start = new Date(from.getFullYear(), from.getMonth(), from.getDate() + d);
      const end = new Date(from.getFullYear(), from.getMonth(), from.getDate() + Math.min(d + 7, days) - 1);
      out.push([isoDate(start), isoDate(end)]);
    }
  } else {
    let start = from;
    while (start <= to) {
      const monthEnd = new Date(start.getFullYear(), start.getMonth() + 1, 0);
      const end = monthEnd < to ? monthEnd : to;
      out.push([isoDate(start), isoDate(end)]);
      start = new Date(end.getFullYear(), end.getMonth(), end.getDate() + 1);
    }
  }
  return out;
}

function percent(value) {
  return value === null || value === undefined ? "—" : `${Math.round(value * 100)}%`;
}

function number(value, digits = 1) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits).replace(/\.0+$/, "");
}

export async function render({ main, user }) {
  const ref = await reference();
  const sites = ref.sites.filter((s) => inside(s.id, user.site_id));
  const filters = h("form", { class: "panel filters", "data-testid": "dashboard-filters" },
    field(t("field.site"), select("site_id", sites.map((s) => ({ value: s.id, label: s.name })), { "data-testid": "stats-site" })),
    h("div", { class: "grid2" },
      field(t("dashboard.from"), input("from", { type: "date", value: isoDate(daysBefore(29)), "data-testid": "stats-from" })),
      field(t("dashboard.to"), input("to", { type: "date", value: isoDate(centerToday()), "data-testid": "stats-to" }))),
    h("div", { class: "chips" }, PRESETS.map((days) => button(t("dashboard.lastDays", { days }), () => {
      filters.elements.from.value = isoDate(daysBefore(days - 1));
      filters.elements.to.value = isoDate(centerToday());
      filters.requestSubmit();
    }, { class: "chip", "data-testid": `preset-${days}` }))),
    h("button", { type: "submit", class: "primary", "data-testid": "apply-filters" }, t("dashboard.apply")));
  if (user.site_id) filters.elements.site_id.value = user.site_id;
  const board = h("section", { "data-testid": "dashboard" });
  replace(main, h("h2", {}, t("dashboard.title")), filters, board);
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    action(() => show(ref, board, filters.elements.site_id.value, filters.elements.from.value, filters.elements.to.value), filters)(event);
  });
  await show(ref, board, filters.elements.site_id.value, filters.elements.from.value, filters.elements.to.value);
}

async function show(ref, board, siteId, from, to) {
  const stats = await get("/stats", { site_id: siteId, from, to });
  const days = Object.entries(stats.by_day);
  const series = spans(from, to).map(([start, end]) => ({
    label: start === end ? start.slice(5) : `${start.slice(5)}~${end.slice(5)}`,
    hours: Math.round(days.filter(([day]) => day >= start && day <= end)
      .reduce((sum, [, figures]) => sum + figures.volunteer_hours, 0) * 10000) / 10000,
  }));
  charts.forEach((chart) => chart.destroy());
  charts = [];
  const categories = Object.keys(stats.by_category);
  const siteIds = Object.keys(stats.by_site);
  board.dataset.site = stats.site_id;
  board.dataset.from = stats.from || "";
  board.dataset.to = stats.to || "";
  replace(board,
    h("div", { class: "kpis", "data-testid": "kpis" },
      kpi("needs_submitted", stats.needs_submitted), kpi("needs_completed", stats.needs_completed),
      kpi("services_held", stats.services_held), kpi("volunteer_hours", number(stats.volunteer_hours)),
      kpi("people_served", stats.people_served), kpi("average_rating", number(stats.average_rating, 2)),
      kpi("fill_rate", percent(stats.fill_rate)), kpi("median_minutes_to_acceptance", number(stats.median_minutes_to_acceptance))),
    chart("by-category", t("dashboard.byCategory"), "bar", categories.map((c) => categoryName(ref, c)), [
      { label: t("kpi.needs_submitted"), data: categories.map((c) => stats.by_category[c].needs_submitted) },
      { label: t("kpi.needs_completed"), data: categories.map((c) => stats.by_category[c].needs_completed) }]),
    chart("by-site", t("dashboard.bySite"), "bar", siteIds.map((s) => siteName(ref, s)), [
      { label: t("kpi.needs_submitted"), data: siteIds.map((s) => stats.by_site[s].needs_submitted) },
      { label: t("kpi.needs_completed"), data: siteIds.map((s) => stats.by_site[s].needs_completed) }]),
    chart("hours", t("dashboard.hoursOverTime"), "line", series.map((s) => s.label), [
      { label: t("kpi.volunteer_hours"), data: series.map((s) => s.hours) }]),
    chart("ratings", t("dashboard.ratings"), "bar", STARS.map((n) => "★".repeat(n)), [
      { label: t("dashboard.ratingCount"), data: STARS.map((n) => stats.ratings_by_stars[n]) }]),
    chart("fill-rate", t("dashboard.fillRate"), "bar", siteIds.map((s) => siteName(ref, s)), [
      { label: t("kpi.fill_rate"), data: siteIds.map((s) => stats.by_site[s].fill_rate === null ? null : Math.round(stats.by_site[s].fill_rate * 100)) }]),
    chart("acceptance", t("dashboard.acceptance"), "bar", siteIds.map((s) => siteName(ref, s)), [
      { label: t("kpi.median_minutes_to_acceptance"), data: siteIds.map((s) => stats.by_site[s].median_minutes_to_acceptance) }]));
}

function kpi(name, value) {
  return h("div", { class: "kpi", "data-testid": `kpi-${name}` }, h("span", { class: "value" }, String(value)), h("span", { class: "label" }, t(`kpi.${name}`)));
}

// One figure: a chart when the library is there, always its numbers in a table.
function chart(name, title, type, labels, datasets) {
  const canvas = h("canvas", { "aria-label": title, role: "img" });
  const table = h("table", { class: "table small" },
    h("thead", {}, h("tr", {}, h("th", {}, ""), datasets.map((d) => h("th", {}, d.label)))),
    h("tbody", {}, labels.map((label, i) => h("tr", {}, h("th", {}, label), datasets.map((d) => h("td", { class: "num" }, d.data[i] ?? "—"))))));
  const section = h("section", { class: "panel chart", "data-testid": `chart-${name}`, "data-points": labels.length },
    h("h3", {}, title),
    labels.length ? h("div", { class: "canvas" }, canvas) : h("p", { class: "muted empty" }, t("dashboard.noData")),
    h("details", {}, h("summary", {}, t("dashboard.numbers")), table));
  if (labels.length && window.Chart) {
    charts.push(new window.Chart(canvas, {
      type,
      data: { labels, datasets: datasets.map((d, i) => ({ ...d, backgroundColor: COLORS[i], borderColor: COLORS[i], tension: 0.2 })) },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        locale: language() === "zh" ? "zh-CN" : "en-GB",
        plugins: { legend: { position: "bottom" } }, scales: { y: { beginAtZero: true } },
      },
    }));
  }
  return section;
}
