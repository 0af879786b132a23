// pgpulse live demo: documents and shipments kept live with /v1/client.js.
//
// Every row element carries data-table and data-pk; the connection badge is
// #connection-state with data-state = the client's state. `window.pulse` is the
// page's connection (handy in the console: pulse.subscribe("documents", {onChange: console.log})).

import { connect } from "/v1/client.js";

const LOG_SIZE = 30;
const STATE_LABELS = {
  connecting: "Connecting",
  live: "Live",
  reconnecting: "Reconnecting",
  error: "Error",
  closed: "Closed",
};

const $ = (id) => document.getElementById(id);
const badge = $("connection-state");
const badgeLabel = badge.querySelector(".label");
const detailEl = $("connection-detail");
const shipmentSelect = $("filter-shipment");
const statusSelect = $("filter-status");

const pulse = connect({ backoff: { initial: 300, max: 4000 } });
window.pulse = pulse;

let eventCount = 0;
let documents = null; // the documents LiveQuery for the current filter
const shipmentsById = new Map();

// -- connection badge ------------------------------------------------------------

function describe(state, detail) {
  switch (state) {
    case "live":
      return detail?.resumed ? "resumed without gaps" : "streaming changes";
    case "reconnecting": {
      const when = detail?.delay != null ? ` · retry ${detail.attempt} in ${(detail.delay / 1000).toFixed(1)} s` : "";
      return `${detail?.reason ?? "connection lost"}${when}`;
    }
    case "error":
      return detail?.message ?? "the server rejected the subscription";
    case "closed":
      return "connection closed";
    default:
      return "opening the stream…";
  }
}

pulse.onState((state, detail) => {
  badge.dataset.state = state;
  badgeLabel.textContent = STATE_LABELS[state] ?? state;
  const text = describe(state, detail);
  detailEl.textContent = text;
  detailEl.title = text;
  document.body.dataset.connection = state;
});

// -- rendering helpers -------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function formatTime(value) {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function flash(node, kind) {
  node.classList.remove("flash-insert", "flash-update");
  void node.offsetWidth; // restart the animation
  node.classList.add(`flash-${kind}`);
}

/**
 * A keyed list of row elements that follows an array of rows: new rows flash
 * green, changed rows flash yellow, removed rows fade out (and lose their
 * data-pk at once, so the DOM reflects the current rows).
 */
class RowList {
  constructor(container, table, build) {
    this.container = container;
    this.table = table;
    this.build = build; // (row) => element
    this.nodes = new Map(); // pk -> element
  }

  clear() {
    this.nodes.clear();
    this.container.replaceChildren();
  }

  /** Follow *rows*; `force` rebuilds unchanged rows too (their labels changed). */
  update(rows, animate, force = false) {
    const seen = new Set();
    let previous = null;
    for (const row of rows) {
      const pk = String(row.id);
      seen.add(pk);
      const signature = JSON.stringify(row);
      let node = this.nodes.get(pk);
      if (!node) {
        node = this.build(row);
        node.dataset.table = this.table;
        node.dataset.pk = pk;
        node._signature = signature;
        this.nodes.set(pk, node);
        if (animate) flash(node, "insert");
      } else if (force || node._signature !== signature) {
        const fresh = this.build(row);
        node.replaceChildren(...fresh.childNodes);
        node.className = fresh.className;
        if (animate && node._signature !== signature) flash(node, "update");
        node._signature = signature;
      }
      const expected = previous ? previous.nextSibling : this.container.firstChild;
      if (node !== expected) this.container.insertBefore(node, expected);
      previous = node;
    }
    for (const [pk, node] of this.nodes) {
      if (seen.has(pk)) continue;
      this.nodes.delete(pk);
      delete node.dataset.pk;
      delete node.dataset.table;
      if (animate) {
        node.dataset.leavingPk = pk;
        node.classList.add("leaving");
        setTimeout(() => node.remove(), 600);
      } else {
        node.remove();
      }
    }
  }
}

// -- shipments ------------------------------------------------------------------------

function shipmentLabel(shipment) {
  return shipment.reference || `Shipment #${shipment.id}`;
}

