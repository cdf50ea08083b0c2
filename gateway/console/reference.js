// The site tree and the service platforms, read once per page load.
import { get } from "./api.js";
import { t } from "./i18n.js";

let loaded = null;

export function reference() {
  loaded = loaded || Promise.all([get("/sites"), get("/categories")]).then(([sites, categories]) => ({
    sites: sites.items, categories: categories.items,
  }));
  loaded.catch(() => { loaded = null; });
  return loaded;
}

export function siteName(ref, id) {
  const site = ref.sites.find((s) => s.id === id);
  return site ? site.name : id;
}

export function categoryName(ref, code) {
  const translated = t(`category.${code}`);
  if (translated !== `category.${code}`) return translated;
  const category = ref.categories.find((c) => c.code === code);
  return category ? category.name : code;
}

export function inside(siteId, scope) {
  return !scope || siteId === scope || siteId.startsWith(`${scope}.`);
}

// Stations for a <select>, grouped under their institute.
export function stationOptions(ref, scope) {
  const groups = new Map();
  for (const site of ref.sites) {
    if (site.level !== "station" || !inside(site.id, scope)) continue;
    const parent = siteName(ref, site.parent_id);
    if (!groups.has(parent)) groups.set(parent, []);
    groups.get(parent).push({ value: site.id, label: site.name });
  }
  return [...groups].map(([group, options]) => ({ group, options }));
}

export function categoryOptions(ref) {
  return ref.categories.map((c) => ({ value: c.code, label: categoryName(ref, c.code) }));
}
