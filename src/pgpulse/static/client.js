/**
 * pgpulse browser client: committed PostgreSQL changes, live, over one SSE stream.
 *
 * Served by the gateway at `/v1/client.js` as a plain ES module (no build step,
 * no dependencies):
 *
 *     import { connect } from "/v1/client.js";
 *
 *     const pulse = connect();              // same origin; or connect({ url: "https://host/prefix" })
 *     pulse.onState((state, detail) => badge.dataset.state = state);
 *
 *     const sub = pulse.subscribe("documents", {
 *       filter: "shipment_id=eq.42;status=in.(draft,review)",
 *       onInsert(ev) {}, onUpdate(ev) {}, onDelete(ev) {}, onTruncate(ev) {},
 *       onChange(ev) {},                     // every change, before the per-op callback
 *       onReady(info) {}, onReset(info) {}, onError(err) {},
 *     });
 *     sub.unsubscribe();
 *
 *     const live = pulse.live("documents", {
 *       select: "id,title,shipment:shipments(port)", filter: "status=eq.final",
 *       order: "updated_at.desc", limit: 50,
 *       onRows(rows) { render(rows); },      // after the snapshot and every change
 *     });
 *     live.rows;                             // current rows (a new array after every change)
 *     await live.ready;                      // resolves with the rows of the first snapshot
 *     live.subscribe(render);                // a store: React useSyncExternalStore, Svelte
 *     live.unsubscribe();
 *
 *     pulse.close();
 *
 * Change events (`ev`) are the server's JSON plus the event id:
 * `{table, op: "INSERT"|"UPDATE"|"DELETE"|"TRUNCATE", pk, row, old, ts, moved?, id}`.
 * `moved: true` marks an UPDATE that moved a row into the filter (delivered as an
 * INSERT) or out of it (delivered as a DELETE with `row: null`).
 *
 * Connection states, reported to `onState(listener)` (the listener is also called
 * at once with the current state; `onState` returns a function that removes it):
 *
 * - `"connecting"`: opening the stream (also: no subscriptions yet, or the set of
 *   subscriptions changed and the stream is being reopened);
 * - `"live"`: the server sent `ready`; detail is `{cursor, resumed}`;
 * - `"reconnecting"`: the stream broke (server down, network, or the server cut the
 *   client off with an `error` event); detail is `{reason, attempt, delay}`. The
 *   client retries with capped exponential backoff and jitter and resumes from the
 *   last cursor, so no change is lost;
 * - `"error"`: the server rejected the subscriptions (HTTP 4xx, e.g. an unknown
 *   table or a bad filter); detail is `{message, status}` with the server's
 *   message. The rejected subscriptions get `onError(err)`. This state is sticky:
 *   nothing is retried until the set of subscriptions changes (for example the
 *   rejected subscription is unsubscribed), and then the stream resumes from the
 *   last cursor, so the other subscriptions miss nothing. (A rejected cursor, e.g.
 *   one saved by an older server version, is not such an error: the client starts
 *   from now and calls every subscription's `onReset`, so live queries refetch);
 * - `"closed"`: `pulse.close()` was called.
 *
 * Design notes:
 *
 * - One EventSource carries every subscription (`/v1/events?sub=...&sub=...`).
 *   Changes to the set are coalesced (`debounce` ms, default 10) and applied by
 *   opening a new EventSource with `last_event_id=<last cursor>`; the old one is
 *   closed only then, so nothing is missed or delivered twice.
 * - The client handles every reconnect itself (it closes the EventSource on any
 *   error instead of letting the browser retry at a fixed interval), resuming with
 *   `last_event_id` = the id of the last `ready`/`change`/`reset` event. Ids sent
 *   on heartbeats alone are not visible to EventSource users, so they are not used.
 * - Routing: a change goes to the subscriptions on its table. The client never
 *   evaluates a filter (it could not agree with PostgreSQL on collations, time
 *   zones, numerics...): when two subscriptions on one table have different
 *   filters, the server evaluates each and tags the event with `subs`, which of
 *   them see it and as which operation (an UPDATE that moves a row out of one
 *   filter reaches that subscription as a DELETE of the old row, `moved: true`).
 * - `live()` opens `/v1/live` (one stream per live query): the server runs the
 *   query and sends a snapshot, then patches (delete, insert/update placed before
 *   a row, sync) after every change that alters its result, stitched to the
 *   snapshot so nothing is missed or applied twice; a reconnect resumes the
 *   patches with the last event id, or gets a fresh snapshot. Filters, order,
 *   limit and embeds are evaluated by PostgreSQL only. The primary key columns
 *   must be selected (rows are named by them).
 *
 * Options of `connect()`: `token` (a JWT, or a function, async or not, returning
 * one: it is called again when the server ends the stream with `auth_expired` or
 * refuses the token, and the stream resumes from the last event id), `url` (base
 * URL, default "" = same origin), `backoff`
 * (`{initial: 500, max: 10000, factor: 2, jitter: 0.3}`, milliseconds), `debounce`
 * (ms), `cursor` (resume from a saved cursor), and for tests `EventSource`/`fetch`.
 *
 * @module pgpulse
 */

