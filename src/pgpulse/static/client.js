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
 *       filter: "shipment_id=eq.42", order: "id",
 *       onRows(rows, ev) { render(rows); },  // ev is null after a (re)fetch
 *     });
 *     live.rows;                             // current rows (a new array after every change)
 *     await live.ready;                      // resolves with the rows after the first fetch
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
 * - `live()` fetches its rows with `GET /v1/rest/<table>?<filters>&order=&limit=`
 *   after the stream is `ready`, buffers the changes that arrive while the fetch
 *   is in flight and applies them, in order, on top of the fetched rows (upsert
 *   by primary key on INSERT/UPDATE, remove on DELETE), so it converges however
 *   the fetch and the writes interleave. On TRUNCATE or `reset` it clears and
 *   refetches. With `order`, rows are kept sorted client-side; with `limit`, the
 *   window is trimmed and refetched when a delete empties a slot. With `select`,
 *   include the primary key columns.
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

const NUMERIC = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;

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

// -- ordering for live() -------------------------------------------------------------

function compileOrder(order) {
  if (!order) return null;
  const keys = splitTop(String(order)).map((part) => {
    const bits = part.trim().split(".");
    let desc = false;
    let nullsFirst;
    while (bits.length > 1) {
      const last = bits[bits.length - 1];
      if (last === "asc" || last === "desc") desc = last === "desc";
      else if (last === "nullsfirst" || last === "nullslast") nullsFirst = last === "nullsfirst";
      else break;
      bits.pop();
    }
    return { column: bits.join("."), desc, nullsFirst: nullsFirst ?? desc };
  });
  return (a, b) => {
    for (const key of keys) {
      const x = a[key.column];
      const y = b[key.column];
      if (x == null || y == null) {
        if (x == null && y == null) continue;
        return (x == null) === key.nullsFirst ? -1 : 1;
      }
      let c;
      if (typeof x === "number" && typeof y === "number") c = x - y;
      else if (typeof x === "string" && typeof y === "string" && NUMERIC.test(x) && NUMERIC.test(y)) {
        c = Number(x) - Number(y);
      } else {
        const sx = typeof x === "object" ? JSON.stringify(x) : x;
        const sy = typeof y === "object" ? JSON.stringify(y) : y;
        c = sx < sy ? -1 : sx > sy ? 1 : 0;
      }
      if (c) return key.desc ? -c : c;
    }
    return 0;
  };
}

