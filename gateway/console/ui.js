// Small DOM helpers shared by the views: elements, forms, errors, formatting.
import { t, language } from "./i18n.js";

export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === "value") node.value = value;
    else if (key === "checked") node.checked = Boolean(value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function replace(container, ...children) {
  container.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

// A labelled field; its errors from the API's `details` appear under it (see showError).
export function field(label, control, name = control.name) {
  return h("label", { class: "field", "data-field": name }, h("span", { class: "label" }, label), control,
    h("span", { class: "field-error", role: "alert" }));
}

export function input(name, props = {}) {
  return h("input", { name, ...props });
}

export function select(name, options, props = {}) {
  return h("select", { name, ...props },
    options.map((o) => (o.group
      ? h("optgroup", { label: o.group }, o.options.map((x) => h("option", { value: x.value }, x.label)))
      : h("option", { value: o.value }, o.label))));
}

export function button(label, onClick, props = {}) {
  return h("button", { type: "button", onclick: onClick, ...props }, label);
}

// Disables the button while the action runs, and shows what went wrong in `where`.
export function action(fn, where) {
  return async (event) => {
    const trigger = event && event.currentTarget;
    if (trigger) trigger.disabled = true;
    clearErrors(where);
    try {
      await fn(event);
    } catch (error) {
      showError(where, error);
    } finally {
      if (trigger && trigger.isConnected) trigger.disabled = false;
    }
  };
}

export function clearErrors(where) {
  if (!where) return;
  where.querySelectorAll(".field-error").forEach((node) => { node.textContent = ""; });
  where.querySelectorAll(":scope > .error, .form-error").forEach((node) => node.remove());
}

// The contract's error body, shown plainly: what happened in the reader's language,
// the gateway's own message, and each invalid field beside that field when it is on screen.
export function showError(where, error) {
  const target = where || document.getElementById("messages");
  const code = error.code || "http_error";
  const known = t(`error.${code}`) !== `error.${code}`;
  const lines = [];
  for (const [name, messages] of Object.entries(error.details || {})) {
    const text = Array.isArray(messages) ? messages.join(" ") : typeof messages === "object" ? JSON.stringify(messages) : String(messages);
    const slot = target.querySelector(`[data-field="${CSS.escape(name)}"] .field-error`);
    if (slot && !slot.closest("[hidden]")) slot.textContent = text;
    else lines.push(h("li", {}, h("code", {}, name), " ", text));
  }
  const box = h("div", { class: "error form-error", role: "alert", "data-testid": "error", "data-code": code },
    h("strong", {}, known ? t(`error.${code}`) : t("error.http_error")),
    error.message ? h("div", { class: "muted" }, error.message) : null,
    lines.length ? h("ul", {}, lines) : null);
  target.prepend(box);
  box.scrollIntoView({ block: "nearest" });
}

export function notice(text) {
  const where = document.getElementById("messages");
  const note = h("div", { class: "notice", role: "status", "data-testid": "notice" }, text);
  where.replaceChildren(note);
  setTimeout(() => note.remove(), 4000);
}

export function when(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(language() === "zh" ? "zh-CN" : "en-GB",
    { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
}

export function badge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, t(`status.${status}`));
}

export function card(props, ...children) {
  return h("article", { class: "card", ...props }, ...children);
}

export function empty(text) {
  return h("p", { class: "muted empty" }, text);
}

// A form's values by name; numbers where the input is a number.
export function values(form) {
  const out = {};
  for (const element of form.elements) {
    if (!element.name || element.type === "button" || element.type === "submit") continue;
    if (element.type === "checkbox") continue;
    out[element.name] = element.type === "number" && element.value !== "" ? Number(element.value) : element.value.trim();
  }
  return out;
}

export function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}