/** The connection states, in the order a healthy connection usually meets them. */
export const STATES = Object.freeze(["connecting", "live", "reconnecting", "error", "closed"]);

/** How healthy a state is, for the state of several streams together. */
const RANK = Object.freeze({ error: 0, reconnecting: 1, connecting: 2, live: 3, closed: 4 });

const DEFAULT_BACKOFF = Object.freeze({ initial: 500, max: 10000, factor: 2, jitter: 0.3 });

/** An error reported by the server or the client (`status` is the HTTP status, or 0). */
export class PulseError extends Error {
  constructor(message, { status = 0, table = null } = {}) {
    super(message);
    this.name = "PulseError";
    /** HTTP status of the rejected request, or 0 when there was none. */
    this.status = status;
    /** Table of the subscription the error is about, when known. */
    this.table = table;
  }
}

/**
 * Open a pgpulse connection. Nothing is sent until the first subscription.
 * @param {{url?: string, backoff?: object, debounce?: number, cursor?: string}} [options]
 * @returns {Pulse}
 */
export function connect(options = {}) {
  return new Pulse(options);
}

function report(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error(error);
}

/** Call a user callback; its exceptions are reported, never break routing. */
function call(fn, ...args) {
  if (typeof fn !== "function") return undefined;
  try {
    return fn(...args);
  } catch (error) {
    report(error);
    return undefined;
  }
}

function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** `public.documents` and `documents` name the same table; events use the short form. */
function normTable(table) {
  if (typeof table !== "string" || !table.trim()) {
    throw new TypeError(`expected a table name like "documents", got ${JSON.stringify(table)}`);
  }
  const name = table.trim();
  return name.startsWith("public.") ? name.slice(7) : name;
}

/** Accept "a=eq.1;b=gt.2", ["a=eq.1", "b=gt.2"] or {a: "eq.1", b: "gt.2"}. */
function normFilter(filter) {
  if (filter == null || filter === "") return "";
  if (typeof filter === "string") return filter.trim();
  if (Array.isArray(filter)) return filter.map(String).filter(Boolean).join(";");
  if (typeof filter === "object") {
    return Object.entries(filter)
      .map(([key, value]) => `${key}=${value}`)
      .join(";");
  }
  throw new TypeError(`expected a filter like "shipment_id=eq.42", got ${JSON.stringify(filter)}`);
}

// -- filter grammar: only split, to build URLs (the server parses and evaluates) -----

/** Split on `sep` outside parentheses and double quotes. */
export function splitTop(text, sep = ",") {
  const out = [];
  let depth = 0;
  let quoted = false;
  let current = "";
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === "\\" && i + 1 < text.length) {
        current += ch + text[++i];
        continue;
      }
      if (ch === '"') quoted = false;
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === "(") {
      depth++;
    } else if (ch === ")") {
      depth--;
      if (depth < 0) throw new SyntaxError(`unbalanced ')' in ${JSON.stringify(text)}`);
    } else if (ch === sep && depth === 0) {
      out.push(current);
      current = "";
      continue;
    }
    current += ch;
  }
  if (quoted) throw new SyntaxError(`unterminated '"' in ${JSON.stringify(text)}`);
  if (depth) throw new SyntaxError(`unbalanced '(' in ${JSON.stringify(text)}`);
  out.push(current);
  return out;
}

