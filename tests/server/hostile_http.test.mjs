// Hostile clients against a real `narwhal serve`, mostly over raw sockets: bodies built to exhaust the parser
// (deep, wide, huge numbers, 30 MB), requests refused on their head before any body byte is read, protocol edge
// cases (431, 405, 100-continue, HTTP/1.0, smuggling-shaped framing), idle and slow clients, the connection cap,
// a client that leaves mid-request, and signals during a drain. Timeouts are short flags so that each takes
// seconds.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { readFileSync } from "node:fs";
import { KEY, startServer, expectError, metric, eventually, expectNoLeaks, sleep } from "./narwhal_server.mjs";

const MIB = 1 << 20;
let main, capped;

before(async () => {
  [main, capped] = await Promise.all([
    startServer(["--timeout-keep-alive", "1", "--timeout-request-head", "1", "--min-request-body-rate", "100000"]),
    startServer(["--limit-concurrency", "6", "--timeout-keep-alive", "30", "--timeout-request-head", "30",
                 "--max-request-body", String(MIB), "--max-request-body-in-flight", String(2 * MIB)]),
  ]);
});

after(() => { main.kill(); capped.kill(); });

// One raw connection: write bytes, read whole responses (Content-Length, chunked or until-close bodies), and
// see when the server closes it.
function connect(base) {
  const { hostname, port } = new URL(base);
  const socket = net.connect({ host: hostname, port: Number(port) });
  let buffered = Buffer.alloc(0), closed = false, wake = () => {};
  socket.on("data", (d) => { buffered = Buffer.concat([buffered, d]); wake(); });
  socket.on("close", () => { closed = true; wake(); });
  socket.on("error", () => {});
  // Resolves with ready()'s first defined value, or undefined once the connection closed; throws after `ms`.
  const until = async (ready, ms) => {
    const end = Date.now() + ms;
    for (;;) {
      const value = ready();
      if (value !== undefined || closed) return value;
      if (Date.now() >= end) throw new Error(`nothing after ${ms} ms`);
      await new Promise((r) => {
        const timer = setTimeout(r, end - Date.now());
        wake = () => { clearTimeout(timer); r(); };
      });
    }
  };
  const parse = () => {
    const end = buffered.indexOf("\r\n\r\n");
    if (end < 0) return undefined;
    const [statusLine, ...lines] = buffered.subarray(0, end).toString("latin1").split("\r\n");
    const headers = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    const status = Number(statusLine.split(" ")[1]);
    let at = end + 4, body = "";
    if (headers["content-length"] !== undefined) {
      if (buffered.length < at + Number(headers["content-length"])) return undefined;
      body = buffered.subarray(at, at + Number(headers["content-length"])).toString();
      at += Number(headers["content-length"]);
    } else if (headers["transfer-encoding"] === "chunked") {
      for (;;) {
        const line = buffered.indexOf("\r\n", at);
        if (line < 0) return undefined;
        const size = parseInt(buffered.subarray(at, line).toString(), 16);
        if (buffered.length < line + 2 + size + 2) return undefined;
        body += buffered.subarray(line + 2, line + 2 + size).toString();
        at = line + 2 + size + 2;
        if (size === 0) break;
      }
    } else if (status !== 100) {
      if (!closed) return undefined;  // the body ends with the connection
      body = buffered.subarray(at).toString();
      at = buffered.length;
    }
    buffered = buffered.subarray(at);
    return { status, headers, body, statusLine };
  };
  return {
    socket,
    connected: new Promise((r) => socket.once("connect", r)),
    write: (data) => socket.write(data),
    response: (ms = 15000) => until(parse, ms),
    // Whether the server closed the connection within `ms`.
    closes: async (ms) => { try { await until(() => undefined, ms); } catch { return false; } return true; },
    get closed() { return closed; },
    destroy: () => socket.destroy(),
  };
}

function request(method, path, body = "", headers = {}) {
  const h = { host: "narwhal", authorization: `Bearer ${KEY}`, "content-type": "application/json", ...headers };
  if (!("content-length" in h) && !("transfer-encoding" in h)) h["content-length"] = Buffer.byteLength(body);
  const lines = Object.entries(h).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  return `${method} ${path} HTTP/1.1\r\n${lines}\r\n${body}`;
}

