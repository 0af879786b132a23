// postgrest-js, unmodified, against a gateway's /v1/rest (run by
// test_postgrest_js.py: node postgrest_js_suite.mjs MODULE URL).
// Prints one JSON object: each case's {data, error, count, status}.
const [, , modulePath, url] = process.argv;
const { PostgrestClient } = await import(modulePath);
const db = new PostgrestClient(url);
const docs = () => db.from("docs").select("id").order("id");

const cases = {
  eq: docs().eq("shipment_id", 1),
  neq: docs().neq("shipment_id", 1),
  gt: docs().gt("pages", 3),
  lte: docs().lte("pages", 12),
  like: docs().like("title", "%o%"),
  ilike: docs().ilike("title", "p%"),
  is_null: docs().is("pages", null),
  in: docs().in("id", [1, 3, 5]),
  contains_array: docs().contains("tags", ["urgent"]),
  contains_json: docs().contains("meta", { lang: "en" }),
  overlaps: docs().overlaps("tags", ["fragile", "none"]),
  text_search: docs().textSearch("title", "list | form", { config: "english" }),
  not: docs().not("pages", "is", null),
  or: docs().or("pages.gt.20,shipment_id.is.null"),
  filter: docs().filter("pages", "gte", 10),
  match: docs().match({ shipment_id: 1, pages: 3 }),
  like_any: docs().likeAnyOf("title", ["%list%", "%form%"]),
  embed_single: db
    .from("docs")
    .select("id, title, shipments(port)")
    .eq("id", 1)
    .single(),
  embed_inner: db
    .from("docs")
    .select("id, shipments!inner(port)")
    .eq("shipments.port", "Hamburg"),
  range_count: db
    .from("docs")
    .select("id", { count: "exact" })
    .order("id")
    .range(1, 2),
  head_count: db.from("docs").select("*", { count: "exact", head: true }),
  maybe_single_none: db.from("docs").select("id").eq("id", 99).maybeSingle(),
  single_many: db.from("docs").select("id").single(),
  unknown_column: db.from("docs").select("nope"),
  unknown_table: db.from("nope").select("*"),
  rpc_post: db.rpc("doc_pages", { min_pages: 10 }),
  rpc_get: db.rpc("doc_pages", { min_pages: 10 }, { get: true }),
  rpc_unlisted: db.rpc("pg_sleep", { seconds: 1 }),
  csv: db.from("docs").select("id,title").order("id").limit(2).csv(),
};

const out = {};
for (const [name, query] of Object.entries(cases)) {
  const { data, error, count, status } = await query;
  out[name] = { data, error, count, status };
}

// Writes, in order (each case sees the previous ones).
const writes = [
  ["insert", () => db.from("docs").insert({ id: 10, title: "new", pages: 2 }).select("id, title, tags")],
  ["insert_bulk_defaults", () =>
    db
      .from("docs")
      .insert([{ id: 11, title: "a" }, { id: 12, title: "b", tags: ["x"] }], { defaultToNull: false })
      .select("id, tags")],
  ["upsert", () =>
    db
      .from("docs")
      .upsert([{ id: 10, title: "newer" }, { id: 13, title: "c" }])
      .select("id, title")],
  ["upsert_ignore", () =>
    db.from("docs").upsert({ id: 10, title: "ignored" }, { ignoreDuplicates: true }).select("id")],
  ["update", () => db.from("docs").update({ pages: 99 }).in("id", [11, 12]).select("id, pages")],
  ["update_count", () =>
    db.from("docs").update({ pages: 98 }, { count: "exact" }).eq("id", 13)],
  ["delete", () => db.from("docs").delete().gte("id", 12).select("id")],
  ["insert_conflict", () => db.from("docs").insert({ id: 10, title: "dup" })],
];
for (const [name, run] of writes) {
  const { data, error, count, status } = await run();
  out[name] = { data, error, count, status };
}
// Where supabase-js sends the same requests: createClient(url, key) talks to
// `${url}/rest/v1` with an apikey header.
const supabaseStyle = new PostgrestClient(url.replace(/\/v1\/rest$/, "/rest/v1"), {
  headers: { apikey: "anon-key" },
});
{
  const { data, error, status } = await supabaseStyle
    .from("docs").select("id").eq("shipment_id", 1).order("id");
  out.supabase_path = { data, error, status };
}
console.log(JSON.stringify(out));