/**
 * How one subscription sees a change. With several subscriptions on one table,
 * the server says in `subs` which of them see the change and as which operation
 * (its own filters, evaluated exactly as PostgreSQL would): the client never
 * evaluates a filter itself.
 */
function seenBy(ev, index) {
  if (!ev.subs) return ev;
  const op = ev.subs[String(index)];
  if (op === undefined) return null;
  const { subs: _subs, ...own } = ev;
  if (op === ev.op) return own;
  if (op === "INSERT") return { ...own, op: "INSERT", old: null, moved: true };
  if (op === "DELETE") return { ...own, op: "DELETE", row: null, moved: true };
  return own;
}

// -- the connection ------------------------------------------------------------------

/** One multiplexed connection to a pgpulse gateway. Create it with `connect()`. */
export class Pulse {
  constructor(options = {}) {
    /** Base URL of the gateway ("" = same origin). */
    this.url = String(options.url ?? "").replace(/\/+$/, "");
    this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
    this.debounce = options.debounce ?? 10;
    this.probeTimeout = options.probeTimeout ?? 5000;
    // A token: a string, or a function (async or not) returning a fresh one.
    this._tokenSource = options.token ?? null;
    this._token = typeof this._tokenSource === "string" ? this._tokenSource : null;
    this._tokenStale = typeof this._tokenSource === "function";
    this._EventSource = options.EventSource ?? globalThis.EventSource;
    this._fetch = options.fetch ?? ((...args) => globalThis.fetch(...args));
    /** Current connection state (see STATES): the change stream's and the live
     * queries' together (the least healthy of them). */
    this.state = "connecting";
    /** Detail of the current state (reason, server message, cursor...). */
    this.detail = null;
    this._streamState = "connecting"; // the change stream's own state
    this._streamDetail = null;
    this._lives = new Set(); // live queries, each with a stream of its own
    /** Cursor of the last event received: where a reconnect resumes from. */
    this.cursor = options.cursor ?? null;
    /** Counters: `changes` received, `connects` (ready events), `reconnects`, `resets`. */
    this.stats = { changes: 0, connects: 0, reconnects: 0, resets: 0 };
    this._subs = new Set();
    this._listeners = new Set();
    this._es = null;
    this._gen = 0; // bumped whenever the stream is replaced: stale callbacks check it
    this._key = null; // the subscription set the current stream was opened for
    this._specs = [];
    this._members = new Set(); // subscriptions carried by the current stream
    this._readyInfo = null;
    this._fatal = null; // PulseError while the server rejects the current set
    this._resetOnReady = null; // a reset to announce once the next stream is ready
    this._attempt = 0;
    this._retryTimer = null;
    this._applyTimer = null;
    this._onOnline = () => {
      if (this._retryTimer) {
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._open();
      }
    };
    globalThis.addEventListener?.("online", this._onOnline);
  }

  /**
   * Listen to state changes; the listener is called at once with the current state.
   * @param {(state: string, detail: object|null) => void} listener
   * @returns {() => void} removes the listener
   */
  onState(listener) {
    this._listeners.add(listener);
    call(listener, this.state, this.detail);
    return () => this._listeners.delete(listener);
  }

  /**
   * Subscribe to the changes of one table, optionally filtered.
   * @param {string} table `documents` or `schema.table`
   * @param {object} [options] `filter` and callbacks (see the module docs)
   * @returns {Subscription}
   */
  subscribe(table, options = {}) {
    if (this.state === "closed") throw new PulseError("this pgpulse connection is closed");
    const sub = new Subscription(this, table, options);
    this._subs.add(sub);
    this._changed();
    return sub;
  }

  /**
   * The rows of a query, kept equal to the database by the server (`/v1/live`).
   * @param {string} table
   * @param {{filter?: string, order?: string, limit?: number, select?: string,
   *          onRows?: Function, onChange?: Function, onError?: Function}} [options]
   * @returns {LiveQuery}
   */
  live(table, options = {}) {
    return new LiveQuery(this, table, options);
  }