const shipmentList = new RowList($("shipments-list"), "shipments", (s) => {
  const item = el(
    "li",
    { class: String(s.id) === shipmentSelect.value ? "selected" : "", title: "Show this shipment's documents" },
    el("span", { class: "ref" }, shipmentLabel(s)),
    el("span", { class: `pill status-${s.status ?? ""}` }, String(s.status ?? "").replace(/_/g, " ")),
    el("span", { class: "route" }, `${s.origin ?? "?"} → ${s.destination ?? "?"}`),
  );
  item.addEventListener("click", () => {
    const id = String(s.id);
    shipmentSelect.value = shipmentSelect.value === id ? "" : id;
    onFilterChange();
  });
  return item;
});

function renderShipmentOptions(rows) {
  const selected = shipmentSelect.value || new URLSearchParams(location.search).get("shipment") || "";
  const options = [el("option", { value: "" }, "All shipments")];
  for (const s of rows) {
    options.push(el("option", { value: String(s.id) }, `${shipmentLabel(s)} · ${s.origin ?? "?"} → ${s.destination ?? "?"}`));
  }
  if (selected && !rows.some((s) => String(s.id) === selected)) {
    options.push(el("option", { value: selected }, `Shipment #${selected}`));
  }
  shipmentSelect.replaceChildren(...options);
  shipmentSelect.value = selected;
}

function markSelectedShipment() {
  for (const node of $("shipments-list").children) {
    node.classList.toggle("selected", node.dataset.pk === shipmentSelect.value);
  }
}

let shipmentsLoaded = false;
pulse.live("shipments", {
  order: "id",
  onChange: logEvent,
  onRows(rows) {
    shipmentsById.clear();
    for (const s of rows) shipmentsById.set(String(s.id), s);
    shipmentList.update(rows, shipmentsLoaded);
    shipmentsLoaded = true;
    renderShipmentOptions(rows);
    markSelectedShipment();
    $("count-shipments").textContent = rows.length;
    $("shipments-empty").hidden = rows.length > 0;
    // Document rows show shipment references: refresh them when shipments change.
    if (documents) documentList.update(documents.rows, false, true);
  },
  onError: showError,
});

// -- documents --------------------------------------------------------------------------

const documentList = new RowList($("documents-body"), "documents", (d) => {
  const shipment = shipmentsById.get(String(d.shipment_id));
  return el(
    "tr",
    {},
    el("td", { class: "num" }, d.id),
    el("td", { class: "ref" }, shipment ? shipmentLabel(shipment) : d.shipment_id == null ? "—" : `#${d.shipment_id}`),
    el("td", { class: "kind" }, d.kind ?? ""),
    el("td", { class: "title-cell" }, d.title ?? ""),
    el("td", {}, el("span", { class: `pill status-${d.status ?? ""}` }, d.status ?? "")),
    el("td", { class: "time" }, formatTime(d.updated_at)),
  );
});

function currentFilter() {
  const parts = [];
  if (shipmentSelect.value) parts.push(`shipment_id=eq.${shipmentSelect.value}`);
  if (statusSelect.value) parts.push(`status=eq.${statusSelect.value}`);
  return parts.join(";");
}

function followDocuments() {
  documents?.unsubscribe();
  documentList.clear();
  $("documents-loading").hidden = false;
  $("documents-empty").hidden = true;
  document.body.dataset.documentsLoaded = "false";
  const filter = currentFilter();
  $("filter-code").textContent = filter ? `documents:${filter}` : "documents";
  const shipment = shipmentsById.get(shipmentSelect.value);
  $("documents-scope").textContent = shipmentSelect.value
    ? `shipment ${shipment ? shipmentLabel(shipment) : `#${shipmentSelect.value}`}`
    : "all shipments";
  let loaded = false;
  const query = pulse.live("documents", {
    filter,
    order: "id",
    onChange: logEvent,
    onRows(rows) {
      if (query !== documents) return;
      documentList.update(rows, loaded);
      loaded = true;
      $("documents-loading").hidden = true;
      $("documents-empty").hidden = rows.length > 0;
      $("count-documents").textContent = rows.length;
      document.body.dataset.documentsLoaded = "true";
    },
    onError: showError,
  });
  documents = query;
}

function onFilterChange() {
  const params = new URLSearchParams(location.search);
  for (const [key, select] of [["shipment", shipmentSelect], ["status", statusSelect]]) {
    if (select.value) params.set(key, select.value);
    else params.delete(key);
  }
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
  markSelectedShipment();
  followDocuments();
}