function samePk(row, pk) {
  if (!row || !pk) return false;
  const keys = Object.keys(pk);
  return keys.length > 0 && keys.every((k) => row[k] != null && String(row[k]) === String(pk[k]));
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
    /** Current connection state (see STATES). */
    this.state = "connecting";
    /** Detail of the current state (reason, server message, cursor...). */
    this.detail = null;
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
   * Keep an array of rows in sync with a table (REST fetch, then live changes).
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
    this._members = new Set();
    globalThis.removeEventListener?.("online", this._onOnline);
    this._setState("closed", null);
  }

  // -- internals --

  _setState(state, detail) {
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
        if (this.state === "live") sub._ready(this._readyInfo);
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
    if (this.state !== "reconnecting") this._setState("connecting", { subscriptions: specs });
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

  async _rest(table, { filter = "", order, limit, select, signal } = {}) {
    const params = [];
    for (const part of splitTop(normFilter(filter), ";")) {
      if (!part.trim()) continue;
      const eq = part.indexOf("=");
      params.push(`${encodeURIComponent(part.slice(0, eq).trim())}=${encodeURIComponent(part.slice(eq + 1))}`);
    }
    if (select) params.push(`select=${encodeURIComponent(select)}`);
    if (order) params.push(`order=${encodeURIComponent(order)}`);
    if (limit != null) params.push(`limit=${encodeURIComponent(limit)}`);
    const url = `${this.url}/v1/rest/${encodeURIComponent(table)}${params.length ? "?" : ""}${params.join("&")}`;
    let res;
    try {
      res = await this._fetch(url, {
        headers: this._headers({ Accept: "application/json" }),
        cache: "no-store",
        signal,
      });
    } catch (error) {
      throw new PulseError(`could not fetch ${table}: ${error?.message ?? error}`);
    }
    const body = parseJSON(await res.text());
    if (!res.ok) {
      const message = body && typeof body.message === "string" ? body.message : `HTTP ${res.status}`;
      throw new PulseError(message, { status: res.status, table });
    }
    if (!Array.isArray(body)) throw new PulseError(`expected a JSON array of rows from ${url}`, { table });
    return body;
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

/** Rows of a table kept in sync; created by `pulse.live()`. */
export class LiveQuery {
  constructor(pulse, table, options = {}) {
    this._pulse = pulse;
    this._options = options;
    this._order = compileOrder(options.order);
    this._limit = options.limit == null ? null : Number(options.limit);
    /** Current rows: a new array after every change. */
    this.rows = [];
    /** True once the first fetch completed. */
    this.loaded = false;
    /** The last error (REST or subscription), or null. */
    this.error = null;
    this._fetchGen = 0;
    this._buffer = null; // changes received while a fetch is in flight
    this._needsFetch = true;
    this._retryTimer = null;
    this._retryDelay = 0;
    /** Resolves with the rows once the first fetch completed. */
    this.ready = new Promise((resolve) => {
      this._resolveReady = resolve;
    });
    this._sub = pulse.subscribe(table, {
      filter: options.filter,
      onReady: (info) => {
        call(options.onReady, info);
        if (this._needsFetch && !this._buffer) this._load();
      },
      onChange: (ev) => this._onChange(ev),
      onReset: (info) => {
        call(options.onReset, info);
        this._clear(null);
        this._load();
      },
      onError: (error) => {
        this.error = error;
        call(options.onError, error);
      },
    });
    /** Table name as events carry it. */
    this.table = this._sub.table;
    /** Filter string of the underlying subscription. */
    this.filter = this._sub.filter;
  }

  /** Whether the query is still subscribed. */
  get active() {
    return this._sub.active;
  }

  /** Refetch the rows (changes arriving meanwhile are applied on top). */
  refresh() {
    return this._load();
  }

  /** Stop following the table. */
  unsubscribe() {
    this._fetchGen++;
    clearTimeout(this._retryTimer);
    this._buffer = null;
    this._sub.unsubscribe();
  }

  /** Alias of `unsubscribe()`. */
  close() {
    this.unsubscribe();
  }

  _emit(ev) {
    call(this._options.onRows, this.rows, ev);
  }

  _clear(ev) {
    this.rows = [];
    this._emit(ev);
  }

  async _load() {
    if (!this._sub.active) return;
    const gen = ++this._fetchGen;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._buffer = [];
    this._needsFetch = true;
    const { order, limit, select } = this._options;
    let fetched;
    try {
      fetched = await this._pulse._rest(this._sub.table, { filter: this._sub.filter, order, limit, select });
    } catch (error) {
      if (gen !== this._fetchGen || !this._sub.active) return;
      // Keep what we have, with the buffered changes, and try again later.
      const buffered = this._buffer;
      this._buffer = null;
      if (buffered.length) {
        for (const ev of buffered) this.rows = this._applyChange(this.rows, ev);
        this._emit(buffered[buffered.length - 1]);
      }
      this.error = error;
      call(this._options.onError, error);
      if (error.status >= 400 && error.status < 500) return; // a bad query stays bad
      this._retryDelay = Math.min(10000, Math.max(500, this._retryDelay * 2));
      this._retryTimer = setTimeout(() => this._load(), this._retryDelay);
      return;
    }
    if (gen !== this._fetchGen || !this._sub.active) return;
    const buffered = this._buffer;
    this._buffer = null;
    this._needsFetch = false;
    this._retryDelay = 0;
    this.error = null;
    let rows = this._order ? fetched.slice().sort(this._order) : fetched.slice();
    for (const ev of buffered) rows = this._applyChange(rows, ev);
    this.rows = rows;
    this.loaded = true;
    this._emit(null);
    this._resolveReady(this.rows);
  }

  _onChange(ev) {
    call(this._options.onChange, ev);
    if (this._buffer) {
      this._buffer.push(ev);
      return;
    }
    if (ev.op === "TRUNCATE") {
      this._clear(ev);
      this._load();
      return;
    }
    const before = this.rows.length;
    this.rows = this._applyChange(this.rows, ev);
    this._emit(ev);
    if (this._limit && ev.op === "DELETE" && before >= this._limit && this.rows.length < this._limit) {
      this._load(); // a slot emptied: pull in the next row
    }
  }

  _project(row) {
    const select = this._options.select;
    // Only plain column lists are projected; anything fancier keeps the whole row.
    if (!select || !/^[\w\s,]+$/.test(select)) return row;
    const out = {};
    for (const column of select.split(",")) {
      const name = column.trim();
      if (name in row) out[name] = row[name];
    }
    return out;
  }

  _applyChange(rows, ev) {
    if (ev.op === "TRUNCATE") return [];
    const index = rows.findIndex((row) => samePk(row, ev.pk));
    if (ev.op === "DELETE") {
      if (index < 0) return rows;
      return rows.slice(0, index).concat(rows.slice(index + 1));
    }
    if (!ev.row) return rows;
    const row = this._project(ev.row);
    let next;
    if (!this._order) {
      next = rows.slice();
      if (index >= 0) next[index] = row;
      else next.push(row);
    } else {
      next = index >= 0 ? rows.slice(0, index).concat(rows.slice(index + 1)) : rows.slice();
      let at = next.length;
      // Insert after equal keys, so ties keep their arrival order.
      while (at > 0 && this._order(next[at - 1], row) > 0) at--;
      next.splice(at, 0, row);
    }
    if (this._limit && next.length > this._limit) next.length = this._limit;
    return next;
  }
}