  /** Close the stream and every subscription; the state becomes "closed". */
  close() {
    if (this.state === "closed") return;
    this._closeStream();
    clearTimeout(this._retryTimer);
    clearTimeout(this._applyTimer);
    this._retryTimer = this._applyTimer = null;
    for (const sub of this._subs) sub.active = false;
    this._subs.clear();
    for (const live of [...this._lives]) live.unsubscribe();
    this._members = new Set();
    globalThis.removeEventListener?.("online", this._onOnline);
    this._setState("closed", null);
  }

  // -- internals --

  _setState(state, detail) {
    this._streamState = state;
    this._streamDetail = detail;
    this._publishState();
  }

  /** The state shown to `onState`: the least healthy of the change stream
   * (when it carries subscriptions) and the live queries' streams. */
  _publishState() {
    let state = this._streamState;
    let detail = this._streamDetail;
    if (state !== "closed") {
      const parts = [...this._lives].map((live) => [live.state, live.detail]);
      if (this._subs.size || !parts.length) parts.push([this._streamState, this._streamDetail]);
      [state, detail] = parts.reduce((worst, part) => (RANK[part[0]] < RANK[worst[0]] ? part : worst));
    }
    if (this.state === state && JSON.stringify(this.detail) === JSON.stringify(detail)) return;
    this.state = state;
    this.detail = detail;
    for (const listener of [...this._listeners]) call(listener, state, detail);
  }

  _remove(sub) {
    this._subs.delete(sub);
    this._changed();
  }

  _changed() {
    if (this._applyTimer || this.state === "closed") return;
    this._applyTimer = setTimeout(() => {
      this._applyTimer = null;
      this._apply();
    }, this.debounce);
  }

  _apply() {
    if (this.state === "closed") return;
    const specs = [...new Set([...this._subs].map((s) => s.spec))].sort();
    const key = specs.join("\n");
    if (key === this._key) {
      // Same streams: subscriptions that duplicate an existing spec join as they are.
      for (const sub of [...this._members]) if (!this._subs.has(sub)) this._members.delete(sub);
      for (const sub of this._subs) {
        if (this._members.has(sub)) continue;
        this._members.add(sub);
        if (this._streamState === "live") sub._ready(this._readyInfo);
        else if (this._fatal) sub._fail(this._fatal);
      }
      return;
    }
    this._key = key;
    this._specs = specs;
    this._fatal = null;
    this._attempt = 0;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (!specs.length) {
      this._closeStream();
      this._members = new Set();
      this._setState("connecting", { reason: "no subscriptions" });
      return;
    }
    this._open();
  }

  _streamUrl(specs, cursor) {
    const params = specs.map((spec) => `sub=${encodeURIComponent(spec)}`);
    if (cursor) params.push(`last_event_id=${encodeURIComponent(cursor)}`);
    // EventSource cannot send headers: the token goes in the query.
    if (this._token) params.push(`access_token=${encodeURIComponent(this._token)}`);
    return `${this.url}/v1/events?${params.join("&")}`;
  }

  /** Ask the token function for a new token (once per stale token). */
  async _refreshToken() {
    if (typeof this._tokenSource !== "function" || !this._tokenStale) return;
    this._tokenStale = false;
    try {
      const token = await this._tokenSource();
      this._token = token == null ? null : String(token);
    } catch (error) {
      report(error);
    }
  }

  _headers(extra = {}) {
    return this._token ? { ...extra, Authorization: `Bearer ${this._token}` } : extra;
  }

  _closeStream() {
    this._gen++;
    if (this._es) {
      this._es.close();
      this._es = null;
    }
  }