shipmentSelect.addEventListener("change", onFilterChange);
statusSelect.addEventListener("change", onFilterChange);

// -- event log and errors -------------------------------------------------------------------

function logEvent(ev) {
  eventCount += 1;
  $("count-events").textContent = eventCount;
  const row = ev.row ?? ev.old ?? {};
  const pk = ev.pk ? Object.values(ev.pk).join(",") : "";
  let what = `${ev.table}${pk ? ` #${pk}` : ""}`;
  if (ev.table === "documents" && row.title) what += ` · ${row.title}`;
  if (ev.table === "shipments" && row.reference) what += ` · ${row.reference}`;
  if (row.status && ev.op !== "DELETE") what += ` → ${row.status}`;
  const item = el(
    "li",
    {},
    el("time", {}, formatTime(ev.ts) || formatTime(new Date())),
    el("span", { class: `op op-${ev.op}` }, ev.op),
    el("span", { class: "what", title: what }, what, ev.moved ? el("span", { class: "moved" }, " (moved)") : ""),
  );
  const list = $("event-log");
  list.prepend(item);
  while (list.children.length > LOG_SIZE) list.lastElementChild.remove();
  $("event-log-empty").hidden = true;
}

function showError(error) {
  const list = $("event-log");
  list.prepend(el("li", {}, el("time", {}, formatTime(new Date())), el("span", { class: "op op-RESET" }, "ERROR"), el("span", { class: "what" }, error?.message ?? String(error))));
  $("event-log-empty").hidden = true;
}

// -- notifications: one user's channel ------------------------------------------------------
//
// The inbox is its own connection, signed in as the chosen user with a token
// from /demo/token. The gateway ANDs the policy recipient=eq.{claims.sub} to
// the subscription and to the REST read, so each user receives only their own
// rows; switching users closes the old connection (and its rows) first.

const USERS = ["ann", "bob"];
const inboxState = $("inbox-state");
let inbox = null; // {user, pulse, query}

const notificationList = new RowList($("notifications-list"), "notifications", (n) =>
  el("li", {}, el("time", {}, formatTime(n.created_at)), el("span", { class: "message" }, n.message ?? "")),
);

async function demoToken(user) {
  const response = await fetch(`/demo/token?user=${encodeURIComponent(user)}`, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ?? `sign-in failed (${response.status})`);
  return body.token;
}

function signIn(user) {
  if (inbox?.user === user) return;
  inbox?.pulse.close();
  notificationList.clear();
  $("notifications-empty").hidden = true;
  document.body.dataset.user = user;
  document.body.dataset.notificationsLoaded = "false";
  for (const name of USERS) $(`user-${name}`).setAttribute("aria-pressed", String(name === user));
  const pulse = connect({ token: () => demoToken(user), backoff: { initial: 300, max: 4000 } });
  const session = { user, pulse, query: null };
  pulse.onState((state, detail) => {
    if (inbox !== session) return;
    inboxState.dataset.state = state;
    inboxState.textContent = `${user}: ${state === "live" ? "live" : describe(state, detail)}`;
  });
  let loaded = false;
  session.query = pulse.live("notifications", {
    order: "id.desc",
    limit: 20,
    onRows(rows) {
      if (inbox !== session) return;
      notificationList.update(rows, loaded);
      loaded = true;
      $("notifications-empty").hidden = rows.length > 0;
      document.body.dataset.notificationsLoaded = "true";
    },
    onError: showError,
  });
  inbox = session;
  const params = new URLSearchParams(location.search);
  params.set("user", user);
  history.replaceState(null, "", `?${params}`);
}

for (const name of USERS) $(`user-${name}`).addEventListener("click", () => signIn(name));

// -- start ---------------------------------------------------------------------------------

{
  const params = new URLSearchParams(location.search);
  const status = params.get("status");
  if (status && [...statusSelect.options].some((o) => o.value === status)) statusSelect.value = status;
  const shipment = params.get("shipment");
  if (shipment) {
    shipmentSelect.append(el("option", { value: shipment }, `Shipment #${shipment}`));
    shipmentSelect.value = shipment;
  }
}
followDocuments();
{
  const user = new URLSearchParams(location.search).get("user");
  signIn(USERS.includes(user) ? user : USERS[0]);
}
