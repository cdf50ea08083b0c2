// The console's shell: sign-in and registration, the header with the language switch,
// and a hash router that shows each person the views of their role.
import { post, session } from "./api.js";
import { t, language, setLanguage } from "./i18n.js";
import { h, replace, field, input, select, action, values, showError } from "./ui.js";
import * as resident from "./resident.js";
import * as volunteer from "./volunteer.js";
import * as staff from "./staff.js";
import * as dashboard from "./dashboard.js";

// Each view: who may open it, and the nav entry it has (if any).
const VIEWS = {
  "login": { roles: null, render: renderLogin },
  "register": { roles: null, render: renderRegister },
  "needs": { roles: ["resident", "collector"], nav: "nav.needs", render: resident.needs },
  "order": { roles: ["resident", "collector", "staff", "admin"], nav: "nav.order", render: resident.order },
  "need": { roles: ["resident", "collector", "volunteer", "staff", "admin"], render: resident.need },
  "tasks": { roles: ["volunteer"], nav: "nav.tasks", render: volunteer.tasks },
  "profile": { roles: ["volunteer"], nav: "nav.profile", render: volunteer.profile },
  "hours": { roles: ["volunteer"], nav: "nav.hours", render: volunteer.hours },
  "review": { roles: ["staff", "admin"], nav: "nav.review", render: staff.review },
  "board": { roles: ["staff", "admin"], nav: "nav.board", render: staff.board },
  "follow-ups": { roles: ["staff", "admin"], nav: "nav.followUps", render: staff.followUps },
  "dashboard": { roles: ["staff", "admin"], nav: "nav.dashboard", render: dashboard.render },
};
const HOME = { resident: "needs", collector: "needs", volunteer: "tasks", staff: "review", admin: "review" };

let timers = [];

function go(view, arg) {
  const hash = `#/${view}${arg ? `/${arg}` : ""}`;
  if (location.hash === hash) render();
  else location.hash = hash;
}

function route() {
  const [view, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { view, arg: rest.join("/") || null };
}

function render() {
  timers.forEach(clearInterval);
  timers = [];
  const user = session.get()?.user;
  let { view, arg } = route();
  if (!user && !["login", "register"].includes(view)) view = "login";
  // Signed in: sign-in pages, unknown views and other roles' views lead home.
  if (user && !VIEWS[view]?.roles?.includes(user.role)) {
    view = HOME[user.role];
    arg = null;
  }
  renderHeader(user, view);
  const main = document.getElementById("view");
  document.getElementById("messages").replaceChildren();
  main.replaceChildren();
  main.dataset.view = view;
  const context = {
    main, arg, user, go,
    // Refreshes that stop when the person leaves the view.
    every(ms, fn) { timers.push(setInterval(fn, ms)); },
  };
  Promise.resolve(VIEWS[view].render(context)).catch((error) => showError(main, error));
}

function renderHeader(user, current) {
  document.documentElement.lang = language() === "zh" ? "zh-CN" : "en";
  document.title = t("app.title");
  const nav = document.getElementById("nav");
  const links = user ? Object.entries(VIEWS).filter(([, v]) => v.nav && v.roles.includes(user.role)) : [];
  replace(nav, links.map(([name, v]) => h("a", {
    href: `#/${name}`, class: name === current ? "current" : null, "data-testid": `nav-${name}`,
  }, t(v.nav))));
  replace(document.getElementById("title"), t("app.title"));
  const tools = document.getElementById("tools");
  replace(tools,
    h("button", {
      type: "button", class: "link", "data-testid": "language", lang: language() === "zh" ? "en" : "zh",
      onclick: () => { setLanguage(language() === "zh" ? "en" : "zh"); render(); },
    }, t("app.otherLanguage")),
    user ? h("span", { class: "who", "data-testid": "who" }, `${user.name} · ${t(`role.${user.role}`)}`) : null,
    user ? h("button", {
      type: "button", class: "link", "data-testid": "sign-out",
      onclick: () => { session.clear(); go("login"); },
    }, t("app.signOut")) : null);
}

async function signIn(phone, password) {
  const token = await post("/auth/token", { phone, password });
  session.set({ token: token.access_token, user: token.user });
  go(HOME[token.user.role]);
}

function renderLogin({ main }) {
  const form = h("form", { class: "panel narrow", "data-testid": "login-form" },
    h("h2", {}, t("login.title")),
    field(t("field.phone"), input("phone", { type: "tel", autocomplete: "username", required: true })),
    field(t("field.password"), input("password", { type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit", class: "primary", "data-testid": "login" }, t("login.submit")),
    h("p", {}, h("a", { href: "#/register", "data-testid": "to-register" }, t("login.register"))));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const { phone, password } = values(form);
    action(() => signIn(phone, password), form)(event);
  });
  replace(main, form);
}

function renderRegister({ main }) {
  const form = h("form", { class: "panel narrow", "data-testid": "register-form" },
    h("h2", {}, t("register.title")),
    field(t("field.name"), input("name", { required: true, maxlength: 64 })),
    field(t("field.phone"), input("phone", { type: "tel", required: true })),
    field(t("field.password"), input("password", { type: "password", autocomplete: "new-password", required: true })),
    field(t("register.role"), select("role", [
      { value: "resident", label: t("role.resident") }, { value: "volunteer", label: t("role.volunteer") }])),
    h("button", { type: "submit", class: "primary", "data-testid": "register" }, t("register.submit")),
    h("p", {}, h("a", { href: "#/login" }, t("register.haveAccount"))));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = values(form);
    action(async () => {
      await post("/auth/register", data);
      await signIn(data.phone, data.password);
    }, form)(event);
  });
  replace(main, form);
}

window.addEventListener("hashchange", render);
window.addEventListener("lastmile:signed-out", () => go("login"));
render();