  _open() {
    if (this._tokenStale) {
      // Get a fresh token first; the stream opens once it is there.
      this._closeStream();
      const gen = this._gen;
      this._refreshToken().then(() => {
        if (gen === this._gen && this.state !== "closed") this._open();
      });
      return;
    }
    this._closeStream();
    const gen = this._gen;
    const specs = this._specs;
    const members = new Set(this._subs);
    this._members = members;
    if (this._streamState !== "reconnecting") this._setState("connecting", { subscriptions: specs });
    const url = this._streamUrl(specs, this.cursor);
    let es;
    try {
      es = new this._EventSource(url);
    } catch (error) {
      this._retry({ reason: String(error?.message ?? error) });
      return;
    }
    this._es = es;
    let opened = false;
    const current = () => gen === this._gen;
    es.addEventListener("open", () => {
      if (current()) opened = true;
    });
    es.addEventListener("ready", (e) => {
      if (!current()) return;
      const info = parseJSON(e.data) ?? {};
      this.cursor = e.lastEventId || info.cursor || this.cursor;
      this._attempt = 0;
      this._refusedOnce = false;
      this.stats.connects++;
      this._readyInfo = info;
      this._setState("live", { cursor: this.cursor, resumed: Boolean(info.resumed) });
      for (const sub of members) if (sub.active && current()) sub._ready(info);
      const reset = this._resetOnReady;
      if (reset && current()) {
        // The server refused our cursor: we start from now, so refetch (after
        // `ready`, so that no change falls between the fetch and the stream).
        this._resetOnReady = null;
        this.stats.resets++;
        for (const sub of members) if (sub.active && current()) sub._reset(reset);
      }
    });
    es.addEventListener("change", (e) => {
      if (!current()) return;
      const data = parseJSON(e.data);
      if (e.lastEventId) this.cursor = e.lastEventId;
      if (!data || typeof data.table !== "string") {
        report(new PulseError(`pgpulse: malformed change event ${JSON.stringify(e.data)}`));
        return;
      }
      data.id = e.lastEventId || null;
      this.stats.changes++;
      this._route(data, members, specs);
    });
    es.addEventListener("reset", (e) => {
      if (!current()) return;
      const info = parseJSON(e.data) ?? {};
      if (e.lastEventId) this.cursor = e.lastEventId;
      this.stats.resets++;
      for (const sub of members) if (sub.active && current()) sub._reset(info);
    });
    es.addEventListener("auth_expired", (e) => {
      if (!current()) return;
      // The token expired: get a new one and resume from the last event id.
      const info = parseJSON(e.data) ?? {};
      this._tokenStale = typeof this._tokenSource === "function";
      this._closeStream();
      if (!this._tokenStale) {
        this._fatal = new PulseError(info.reason ?? "token expired", { status: 401 });
        this._setState("error", { message: this._fatal.message, status: 401 });
        for (const sub of members) if (sub.active) sub._fail(this._fatal);
        return;
      }
      this._attempt = 0;
      this._retry({ reason: info.reason ?? "token expired" });
    });
    es.addEventListener("error", (e) => {
      if (!current()) return;
      if (typeof e.data === "string") {
        // The server's own `event: error`: it is about to close the stream.
        const info = parseJSON(e.data);
        this._closeStream();
        this._retry({ reason: info?.reason ?? e.data });
        return;
      }
      this._closeStream();
      if (opened) this._retry({ reason: "connection lost" });
      else this._diagnose(this._gen, url, specs, members);
    });
  }

  /** The stream failed before it opened: find out whether the server rejected it. */
  async _diagnose(gen, url, specs, members) {
    const probe = await this._probe(url);
    if (gen !== this._gen || this.state === "closed") return;
    if (probe.status === 401 && typeof this._tokenSource === "function" && !this._refusedOnce) {
      // The token may have expired while we were away: one fresh try.
      this._refusedOnce = true;
      this._tokenStale = true;
      this._retry({ reason: probe.message, status: 401 });
      return;
    }
    this._refusedOnce = false;
    if (!(probe.status >= 400 && probe.status < 500 && probe.status !== 408 && probe.status !== 429)) {
      this._retry({ reason: probe.message, status: probe.status || undefined });
      return;
    }
    if (url.includes("last_event_id=")) {
      // Was it the cursor (say, from an older server version)? Then start over
      // from now, telling the subscriptions to refetch, rather than stay stuck.
      const fresh = await this._probe(this._streamUrl(specs, null));
      if (gen !== this._gen || this.state === "closed") return;
      if (fresh.status >= 200 && fresh.status < 300) {
        this.cursor = null;
        this._resetOnReady = { reason: probe.message };
        this._open();
        return;
      }
    }
    // Rejected: which subscriptions did the server refuse? Ask for each alone.
    const culprits = new Map();
    if (specs.length > 1) {
      const results = await Promise.all(specs.map((spec) => this._probe(this._streamUrl([spec], null))));
      if (gen !== this._gen || this.state === "closed") return;
      specs.forEach((spec, i) => {
        const { status, message } = results[i];
        if (status >= 400 && status < 500) culprits.set(spec, { status, message });
      });
    }
    this._fatal = new PulseError(probe.message, { status: probe.status });
    this._setState("error", { message: probe.message, status: probe.status });
    for (const sub of members) {
      if (!sub.active) continue;
      const own = culprits.get(sub.spec);
      if (own) sub._fail(new PulseError(own.message, { status: own.status, table: sub.table }));
      else if (!culprits.size) sub._fail(new PulseError(probe.message, { status: probe.status, table: sub.table }));
    }
  }

