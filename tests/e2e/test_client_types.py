"""client.d.ts: the browser client's TypeScript declarations, checked by the
TypeScript compiler (from npm, run in Chromium: no Node.js needed) against a
program that uses the whole client, with ``@ts-expect-error`` lines that must
still be errors; and every export of client.js is declared."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, Route

from tests.e2e.support import DemoGateway, deadline
from tests.npm_packages import package_file, unpkg_file

pytestmark = pytest.mark.e2e

STATIC = Path(__file__).resolve().parents[2] / "src" / "pgpulse" / "static"
TYPESCRIPT = ("typescript", "5.6.3")

USAGE = """
import { connect, splitTop, STATES, LiveQuery, PulseError, Pulse } from "./client.js";
import type { State, Change, Column } from "./client.js";

type Doc = { id: number; title: string; tags: string[] };

const pulse: Pulse = connect({
  url: "", token: async () => "t", backoff: { initial: 100 },
});
const remove: () => void = pulse.onState((state: State, detail) => void detail);
const live: LiveQuery<Doc> = pulse.live<Doc>("documents", {
  select: "id,title,tags",
  filter: { status: "eq.final" },
  order: "id.desc",
  limit: 10,
  onRows: (rows) => rows.map((row) => row.title.toUpperCase()),
  onError: (error: PulseError) => error.status,
});
const stop: () => void = live.subscribe((rows) => rows.length);
const first: Doc | undefined = live.getSnapshot()[0];
const columns: readonly Column[] = live.columns;
live.ready.then((rows) => rows.map((row) => row.id));
const sub = pulse.subscribe<Doc>("documents", {
  filter: "status=eq.final;tags=cs.{a}",
  onInsert: (change: Change<Doc>) => change.row?.title,
  onReset: (info) => info.reason,
});
const parts: string[] = splitTop("a,(b,c)");
const states: readonly State[] = STATES;
sub.unsubscribe();
stop();
remove();
live.refresh();
live.unsubscribe();
pulse.close();
void [first, columns, parts, states];

// Each of these must stay an error: the declarations are not `any`.
// @ts-expect-error rows are read-only
live.rows.push({ id: 1, title: "x", tags: [] });
// @ts-expect-error limit is a number
pulse.live("documents", { limit: "ten" });
// @ts-expect-error no such state
const wrong: State = "open";
// @ts-expect-error a row's columns are typed
live.getSnapshot()[0].title.toFixed();
"""

CHECK = """
([files, usage]) => {
  const options = {
    strict: true, noEmit: true, target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ["lib.es2022.d.ts", "lib.dom.d.ts"], types: [],
  };
  const all = { ...files, "/app/usage.ts": usage };
  const host = {
    fileExists: (name) => name in all,
    readFile: (name) => all[name],
    getSourceFile: (name, target) =>
      name in all ? ts.createSourceFile(name, all[name], target) : undefined,
    getDefaultLibFileName: () => "/lib/lib.d.ts",
    getDefaultLibLocation: () => "/lib",
    writeFile: () => {},
    getCurrentDirectory: () => "/app",
    getCanonicalFileName: (name) => name,
    useCaseSensitiveFileNames: () => true,
    getNewLine: () => "\\n",
    directoryExists: (dir) =>
      Object.keys(all).some((name) => name.startsWith(dir + "/")),
    getDirectories: () => [],
  };
  const program = ts.createProgram(["/app/usage.ts"], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const line = d.file
      ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 : 0;
    const where = d.file ? `${d.file.fileName}:${line}` : "";
    return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, "\\n")}`;
  });
}
"""


def _libs() -> dict[str, str]:
    name, version = TYPESCRIPT
    package_file(name, version, "package.json")  # unpack once
    from tests.npm_packages import CACHE

    lib = CACHE / f"{name}-{version}" / "lib"
    return {f"/lib/{p.name}": p.read_text() for p in lib.glob("lib.*.d.ts")}


@deadline(120)
async def test_the_declarations_type_check_a_program_using_the_client(
    page: Page, gateway: DemoGateway
) -> None:
    served = httpx.get(gateway.url + "/v1/client.d.ts", timeout=10)
    assert served.status_code == 200
    assert served.text == (STATIC / "client.d.ts").read_text()

    async def serve_npm(route: Route) -> None:
        body = unpkg_file(route.request.url)
        if body is None:
            await route.abort()
        else:
            await route.fulfill(body=body, content_type="text/javascript")

    await page.route("https://unpkg.com/**", serve_npm)
    await page.goto(gateway.url + "/healthz")
    name, version = TYPESCRIPT
    await page.add_script_tag(
        url=f"https://unpkg.com/{name}@{version}/lib/typescript.js"
    )
    files = {**_libs(), "/app/client.d.ts": served.text}
    diagnostics = await page.evaluate(CHECK, [files, USAGE])
    assert diagnostics == []
    # And the check checks: a wrong use is reported.
    broken = USAGE.replace("// @ts-expect-error limit is a number\n", "")
    diagnostics = await page.evaluate(CHECK, [files, broken])
    assert any("limit" in d or "number" in d for d in diagnostics), diagnostics


def test_every_export_of_the_client_is_declared() -> None:
    js = (STATIC / "client.js").read_text()
    dts = (STATIC / "client.d.ts").read_text()
    exported = set(re.findall(r"^export (?:const|function|class) (\w+)", js, re.M))
    declared = set(
        re.findall(r"^export declare (?:const|function|class) (\w+)", dts, re.M)
    )
    assert exported and exported == declared, (exported, declared)
