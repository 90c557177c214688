// Load on a real `narwhal serve`: 1,000 concurrent streams, a client that stops reading, health probes, no leaks.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { KEY, startServer, metric, eventually, expectNoLeaks } from "./narwhal_server.mjs";

const STREAMS = 1000;
const QUEUE_CAP = 64 << 10;  // --max-queued-response-bytes: small, so a stalled reader passes it quickly
let server;

before(async () => {
  server = await startServer(["--max-queued-response-bytes", String(QUEUE_CAP), "--max-running-requests", "1024"]);
});

after(() => server.kill());

// The SSE events of a streamed response, read to its end.
async function sseEvents(res) {
  const text = await res.text();
  assert.ok(text.endsWith("\n\n"), "every event ends with a blank line");
  return text.slice(0, -2).split("\n\n").map((e) => {
    assert.ok(e.startsWith("data: "), `not an SSE data event: ${e.slice(0, 80)}`);
    return e.slice(6);
  });
}

function checkChatStream(events, maxTokens) {
  assert.equal(events.at(-1), "[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert.ok(chunks.length >= 2);
  const id = chunks[0].id;
  assert.match(id, /^chatcmpl-/);
  for (const c of chunks) {
    assert.equal(c.object, "chat.completion.chunk");
    assert.equal(c.id, id);
    assert.equal(c.model, "tiny");
    assert.equal(typeof c.created, "number");
    assert.equal(c.choices.length, 1);
    assert.equal(c.choices[0].index, 0);
    assert.ok("delta" in c.choices[0] && "finish_reason" in c.choices[0] && "logprobs" in c.choices[0]);
  }
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  const finishes = chunks.map((c) => c.choices[0].finish_reason).filter((f) => f !== null);
  assert.equal(finishes.length, 1, "exactly one chunk carries the finish reason");
  assert.ok(["stop", "length"].includes(finishes[0]));
  assert.notEqual(chunks.at(-1).choices[0].finish_reason, null, "the finish reason comes last");
  assert.ok(chunks.length <= maxTokens + 2);
}

test(`${STREAMS} concurrent streaming chat requests all finish with [DONE]`, async () => {
  const started = Date.now();
  let opened = 0, releaseAll;
  const allOpen = new Promise((r) => (releaseAll = r));
  const one = async (i) => {
    const res = await fetch(`${server.base}/v1/chat/completions`, {
      method: "POST", headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: `stream ${i}` }], max_tokens: 4,
                             stream: true }) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type"), /^text\/event-stream/);
    // Every stream holds its connection (body unread) until all have been answered: all are open at once.
    if (++opened === STREAMS) releaseAll();
    await allOpen;
    checkChatStream(await sseEvents(res), 4);
  };
  const all = Promise.all(Array.from({ length: STREAMS }, (_, i) => one(i)));
  await Promise.race([allOpen, all]);
  const openedAfter = (Date.now() - started) / 1000;
  assert.ok(await metric(server.base, "narwhal:open_connections") >= STREAMS, "every stream on its own connection");
  assert.equal((await fetch(`${server.base}/health`)).status, 200);
  await all;
  console.log(`${STREAMS} streams: all open after ${openedAfter.toFixed(1)} s, all done after ` +
              `${((Date.now() - started) / 1000).toFixed(1)} s`);
  assert.equal((await fetch(`${server.base}/health`)).status, 200);
});

test("a client that stops reading is cut off once its queue passes the cap, and its request aborted", async () => {
  const closesBefore = await metric(server.base, "narwhal:slow_client_closes_total");
  const abortedBefore = await metric(server.base, "narwhal:num_aborted_requests_total");
  const body = JSON.stringify({ model: "tiny", prompt: "flood", max_tokens: 3000, n: 16, logprobs: 5, ignore_eos: true,
                                stream: true });
  const { hostname, port } = new URL(server.base);
  const socket = net.connect({ host: hostname, port: Number(port) });
  socket.on("error", () => {});  // a reset after the cut is as good as a close
  await new Promise((r) => socket.once("connect", r));
  socket.pause();  // never reads: the server's bytes pile up in the kernel's buffers, then in its own queue
  socket.write(`POST /v1/completions HTTP/1.1\r\nHost: ${hostname}\r\nAuthorization: Bearer ${KEY}\r\n` +
               `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  assert.ok(await eventually(async () => await metric(server.base, "narwhal:slow_client_closes_total") > closesBefore,
                             60_000), "the stalled connection was closed");
  assert.ok(await eventually(async () =>
    await metric(server.base, "narwhal:num_aborted_requests_total") > abortedBefore), "its request was aborted");
  // Reading now gets what the kernel held, then the end: the stream was cut, never finished.
  let received = "";
  socket.setEncoding("utf8");
  socket.on("data", (d) => (received += d));
  socket.resume();
  await new Promise((r) => socket.once("close", r));
  assert.match(received, /^HTTP\/1\.1 200/);
  assert.ok(!received.includes("data: [DONE]"), "a cut-off stream does not end normally");
  assert.equal(await metric(server.base, "narwhal:num_running_reqs"), 0);
});

test("/health_generate runs a 1-token generation", async () => {
  const before = await metric(server.base, "narwhal:generation_tokens_total");
  const res = await fetch(`${server.base}/health_generate`);
  assert.equal(res.status, 200);
  assert.ok(await metric(server.base, "narwhal:generation_tokens_total") >= before + 1);
  assert.equal(await metric(server.base, "narwhal:engine_alive"), 1);
});

test("nothing leaks: no request left, KV pages back to what the radix cache holds", async () => {
  await expectNoLeaks(server.base);
});