  /** GET the stream URL with fetch to learn its status and error message. */
  async _probe(url) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), this.probeTimeout);
    try {
      const res = await this._fetch(url, {
        headers: this._headers({ Accept: "text/event-stream" }),
        cache: "no-store",
        signal: ctrl.signal,
      });
      if (res.ok) return { status: res.status, message: "stream closed before it opened" };
      let message = `HTTP ${res.status} ${res.statusText || ""}`.trim();
      const body = parseJSON(await res.text());
      if (body && typeof body.error === "string") message = body.error;
      return { status: res.status, message };
    } catch {
      return { status: 0, message: "server unreachable" };
    } finally {
      clearTimeout(timer);
      ctrl.abort();
    }
  }

  _retry(detail) {
    if (this.state === "closed") return;
    clearTimeout(this._retryTimer);
    const attempt = this._attempt++;
    const { initial, max, factor, jitter } = this.backoff;
    const base = Math.min(max, initial * factor ** attempt);
    const delay = Math.max(0, Math.round(base * (1 - jitter * Math.random())));
    this.stats.reconnects++;
    this._setState("reconnecting", { ...detail, attempt: attempt + 1, delay });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._open();
    }, delay);
  }

  _route(ev, members, specs) {
    const table = ev.table.startsWith("public.") ? ev.table.slice(7) : ev.table;
    for (const sub of members) {
      if (!sub.active || sub.table !== table) continue;
      const own = seenBy(ev, specs.indexOf(sub.spec));
      if (own) sub._deliver(own);
    }
  }
}

/** One subscription on a Pulse connection; created by `pulse.subscribe()`. */
export class Subscription {
  constructor(pulse, table, options) {
    this._pulse = pulse;
    /** Table name as events carry it (`documents`, `schema.table`). */
    this.table = normTable(table);
    /** Filter string, PostgREST grammar joined by `;` ("" for none). */
    this.filter = normFilter(options.filter);
    /** The `sub=` value sent to the server. */
    this.spec = this.filter ? `${this.table}:${this.filter}` : this.table;
    /** False once unsubscribed (or the connection closed). */
    this.active = true;
    this._handlers = options;
  }

  /** Stop receiving changes; the connection drops the subscription (coalesced). */
  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this._pulse._remove(this);
  }

  _deliver(ev) {
    const h = this._handlers;
    call(h.onChange, ev);
    const perOp = { INSERT: h.onInsert, UPDATE: h.onUpdate, DELETE: h.onDelete, TRUNCATE: h.onTruncate };
    call(perOp[ev.op], ev);
  }

  _ready(info) {
    call(this._handlers.onReady, info);
  }

  _reset(info) {
    call(this._handlers.onReset, info);
  }

  _fail(error) {
    call(this._handlers.onError, error);
  }
}

/**
 * The rows of a query, kept equal to the database; created by `pulse.live()`.
 *
 * The server runs the query (the REST grammar: `select`, `filter`, `order`,
 * `limit`, embeds) and sends a snapshot, then patches after every change that
 * alters the result (`/v1/live`): the client never evaluates a filter or an
 * order. `rows` is replaced (a new array) only when a patch set is complete, so
 * it is a stable snapshot between changes. A store: `subscribe(fn)` calls `fn`
 * with the rows at once and after every change and returns the unsubscribe
 * function; `getSnapshot()` returns the rows: usable as is with React's
 * `useSyncExternalStore(live.subscribe, live.getSnapshot)` and as a Svelte store.
 */
