// Benchmark peer (b): the common Node.js bridge.
//
// One PostgreSQL connection LISTENs on a channel fed by a per-row trigger that
// pg_notify()s the row as JSON; every notification is sent to every connected
// WebSocket client.  This is the shape of most "Postgres to WebSocket" posts.
//
//   node server.js --database-url postgresql://... --port 8001 [--channel docs]
"use strict";

const http = require("http");
const { Client } = require("pg");
const { WebSocketServer, WebSocket } = require("ws");

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const databaseUrl = arg("--database-url", process.env.DATABASE_URL);
const port = Number(arg("--port", "8001"));
const channel = arg("--channel", "docs");

async function main() {
  const pg = new Client({
    connectionString: databaseUrl,
    application_name: "node-bridge",
  });
  await pg.connect();
  await pg.query(`LISTEN ${channel}`);

  const server = http.createServer((req, res) => {
    if (req.url === "/healthz") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ status: "ok", clients: wss.clients.size }));
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  wss.on("connection", (ws) => {
    ws.on("error", () => ws.terminate());
    ws.send('{"type":"ready"}');
  });

  pg.on("notification", (msg) => {
    for (const ws of wss.clients) {
      if (ws.readyState === WebSocket.OPEN) ws.send(msg.payload);
    }
  });
  pg.on("error", (err) => {
    console.error("postgres connection lost:", err.message);
    process.exit(1);
  });

  server.listen(port, "127.0.0.1", 4096);
  for (const sig of ["SIGINT", "SIGTERM"]) {
    process.on(sig, () => process.exit(0));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