async function exchange(base, bytes, ms) {
  const c = connect(base);
  c.write(bytes);
  const response = await c.response(ms);
  c.destroy();
  return response;
}

const rssMib = (process_) =>
  Number(readFileSync(`/proc/${process_.pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]) / 1024;
const nest = (depth, open, close) => open.repeat(depth) + "1" + close.repeat(depth);
const arrays = (depth) => nest(depth, "[", "]");
const objects = (depth) => nest(depth, '{"a":', "}");
const wide = (keys) => "{" + Array.from({ length: keys }, (_, i) => `"k${i}":${i}`).join(",") + "}";
// Request bodies with `value` (JSON text) spliced into each place a client controls a structure.
const placements = (value) => [
  ["/v1/chat/completions", `{"model":"tiny","max_tokens":2,"messages":${value}}`],
  ["/v1/chat/completions", `{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":"hi"}],` +
                           `"tools":[{"type":"function","function":{"name":"f","parameters":${value}}}]}`],
  ["/v1/chat/completions", `{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":"hi"}],` +
                           `"chat_template_kwargs":{"x":${value}}}`],
  ["/generate", `{"text":"hi","sampling_params":{"max_new_tokens":2,"stop":${value}}}`],
  ["/v1/completions", `{"model":"tiny","max_tokens":2,"prompt":${value}}`],
];

test("nesting 20,000 and 100,000 deep, arrays and objects, anywhere: 400 at once; 100 deep is served", async () => {
  for (const depth of [20000, 100000]) {
    for (const shape of [arrays, objects]) {
      for (const [route, body] of placements(shape(depth))) {
        const started = Date.now();
        const error = await expectError(main.post(route, body), 400, "invalid_json");
        assert.match(error.message, /nest deeper than 128/);
        assert.ok(Date.now() - started < 3000, `${route} ${depth} deep took ${Date.now() - started} ms`);
      }
    }
  }
  // Within the limit the recursive consumers (template, tojson, dump) take it: an answer, never a crash.
  for (const shape of [arrays, objects])
    for (const [route, body] of placements(shape(100))) assert.ok((await main.post(route, body)).status < 500, route);
  assert.equal((await fetch(`${main.base}/health`)).status, 200);
});

test("200,000-key objects anywhere are answered in seconds, and /health stays up meanwhile", async () => {
  const value = wide(200000);  // 2.6 MB
  const extraKeys = `{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":"hi"}],${value.slice(1)}`;
  for (const [route, body] of [...placements(value), ["/v1/chat/completions", extraKeys]]) {
    const started = Date.now();
    const [res, health] = await Promise.all([main.post(route, body),
                                             sleep(300).then(() => fetch(`${main.base}/health`))]);
    assert.ok(res.status < 500, `${route}: ${res.status} ${await res.text()}`);
    assert.equal(health.status, 200);
    assert.ok(Date.now() - started < 10000, `${route} took ${Date.now() - started} ms`);
  }
});

test("numbers beyond double's range and invalid UTF-8 are a 400, not a 500", async () => {
  for (const [route, body] of [...placements("1e400"),
                               ["/v1/chat/completions", '{"model":"tiny","messages":[],"temperature":-1e400}']]) {
    const error = await expectError(main.post(route, body), 400, "invalid_json");
    assert.match(error.message, /out of range/);
  }
  for (const bytes of [[0xc0, 0x80], [0xed, 0xa0, 0x80], [0xff], [0xf4, 0x90, 0x80, 0x80]]) {
    const body = Buffer.concat([Buffer.from('{"model":"tiny","prompt":"a'), Buffer.from(bytes), Buffer.from('"}')]);
    const head = request("POST", "/v1/completions", "", { "content-length": body.length });
    const res = await exchange(main.base, Buffer.concat([Buffer.from(head), body]));
    assert.equal(res.status, 400);
    assert.match(JSON.parse(res.body).error.message, /invalid UTF-8/);
  }
});

test("without the API key a 30 MB body is never read: 401 on the head, memory stays flat", async () => {
  const before = rssMib(main.process);
  const clients = Array.from({ length: 40 }, () => connect(main.base));
  for (const c of clients)
    c.write(request("POST", "/v1/chat/completions", "", { authorization: null, "content-length": 30 * MIB }));
  for (const c of clients) assert.equal((await c.response()).status, 401, "answered before any body byte was sent");
  const junk = Buffer.alloc(4 * MIB, "x");  // what an attacker sends anyway
  for (const c of clients) c.write(junk);
  for (const c of clients) assert.ok(await c.closes(5000), "and the connection is closed soon after");
  const grown = rssMib(main.process) - before;
  console.log(`40 unauthenticated 30 MB uploads: server RSS ${before.toFixed(0)} -> +${grown.toFixed(1)} MiB`);
  assert.ok(grown < 64, `RSS grew ${grown} MiB`);
  const tooLarge = await exchange(main.base,
                                  request("POST", "/v1/chat/completions", "", { "content-length": 40 * MIB }));
  assert.equal(tooLarge.status, 413);
});

test("oversized headers get 431; a wrong method 405 with Allow", async () => {
  assert.equal((await exchange(main.base, request("GET", "/health", "", { "x-big": "a".repeat(100000) }))).status, 431);
  for (const [method, path, allow] of [["GET", "/v1/chat/completions", "POST"], ["POST", "/health", "GET"],
                                       ["DELETE", "/v1/models", "GET"]]) {
    const res = await exchange(main.base, request(method, path));
    assert.equal(res.status, 405, `${method} ${path}`);
    assert.equal(res.headers.allow, allow);
    assert.equal(JSON.parse(res.body).error.code, "method_not_allowed");
  }
});

test("Expect: 100-continue answered once the head is accepted, or the final status given; others get 417", async () => {
  const body = JSON.stringify({ model: "tiny", prompt: "hi", max_tokens: 2 });
  const accepted = connect(main.base);
  accepted.write(request("POST", "/v1/completions", "", { expect: "100-continue", "content-length": body.length }));
  assert.equal((await accepted.response()).status, 100);
  accepted.write(body);
  assert.equal((await accepted.response()).status, 200);
  accepted.destroy();
  const refused = connect(main.base);
  refused.write(request("POST", "/v1/completions", "", { expect: "100-continue", "content-length": body.length,
                                                           authorization: "Bearer wrong" }));
  assert.equal((await refused.response()).status, 401);
  assert.ok(await refused.closes(5000));
  assert.equal((await exchange(main.base, request("POST", "/v1/completions", body, { expect: "magic" }))).status, 417);
});

test("an HTTP/1.0 client gets its stream without chunked encoding, ended by the close", async () => {
  const body = JSON.stringify({ model: "tiny", prompt: "hi", max_tokens: 4, stream: true });
  const c = connect(main.base);
  c.write(request("POST", "/v1/completions", body).replace("HTTP/1.1", "HTTP/1.0"));
  const res = await c.response();
  assert.equal(res.status, 200);
  assert.equal(res.headers["transfer-encoding"], undefined);
  assert.equal(res.headers.connection, "close");
  assert.ok(res.body.startsWith("data: {") && res.body.endsWith("data: [DONE]\n\n"), res.body.slice(0, 300));
  assert.ok(c.closed);
});

test("framing that could smuggle a request: 501 or 400 and the connection closed, nothing else answered", async () => {
  const smuggled = request("GET", "/health", "", { "content-length": null });
  for (const [headers, status] of [[{ "transfer-encoding": "chunked, identity" }, 501],
                                   [{ "transfer-encoding": "gzip" }, 501],
                                   [{ "transfer-encoding": "gzip, chunked" }, 501],
                                   [{ "transfer-encoding": "chunked", "content-length": "5" }, 400]]) {
    const c = connect(main.base);
    c.write(request("POST", "/v1/completions", "", headers) + "5\r\nhello\r\n0\r\n\r\n" + smuggled);
    const res = await c.response();
    assert.equal(res.status, status, JSON.stringify(headers));
    assert.equal(res.headers.connection, "close");
    assert.equal(await c.response(3000), undefined, "no second response: the connection closed");
  }
  // A well-formed chunked body is fine.
  const body = JSON.stringify({ model: "tiny", prompt: "hi", max_tokens: 2 });
  const chunked = `${(20).toString(16)}\r\n${body.slice(0, 20)}\r\n${(body.length - 20).toString(16)}\r\n` +
                  `${body.slice(20)}\r\n0\r\n\r\n`;
  const res = await exchange(main.base,
                             request("POST", "/v1/completions", chunked, { "transfer-encoding": "chunked" }));
  assert.equal(res.status, 200, res.body);
});

test("pipelined requests on one connection are answered in order", async () => {
  const c = connect(main.base);
  c.write(request("GET", "/health") + request("GET", "/v1/models") +
          request("POST", "/v1/completions", JSON.stringify({ model: "tiny", prompt: "hi", max_tokens: 2 })));
  assert.equal((await c.response()).status, 200);
  assert.equal(JSON.parse((await c.response()).body).data[0].id, "tiny");
  assert.equal(JSON.parse((await c.response()).body).object, "text_completion");
  c.destroy();
});

test("idle, slow-head and slow-body clients are closed after their timeouts (1 s here)", async () => {
  const silent = connect(main.base);
  await silent.connected;
  const opened = Date.now();
  assert.ok(await silent.closes(4000), "a connection that never sends is closed");
  assert.ok(Date.now() - opened >= 800, "not before the keep-alive timeout");
  const reused = connect(main.base);
  reused.write(request("GET", "/health"));
  const res = await reused.response();
  assert.equal(res.status, 200);
  assert.equal(res.headers["keep-alive"], "timeout=1");
  assert.ok(await reused.closes(4000), "an idle keep-alive connection is closed");
  const slowHead = connect(main.base);
  const drip = setInterval(() => slowHead.write("x"), 100);
  slowHead.write("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
  assert.ok(await slowHead.closes(4000), "a head sent a byte at a time is cut off");
  clearInterval(drip);
  const slowBody = connect(main.base);
  slowBody.write(request("POST", "/v1/completions", "", { "content-length": 10000 }) + "{");
  const dripBody = setInterval(() => slowBody.write(" "), 50);
  assert.ok(await slowBody.closes(5000), "a body slower than --min-request-body-rate is cut off");
  clearInterval(dripBody);
});

test("at the connection cap the longest-idle connection makes room; with none idle the new one gets 503", async () => {
  const idle = [];
  for (let i = 0; i < 6; ++i) {
    idle.push(connect(capped.base));
    await idle[i].connected;
    await sleep(20);
  }
  const newcomer = await exchange(capped.base, request("GET", "/health"));
  assert.equal(newcomer.status, 200);
  assert.ok(await idle[0].closes(3000), "the oldest idle connection was closed");
  assert.ok(idle.slice(1).every((c) => !c.closed));
  for (const c of idle) c.destroy();
  await sleep(300);
  const busy = [];
  for (let i = 0; i < 6; ++i) {
    busy.push(connect(capped.base));
    busy[i].write("GET /health HTTP/1.1\r\nHost: x\r\n");  // a head in progress: not idle
  }
  await sleep(300);
  const refused = await exchange(capped.base, "");
  assert.equal(refused.status, 503);
  assert.equal(JSON.parse(refused.body).error.code, "unavailable");
  for (const c of busy) c.destroy();
});

test("request bodies past --max-request-body-in-flight get 503 while the others are read", async () => {
  await sleep(300);  // the last test's connections are gone
  const heads = [];
  for (let i = 0; i < 3; ++i) {
    heads.push(connect(capped.base));
    heads[i].write(request("POST", "/v1/completions", "", { "content-length": 800 * 1024 }));
    await sleep(100);
  }
  const third = await heads[2].response(5000);
  assert.equal(third.status, 503, "2 x 800 KiB fit in 2 MiB, a third does not");
  assert.equal(heads[0].closed || heads[1].closed, false, "the first two are still being read");
  for (const c of heads) c.destroy();
});

test("a client that sends one byte more and leaves has its non-streamed request aborted", async () => {
  const aborted = await metric(main.base, "narwhal:num_aborted_requests_total");
  const body = JSON.stringify({ model: "tiny", prompt: "long", max_tokens: 8000, ignore_eos: true });
  const c = connect(main.base);
  c.write(request("POST", "/v1/completions", body) + "G");  // the start of a pipelined request
  assert.ok(await eventually(async () => await metric(main.base, "narwhal:num_running_reqs") === 1), "it runs");
  c.socket.end();
  assert.ok(await eventually(async () => await metric(main.base, "narwhal:num_aborted_requests_total") > aborted,
                             5000), "the request was aborted, not run to max_tokens");
  assert.ok(await eventually(async () => await metric(main.base, "narwhal:num_running_reqs") === 0));
  c.destroy();
});

test("/health answers within 2 s while four 30 MB bodies are read, parsed and handled", async () => {
  const text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(30 * MIB / 56);
  const values = JSON.stringify(Array.from({ length: 30 * MIB / 64 }, (_, i) => `value ${i} `.padEnd(60, "x")));
  const bodies = [JSON.stringify({ model: "tiny", max_tokens: 1, messages: [{ role: "user", content: text }] }),
                  JSON.stringify({ model: "tiny", max_tokens: 1, prompt: text }),
                  `{"model":"tiny","max_tokens":1,"prompt":"hi","padding":${values}}`,
                  `{"model":"tiny","max_tokens":1,"messages":[{"role":"user","content":"hi"}],"padding":${values}}`];
  const routes = ["/v1/chat/completions", "/v1/completions", "/v1/completions", "/v1/chat/completions"];
  const probe = connect(main.base);
  let done = false, worst = 0, probes = 0;
  const probing = (async () => {
    while (!done) {
      const started = Date.now();
      probe.write(request("GET", "/health"));
      assert.equal((await probe.response(5000)).status, 200);
      worst = Math.max(worst, Date.now() - started);
      ++probes;
      await sleep(100);
    }
  })();
  const started = Date.now();
  const statuses = await Promise.all(bodies.map(async (body, i) =>
    (await exchange(main.base, request("POST", routes[i], body), 120000)).status));
  done = true;
  await probing;
  probe.destroy();
  console.log(`4 x 30 MB bodies answered ${JSON.stringify(statuses)} in ${Date.now() - started} ms; ${probes} ` +
              `/health probes meanwhile, the slowest ${worst} ms; server RSS ${rssMib(main.process).toFixed(0)} MiB`);
  assert.ok(statuses.every((s) => s < 500), JSON.stringify(statuses));
  assert.ok(worst < 2000, `a /health probe took ${worst} ms`);
});

test("nothing leaks on the main server", async () => {
  await expectNoLeaks(main.base);
});

test("a second SIGTERM (and a SIGINT) during the drain is logged; every request still gets its end", async () => {
  const server = await startServer([]);
  const streams = Array.from({ length: 3 }, async (_, i) => {
    const res = await server.post("/v1/completions", { model: "tiny", prompt: `s${i}`, max_tokens: 60,
                                                       ignore_eos: true, stream: true });
    return res.text();
  });
  assert.ok(await eventually(async () => await metric(server.base, "narwhal:num_running_reqs") === 3));
  // And a request whose head was accepted but whose body is still coming: the drain waits for it too.
  const late = connect(server.base);
  const body = JSON.stringify({ model: "tiny", prompt: "late", max_tokens: 2 });
  late.write(request("POST", "/v1/completions", "", { "content-length": body.length }) + body.slice(0, 10));
  await sleep(100);
  const exited = new Promise((resolve) => server.process.on("exit", (code, signal) => resolve({ code, signal })));
  server.process.kill("SIGTERM");
  await sleep(200);
  server.process.kill("SIGTERM");
  late.write(body.slice(10));
  await sleep(100);
  server.process.kill("SIGINT");
  const answer = await late.response();
  assert.equal(answer.status, 503, "answered (the server is shutting down), not cut off");
  for (const text of await Promise.all(streams)) assert.ok(text.trimEnd().endsWith("data: [DONE]"), text.slice(-200));
  assert.deepEqual(await exited, { code: 0, signal: null });
});