export class LiveQuery {
  constructor(pulse, table, options = {}) {
    this._pulse = pulse;
    this._options = options;
    /** Table name as given (`documents`, `schema.table`). */
    this.table = normTable(table);
    /** Filter string, PostgREST grammar joined by `;` ("" for none). */
    this.filter = normFilter(options.filter);
    /** Current rows, in the query's order: a new array after every change. */
    this.rows = [];
    /** Output columns: `{name, type, nullable}` (PostgreSQL type names). */
    this.columns = [];
    /** The key columns naming rows. */
    this.key = [];
    /** The server's version of the rows (grows with every change). */
    this.version = 0;
    /** True once the first snapshot arrived. */
    this.loaded = false;
    /** The last error, or null. */
    this.error = null;
    /** This query's stream: "connecting", "live", "reconnecting", "error", "closed". */
    this.state = "connecting";
    this.detail = null;
    /** False once unsubscribed. */
    this.active = true;
    this._keys = [];
    this._byKey = new Map();
    this._lastId = null;
    this._es = null;
    this._gen = 0;
    this._attempt = 0;
    this._retryTimer = null;
    this._refusedOnce = false;
    this._listeners = new Set();
    /** Resolves with the rows once the first snapshot arrived. */
    this.ready = new Promise((resolve) => {
      this._resolveReady = resolve;
    });
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
    pulse._lives.add(this);
    this._open();
  }

  /** Store contract: `fn(rows)` now and after every change; returns the unsubscribe function. */
  subscribe(fn) {
    this._listeners.add(fn);
    call(fn, this.rows);
    return () => this._listeners.delete(fn);
  }

  /** The current rows (the same array until the next change). */
  getSnapshot() {
    return this.rows;
  }

  /** Ask for a fresh snapshot. */
  refresh() {
    this._lastId = null;
    this._attempt = 0;
    this._open();
  }

