// node-hello: a tiny Strata example app using only Node's standard library.
//
// Listens on 127.0.0.1:$PORT.
//   GET /         -> 200 "hello from node-hello (release $STRATA_RELEASE)\n"
//   GET /healthz  -> 200 "ok"
// Logs one line per request to stdout and shuts down cleanly on SIGTERM/SIGINT.

"use strict";

const http = require("node:http");

const APP = "node-hello";
const RELEASE = process.env.STRATA_RELEASE || "dev";
const PORT = Number(process.env.PORT);

if (!Number.isInteger(PORT) || PORT <= 0) {
  console.error(`${APP}: set PORT to the port to listen on`);
  process.exit(2);
}

const server = http.createServer((req, res) => {
  const path = new URL(req.url, "http://localhost").pathname;
  let status = 200;
  let body;
  if (req.method !== "GET" && req.method !== "HEAD") {
    status = 405;
    body = "method not allowed\n";
  } else if (path === "/") {
    body = `hello from ${APP} (release ${RELEASE})\n`;
  } else if (path === "/healthz") {
    body = "ok";
  } else {
    status = 404;
    body = "not found\n";
  }
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(req.method === "HEAD" ? undefined : body);
  console.log(`${APP}: ${req.socket.remoteAddress} "${req.method} ${req.url}" ${status}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    console.log(`${APP}: received ${signal}, shutting down`);
    server.close(() => {
      console.log(`${APP}: stopped`);
      process.exit(0);
    });
    server.closeAllConnections();
  });
}

server.listen(PORT, "127.0.0.1", () => {
  console.log(`${APP}: release ${RELEASE} listening on 127.0.0.1:${PORT}`);
});
