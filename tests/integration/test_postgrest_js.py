"""postgrest-js (``@supabase/postgrest-js`` from npm), unmodified, on Node.js,
pointed at a real gateway's ``/v1/rest``.

Why: supabase-js reads and writes through postgrest-js; "change the URL only"
holds if its own requests (headers, ``columns=`` on bulk inserts, ``Prefer``
combinations, how it reads ``Content-Range`` and errors) get PostgREST's
answers.  Reads are compared with the SQL PostgreSQL runs; writes with the
rows left in the table.  The package comes from the npm registry as
published (tests/npm_packages.py); Node.js is the distribution's ``nodejs``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.test_postgrest_client import _schema
from tests.npm_packages import package_file

VERSION = "2.119.2"
SUITE = Path(__file__).with_name("postgrest_js_suite.mjs")


def _run_suite(url: str, tmp_path: Path) -> dict[str, Any]:
    module = tmp_path / "postgrest.mjs"
    module.write_bytes(
        package_file("@supabase/postgrest-js", VERSION, "dist/index.mjs")
    )
    node = shutil.which("node") or shutil.which("nodejs")
    assert node is not None, "the test command installs Debian's nodejs"
    done = subprocess.run(
        [node, str(SUITE), module.as_uri(), url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def _ids(conn: Any, where: str) -> list[dict[str, int]]:
    rows = await conn.fetch(f"select id from docs where {where} order by id")
    return [{"id": r["id"]} for r in rows]


async def test_postgrest_js_reads_and_writes_unchanged(
    conn, gateway_factory, tmp_path: Path
):
    await _schema(conn)
    await conn.execute(
        "create function doc_pages(min_pages int) returns setof docs language sql "
        "stable as $$ select * from docs where pages >= min_pages order by id $$"
    )
    gw = gateway_factory("--rest-writes", "--rest-function", "doc_pages")
    expected_sql = {
        "eq": "shipment_id = 1",
        "neq": "shipment_id <> 1",
        "gt": "pages > 3",
        "lte": "pages <= 12",
        "like": "title like '%o%'",
        "ilike": "title ilike 'p%'",
        "is_null": "pages is null",
        "in": "id in (1, 3, 5)",
        "contains_array": "tags @> '{urgent}'",
        "contains_json": """meta @> '{"lang": "en"}'""",
        "overlaps": "tags && '{fragile,none}'",
        "text_search": "to_tsvector('english', title) "
        "@@ to_tsquery('english', 'list | form')",
        "not": "pages is not null",
        "or": "pages > 20 or shipment_id is null",
        "filter": "pages >= 10",
        "match": "shipment_id = 1 and pages = 3",
        "like_any": "title like any ('{%list%,%form%}')",
    }
    # The reads run before any write: what PostgreSQL selects from the seed.
    expected = {name: await _ids(conn, where) for name, where in expected_sql.items()}
    out = _run_suite(gw.url + "/v1/rest", tmp_path)
    assert all(expected.values()) and len({str(v) for v in expected.values()}) > 10
    for name in expected_sql:
        case = out[name]
        assert case["error"] is None, (name, case)
        assert case["data"] == expected[name], name
    assert out["embed_single"]["data"] == {
        "id": 1,
        "title": "bill of lading",
        "shipments": {"port": "Rotterdam"},
    }
    assert out["embed_inner"]["data"] == [{"id": 3, "shipments": {"port": "Hamburg"}}]
    assert out["range_count"]["data"] == [{"id": 2}, {"id": 3}]
    assert out["range_count"]["count"] == 5 and out["range_count"]["status"] == 206
    assert out["head_count"]["count"] == 5 and out["head_count"]["data"] is None
    none = out["maybe_single_none"]
    assert none["data"] is None and none["error"] is None
    assert out["single_many"]["error"]["code"] == "PGRST116"
    assert out["single_many"]["status"] == 406
    assert out["unknown_column"]["error"]["code"] == "42703"
    assert out["unknown_table"]["status"] == 404
    for name in ("rpc_post", "rpc_get"):
        assert [r["id"] for r in out[name]["data"]] == [2, 4], name
    assert out["rpc_unlisted"]["error"]["code"] == "PGRST202"
    assert out["supabase_path"]["data"] == expected["eq"]
    assert out["csv"]["data"] == 'id,title\n1,"bill of lading"\n2,invoice'
    # Writes.
    assert out["insert"]["status"] == 201
    assert out["insert"]["data"] == [{"id": 10, "title": "new", "tags": []}]
    assert out["insert_bulk_defaults"]["data"] == [
        {"id": 11, "tags": []},
        {"id": 12, "tags": ["x"]},
    ]
    assert out["upsert"]["data"] == [
        {"id": 10, "title": "newer"},
        {"id": 13, "title": "c"},
    ]
    assert out["upsert_ignore"]["data"] == []
    assert sorted(r["id"] for r in out["update"]["data"]) == [11, 12]
    assert out["update_count"]["count"] == 1 and out["update_count"]["status"] == 204
    assert sorted(r["id"] for r in out["delete"]["data"]) == [12, 13]
    conflict = out["insert_conflict"]
    assert conflict["status"] == 409 and conflict["error"]["code"] == "23505"
    left = await conn.fetch("select id, title, pages from docs where id >= 10")
    assert sorted((r["id"], r["title"], r["pages"]) for r in left) == [
        (10, "newer", 2),
        (11, "a", 99),
    ]