  /** Stop following the query. */
  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    clearTimeout(this._retryTimer);
    this._closeStream();
    this._pulse._lives.delete(this);
    this._setState("closed", null);
    this._listeners.clear();
  }

  /** Alias of `unsubscribe()`. */
  close() {
    this.unsubscribe();
  }

  _setState(state, detail) {
    this.state = state;
    this.detail = detail;
    this._pulse._publishState();
  }

  _url(withCursor = true) {
    const enc = encodeURIComponent;
    const params = [`table=${enc(this.table)}`];
    for (const part of splitTop(this.filter, ";")) {
      if (!part.trim()) continue;
      const eq = part.indexOf("=");
      params.push(`${enc(part.slice(0, eq).trim())}=${enc(part.slice(eq + 1))}`);
    }
    const { select, order, limit } = this._options;
    if (select) params.push(`select=${enc(select)}`);
    if (order) params.push(`order=${enc(order)}`);
    if (limit != null) params.push(`limit=${enc(limit)}`);
    if (withCursor && this._lastId) params.push(`last_event_id=${enc(this._lastId)}`);
    const token = this._pulse._token;
    if (token) params.push(`access_token=${enc(token)}`);
    return `${this._pulse.url}/v1/live?${params.join("&")}`;
  }

  _closeStream() {
    this._gen++;
    if (this._es) {
      this._es.close();
      this._es = null;
    }
  }

  _open() {
    if (!this.active) return;
    const pulse = this._pulse;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (pulse._tokenStale) {
      this._closeStream();
      const gen = this._gen;
      pulse._refreshToken().then(() => {
        if (gen === this._gen && this.active) this._open();
      });
      return;
    }
    this._closeStream();
    const gen = this._gen;
    const url = this._url();
    if (this.state !== "reconnecting") this._setState("connecting", { table: this.table });
    let es;
    try {
      es = new pulse._EventSource(url);
    } catch (error) {
      this._retry({ reason: String(error?.message ?? error) });
      return;
    }
    this._es = es;
    let opened = false;
    const current = () => gen === this._gen && this.active;
    const on = (name, handle) =>
      es.addEventListener(name, (e) => {
        if (!current()) return;
        const data = parseJSON(e.data);
        if (!data) return;
        if (e.lastEventId) this._lastId = e.lastEventId;
        handle(data);
      });
    es.addEventListener("open", () => {
      if (current()) opened = true;
    });
    on("snapshot", (data) => {
      this.columns = data.columns ?? [];
      this.key = data.key ?? [];
      this._keys = [];
      this._byKey = new Map();
      for (const row of data.rows ?? []) {
        const k = this._keyOf(row);
        this._keys.push(k);
        this._byKey.set(k, row);
      }
      this._publish(data.version);
    });
    on("delete", (data) => {
      const k = this._keyOf(data.key);
      const old = this._byKey.get(k) ?? null;
      this._remove(k);
      call(this._options.onChange, { table: this.table, op: "DELETE", pk: data.key, row: null, old });
    });
    const place = (op) => (data) => {
      const k = this._keyOf(data.row);
      if (data.old_key) this._remove(this._keyOf(data.old_key));
      this._remove(k);
      const at = data.before == null ? -1 : this._keys.indexOf(this._keyOf(data.before));
      this._keys.splice(at < 0 ? this._keys.length : at, 0, k);
      this._byKey.set(k, data.row);
      call(this._options.onChange, { table: this.table, op, pk: this._pk(data.row), row: data.row, old: null });
    };
    on("insert", place("INSERT"));
    on("update", place("UPDATE"));
    on("sync", (data) => this._publish(data.version));
    es.addEventListener("auth_expired", () => {
      if (!current()) return;
      pulse._tokenStale = typeof pulse._tokenSource === "function";
      this._closeStream();
      if (!pulse._tokenStale) {
        this._fail(new PulseError("token expired", { status: 401, table: this.table }));
        return;
      }
      this._attempt = 0;
      this._retry({ reason: "token expired" });
    });
    es.addEventListener("error", (e) => {
      if (!current()) return;
      this._closeStream();
      if (typeof e.data === "string") {
        // The server's own `event: error`: it is about to close the stream.
        const info = parseJSON(e.data);
        this._retry({ reason: info?.reason ?? e.data });
      } else if (opened) {
        this._retry({ reason: "connection lost" });
      } else {
        this._diagnose(this._gen);
      }
    });
  }

  /** The stream failed before it opened: did the server refuse the query? */
  async _diagnose(gen) {
    const pulse = this._pulse;
    const probe = await pulse._probe(this._url(false));
    if (gen !== this._gen || !this.active) return;
    if (probe.status === 401 && typeof pulse._tokenSource === "function" && !this._refusedOnce) {
      // The token may have expired while we were away: one fresh try.
      this._refusedOnce = true;
      pulse._tokenStale = true;
      this._retry({ reason: probe.message, status: 401 });
      return;
    }
    this._refusedOnce = false;
    if (probe.status >= 400 && probe.status < 500 && probe.status !== 408 && probe.status !== 429) {
      this._fail(new PulseError(probe.message, { status: probe.status, table: this.table }));
      return;
    }
    this._retry({ reason: probe.message, status: probe.status || undefined });
  }

  _fail(error) {
    // A refused query stays refused: nothing is retried (call refresh()).
    this.error = error;
    this._setState("error", { message: error.message, status: error.status });
    call(this._options.onError, error);
  }

  _retry(detail) {
    if (!this.active) return;
    clearTimeout(this._retryTimer);
    const attempt = this._attempt++;
    const { initial, max, factor, jitter } = this._pulse.backoff;
    const base = Math.min(max, initial * factor ** attempt);
    const delay = Math.max(0, Math.round(base * (1 - jitter * Math.random())));
    this._setState("reconnecting", { ...detail, attempt: attempt + 1, delay });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._open();
    }, delay);
  }

  _keyOf(values) {
    return JSON.stringify(this.key.map((k) => (values ? values[k] : undefined)));
  }

  _pk(row) {
    const pk = {};
    for (const k of this.key) pk[k] = row[k];
    return pk;
  }

  _remove(k) {
    if (!this._byKey.has(k)) return;
    this._byKey.delete(k);
    this._keys.splice(this._keys.indexOf(k), 1);
  }

  /** A patch set is complete (or a snapshot arrived): new rows for everyone. */
  _publish(version) {
    this.version = version ?? this.version;
    this.rows = this._keys.map((k) => this._byKey.get(k));
    this.loaded = true;
    this.error = null;
    this._attempt = 0;
    this._refusedOnce = false;
    if (this.state !== "live") this._setState("live", { version: this.version });
    this._resolveReady(this.rows);
    call(this._options.onRows, this.rows, null);
    for (const fn of [...this._listeners]) call(fn, this.rows);
  }
}
