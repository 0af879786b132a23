/**
 * TypeScript declarations of the pgpulse browser client (`/v1/client.js`),
 * served beside it at `/v1/client.d.ts`.
 *
 *     import { connect } from "/v1/client.js";
 *     const pulse = connect({ token: () => getToken() });
 *     const live = pulse.live<{ id: number; title: string }>("documents", {
 *       select: "id,title", order: "id",
 *     });
 */

/** Connection states, in the order a healthy connection usually meets them. */
export type State = "connecting" | "live" | "reconnecting" | "error" | "closed";
export declare const STATES: readonly State[];

/** JSON values as PostgreSQL's `to_jsonb` writes rows. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Row = { [column: string]: Json };

/** Filters in PostgREST's grammar: `"a=eq.1;b=in.(x,y)"`, a list, or `{a: "eq.1"}`. */
export type Filter = string | string[] | Record<string, string | number | boolean>;

/** A token, or a function (async or not) returning a fresh one. */
export type TokenSource = string | (() => string | null | Promise<string | null>);

export interface Backoff {
  /** First delay in ms (default 500). */
  initial?: number;
  /** Largest delay in ms (default 10000). */
  max?: number;
  factor?: number;
  /** Fraction of randomness (default 0.3). */
  jitter?: number;
}

export interface ConnectOptions {
  /** Base URL of the gateway ("" = same origin). */
  url?: string;
  token?: TokenSource;
  backoff?: Backoff;
  /** Milliseconds subscription changes are coalesced (default 10). */
  debounce?: number;
  /** Resume from a saved cursor (an event id). */
  cursor?: string;
  probeTimeout?: number;
  /** For tests: an EventSource and a fetch to use instead of the browser's. */
  EventSource?: typeof EventSource;
  fetch?: typeof fetch;
}

/** An error the server or the client reported (`status`: HTTP status, or 0). */
export declare class PulseError extends Error {
  constructor(message: string, options?: { status?: number; table?: string | null });
  readonly status: number;
  readonly table: string | null;
}

/** A committed change, as the server sends it, plus its event id. */
export interface Change<R extends Row = Row> {
  table: string;
  op: "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE";
  pk: Row;
  row: R | null;
  old: R | null;
  ts?: string;
  /** An UPDATE that moved the row into (INSERT) or out of (DELETE) the filter. */
  moved?: boolean;
  id?: string | null;
}

export interface ReadyInfo {
  cursor?: string;
  resumed?: boolean;
  [key: string]: unknown;
}

export interface ResetInfo {
  reason?: string;
  [key: string]: unknown;
}

export interface SubscribeOptions<R extends Row = Row> {
  filter?: Filter;
  onChange?(change: Change<R>): void;
  onInsert?(change: Change<R>): void;
  onUpdate?(change: Change<R>): void;
  onDelete?(change: Change<R>): void;
  onTruncate?(change: Change<R>): void;
  onReady?(info: ReadyInfo): void;
  onReset?(info: ResetInfo): void;
  onError?(error: PulseError): void;
}

export declare class Subscription {
  readonly table: string;
  readonly filter: string;
  /** The `sub=` value sent to the server. */
  readonly spec: string;
  readonly active: boolean;
  unsubscribe(): void;
}

export interface Column {
  name: string;
  /** PostgreSQL's type name (`integer`, `timestamp with time zone`; `json` for embeds). */
  type: string;
  nullable: boolean;
}

export interface LiveOptions<R extends Row = Row> {
  /** Columns and embeds (`id,title,shipment:shipments(port)`); must include the key. */
  select?: string;
  filter?: Filter;
  /** `updated_at.desc,id` (ties are broken by the key). */
  order?: string;
  limit?: number;
  /** The rows after the snapshot and after every change. */
  onRows?(rows: readonly R[], change: null): void;
  /** Each patch, as a change of the query's rows. */
  onChange?(change: Change<R>): void;
  onError?(error: PulseError): void;
}

/** The rows of a query, kept equal to the database; a store. */
export declare class LiveQuery<R extends Row = Row> {
  readonly table: string;
  readonly filter: string;
  /** The rows, in the query's order: a new array after every change. */
  readonly rows: readonly R[];
  readonly columns: readonly Column[];
  /** The key columns that name rows. */
  readonly key: readonly string[];
  readonly version: number;
  readonly loaded: boolean;
  readonly error: PulseError | null;
  readonly state: State;
  readonly detail: Record<string, unknown> | null;
  readonly active: boolean;
  /** Resolves with the rows of the first snapshot. */
  readonly ready: Promise<readonly R[]>;
  /** Store contract: `fn(rows)` now and after every change; returns the unsubscribe function. */
  subscribe(fn: (rows: readonly R[]) => void): () => void;
  /** The current rows: the same array until the next change. */
  getSnapshot(): readonly R[];
  /** Ask the server for a fresh snapshot. */
  refresh(): void;
  unsubscribe(): void;
  close(): void;
}

export interface Stats {
  changes: number;
  connects: number;
  reconnects: number;
  resets: number;
}

/** One connection to a gateway: a change stream for subscriptions, and live queries. */
export declare class Pulse {
  constructor(options?: ConnectOptions);
  readonly url: string;
  /** The least healthy of the connection's streams. */
  readonly state: State;
  readonly detail: Record<string, unknown> | null;
  /** Cursor of the last event: where a reconnect resumes from. */
  readonly cursor: string | null;
  readonly stats: Stats;
  /** Called at once with the current state, then on every change; returns a remover. */
  onState(listener: (state: State, detail: Record<string, unknown> | null) => void): () => void;
  subscribe<R extends Row = Row>(table: string, options?: SubscribeOptions<R>): Subscription;
  live<R extends Row = Row>(table: string, options?: LiveOptions<R>): LiveQuery<R>;
  close(): void;
}

export declare function connect(options?: ConnectOptions): Pulse;

/** Split `text` on `sep` outside parentheses and double quotes. */
export declare function splitTop(text: string, sep?: string): string[];
