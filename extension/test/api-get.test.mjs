// apiGet against a real HTTP server on loopback: what each kind of answer becomes, and that a
// server that never answers, or stops in the middle of its body, costs at most the timeout.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";

import { apiGet } from "../lib/api.js";

const TOKEN = `ilk_${"t".repeat(43)}`;

/** A server whose answers come from `routes` (path → handler); stops after the test. */
async function serve(t, routes) {
  const seen = [];
  const sockets = new Set();
  const server = createServer((request, response) => {
    seen.push({ url: request.url, auth: request.headers.authorization });
    (routes[request.url] ?? ((_, res) => { res.writeHead(404); res.end(); }))(request, response);
  });
  server.on("connection", (socket) => { sockets.add(socket); socket.on("close", () => sockets.delete(socket)); });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => { for (const s of sockets) s.destroy(); server.close(); });
  return { cfg: { server: `http://127.0.0.1:${server.address().port}`, token: TOKEN }, seen };
}

const json = (status, body, headers = {}) => (_, res) => {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(typeof body === "string" ? body : JSON.stringify(body));
};

test("answers become verdicts, with the token sent as a Bearer and nowhere else", async (t) => {
  const { cfg, seen } = await serve(t, {
    "/api/v1/me": json(200, { accounts: [] }),
    "/api/v1/gone": json(404, { error: { code: "not_found" } }),
    "/api/v1/busy": json(429, { error: { code: "rate_limited" } }, { "Retry-After": "7" }),
    "/api/v1/broken": json(200, "<html>not json"),
    "/api/v1/list": json(200, [1, 2]),
    "/api/v1/down": json(503, "oops"),
  });
  assert.deepEqual(await apiGet(fetch, cfg, "/me"), { verdict: { state: "ok" }, body: { accounts: [] } });
  assert.equal((await apiGet(fetch, cfg, "/gone")).verdict.state, "not_found");
  const busy = await apiGet(fetch, cfg, "/busy");
  assert.equal(busy.verdict.state, "rate_limited");
  assert.equal(busy.verdict.retryAfterMs, 7000);
  // An "ok" whose body is not a JSON object would break whoever reads it: the server is not usable.
  assert.deepEqual(await apiGet(fetch, cfg, "/broken"), { verdict: { state: "unavailable" }, body: null });
  assert.deepEqual(await apiGet(fetch, cfg, "/list"), { verdict: { state: "unavailable" }, body: null });
  assert.equal((await apiGet(fetch, cfg, "/down")).verdict.state, "unavailable");
  assert.ok(seen.every((r) => r.auth === `Bearer ${TOKEN}` && !r.url.includes(TOKEN)));
});

test("a server that never answers, or stalls mid-body, is unreachable after the timeout", { timeout: 20_000 }, async (t) => {
  const { cfg } = await serve(t, {
    "/api/v1/silent": () => {}, // headers never come
    "/api/v1/stalls": (_, res) => { // headers and half a body, then nothing
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": "100" });
      res.write('{"card": {"address": "bob@exa');
    },
  });
  for (const path of ["/silent", "/stalls"]) {
    const started = Date.now();
    assert.deepEqual(await apiGet(fetch, cfg, path, 300), { verdict: { state: "unreachable" }, body: null }, path);
    const took = Date.now() - started;
    assert.ok(took >= 250 && took < 5000, `${path} took ${took} ms`); // the timeout, not a hang
  }
});

test("nothing listening is unreachable at once", async () => {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  await new Promise((resolve) => server.close(resolve)); // the port is free again: connections are refused
  const answer = await apiGet(fetch, { server: `http://127.0.0.1:${port}`, token: TOKEN }, "/me", 5000);
  assert.deepEqual(answer, { verdict: { state: "unreachable" }, body: null });
});
