// The run report's behaviour: charts (vega-embed), the ranked table (DataTables) and the item browser.
// Wrapped in a function: the inlined Vega bundle declares globals of its own (e.g. `el`).
(() => {
"use strict";
const readJSON = (id) => JSON.parse(document.getElementById(id).textContent);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  children.forEach((c) => node.append(c));
  return node;
};
const SVG = "http://www.w3.org/2000/svg";

function embedCharts() {
  const specs = readJSON("data-specs");
  const jobs = [];
  for (const [name, spec] of Object.entries(specs)) {
    const target = document.getElementById("chart-" + name);
    if (spec && target) jobs.push(vegaEmbed(target, spec, { renderer: "svg", actions: false }));
  }
  Promise.all(jobs).then(() => { document.body.dataset.chartsReady = String(jobs.length); });
}

function setUpTable() {
  const $ = window.raypipeDataTables.jQuery;
  const table = $("#ranked-table").DataTable({
    paging: false, order: [], info: true, columnDefs: [{ orderable: false, targets: -1 }],
  });
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  document.querySelectorAll(".stage-filter").forEach((select) => {
    select.addEventListener("change", () => {
      const value = select.value ? "^" + escape(select.value) + "$" : "";
      table.column(Number(select.dataset.column)).search(value, true, false).draw();
    });
  });
  document.body.dataset.tableReady = "1";
}

function whenDataTables(callback) {
  if (window.raypipeDataTables) callback();
  else window.addEventListener("raypipe-datatables-ready", callback, { once: true });
}

// -- the item browser ------------------------------------------------------------------------------------
const browser = readJSON("data-browser");
const state = { item: null };

function optionsOnce(select, values) {
  for (const v of values) select.append(el("option", { value: v, text: v }));
}

function setUpBrowser() {
  if (!browser.configs) return;
  const slices = new Set();
  const kinds = new Set();
  for (const item of Object.values(browser.items)) {
    for (const [attr, cell] of Object.entries(item.bins || {})) slices.add(attr + "=" + cell);
  }
  for (const perItem of Object.values(browser.results)) {
    for (const r of Object.values(perItem)) r.kinds.forEach((k) => kinds.add(k));
  }
  optionsOnce(document.getElementById("browser-slice"), [...slices].sort());
  optionsOnce(document.getElementById("browser-kind"), [...kinds].sort());
  for (const id of ["browser-config", "browser-slice", "browser-kind"]) {
    document.getElementById(id).addEventListener("change", renderList);
  }
  document.getElementById("browser-compare").addEventListener("change", () => state.item && renderItem(state.item));
  document.querySelectorAll(".show-wrong").forEach((button) => button.addEventListener("click", () => {
    document.getElementById("browser-config").value = button.dataset.config;
    renderList();
    document.getElementById("items").scrollIntoView();
  }));
  renderList();
}

function wrongItems(config) {
  const slice = document.getElementById("browser-slice").value;
  const kind = document.getElementById("browser-kind").value;
  const results = browser.results[config] || {};
  return Object.entries(results).filter(([id, r]) => {
    if (!r.wrong) return false;
    if (kind && !r.kinds.includes(kind)) return false;
    if (slice) {
      const [attr, cell] = [slice.slice(0, slice.indexOf("=")), slice.slice(slice.indexOf("=") + 1)];
      if (String((browser.items[id].bins || {})[attr]) !== cell) return false;
    }
    return true;
  });
}

function thumb(item) {
  if (item.image) return el("img", { src: item.image.src, alt: "", class: item.image.pixelated ? "pixelated" : "" });
  return el("span", { class: "placeholder", text: "no image" });
}

function renderList() {
  const list = document.getElementById("item-list");
  list.replaceChildren();
  const entries = wrongItems(document.getElementById("browser-config").value);
  for (const [id, r] of entries) {
    const entry = el("li", { class: "item-entry", "data-item": id }, thumb(browser.items[id]),
      el("span", {}, el("b", { text: id }), el("br"), el("span", { class: "kinds", text: r.kinds.join(", ") || "wrong" })));
    entry.addEventListener("click", () => renderItem(id));
    list.append(entry);
  }
  if (!entries.length) list.append(el("li", { class: "help", text: "No wrong items carried for this choice." }));
  document.getElementById("item-detail").replaceChildren(el("p", { class: "help", text: entries.length + " items" }));
}

function card(item) {
  if (!item.image) return el("div", { class: "placeholder", text: item.image_error || "image unavailable" });
  const image = item.image;
  const box = el("div", { class: "card" }, el("img", { src: image.src, alt: "input", class: image.pixelated ? "pixelated" : "" }));
  if (image.boxes.length) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${image.w} ${image.h}`);
    svg.setAttribute("preserveAspectRatio", "none");
    for (const b of image.boxes) {
      const polygon = document.createElementNS(SVG, "polygon");
      polygon.setAttribute("points", b.slice(0, -1).map((p) => p.join(",")).join(" "));
      const title = document.createElementNS(SVG, "title");
      title.textContent = b[b.length - 1];
      polygon.append(title);
      svg.append(polygon);
    }
    box.append(svg);
  }
  return box;
}

function fieldTable(id, configs) {
  const table = el("table", { class: "fields" });
  const header = el("tr", {}, el("th", { text: "field" }), el("th", { text: "truth" }));
  configs.forEach((c) => header.append(el("th", { text: c.slice(0, 8) })));
  table.append(header);
  const first = (browser.results[configs[0]] || {})[id];
  const names = first ? first.fields.map((f) => f[0]) : [];
  names.forEach((name, i) => {
    const row = el("tr", {}, el("td", { text: name }), el("td", { text: first.fields[i][2] ?? "?" }));
    for (const c of configs) {
      const r = (browser.results[c] || {})[id];
      const f = r && r.fields[i];
      row.append(el("td", { class: f ? (f[3] ? "diff" : "same") : "", text: f ? (f[1] ?? "—") : "not run" }));
    }
    table.append(row);
  });
  return table;
}

function renderItem(id) {
  state.item = id;
  document.querySelectorAll(".item-entry").forEach((e) => e.classList.toggle("active", e.dataset.item === id));
  const configs = [document.getElementById("browser-config").value, document.getElementById("browser-compare").value]
    .filter(Boolean);
  const detail = document.getElementById("item-detail");
  detail.replaceChildren(el("h3", { text: id }), card(browser.items[id]), fieldTable(id, configs));
  for (const c of configs) {
    const r = (browser.results[c] || {})[id];
    if (r && r.error) detail.append(el("p", { class: "error", text: c.slice(0, 8) + ": " + r.error }));
  }
}

embedCharts();
setUpBrowser();
whenDataTables(setUpTable);
})();
