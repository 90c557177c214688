// End to end: the official `openai` client (and raw fetch for malformed input) against a real `narwhal serve`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import net from "node:net";
import { KEY, startServer, expectError, metric as readMetric, eventually, expectNoLeaks } from "./narwhal_server.mjs";

let server, base, client, post;

before(async () => {
  ({ process: server, base, client, post } =
    await startServer(["--max-request-body", String(1 << 20)]));
});

after(() => { if (server.exitCode === null) server.kill("SIGKILL"); });

// Longer than a cache page (64 tokens), so a repeat finds it in the radix cache.
const chatMessages = [{ role: "system", content: "You are a helpful assistant who answers briefly. ".repeat(15) },
                      { role: "user", content: "Hello!" }];

test("models, health, model info", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ["tiny"]);
  assert.equal((await fetch(`${base}/health`)).status, 200);
  const info = await (await fetch(`${base}/get_model_info`, { headers: { authorization: `Bearer ${KEY}` } })).json();
  assert.equal(info.served_model_name, "tiny");
});

test("chat completion, not streamed, n = 2, logprobs", async () => {
  const r = await client.chat.completions.create({ model: "tiny", messages: chatMessages, max_tokens: 5, n: 2,
                                                   logprobs: true, top_logprobs: 3, seed: 7 });
  assert.equal(r.object, "chat.completion");
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices.length, 2);
  for (const [i, c] of r.choices.entries()) {
    assert.equal(c.index, i);
    assert.equal(c.message.role, "assistant");
    assert.equal(typeof c.message.content, "string");
    assert.ok(["stop", "length"].includes(c.finish_reason));
    assert.ok(c.logprobs.content.length >= 1 && c.logprobs.content.length <= 5);
    for (const t of c.logprobs.content) {
      assert.ok(t.logprob <= 0);
      assert.ok(Array.isArray(t.bytes));
      assert.equal(t.top_logprobs.length, 3);
    }
  }
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, "number");
});

test("seeded greedy requests repeat, and the prefix cache reports cached tokens", async () => {
  const ask = () => client.chat.completions.create({ model: "tiny", messages: chatMessages, max_tokens: 6, temperature: 0 });
  const a = await ask(), b = await ask();
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.ok(b.usage.prompt_tokens_details.cached_tokens > 0, "second identical prompt should hit the radix cache");
});

test("chat completion streamed with usage", async () => {
  const stream = await client.chat.completions.create({ model: "tiny", messages: chatMessages, max_tokens: 6,
                                                        stream: true, stream_options: { include_usage: true } });
  let text = "", role, finish, usage, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, "chat.completion.chunk");
    if (chunk.usage) { usage = chunk.usage; assert.deepEqual(chunk.choices, []); continue; }
    const c = chunk.choices[0];
    role ??= c.delta.role;
    text += c.delta.content ?? "";
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(role, "assistant");
  assert.ok(["stop", "length"].includes(finish));
  assert.ok(chunks >= 3);
  assert.equal(usage.completion_tokens <= 6, true);
  assert.equal(typeof text, "string");
});

test("completions: not streamed, streamed, batched prompts, echo, stop strings", async () => {
  const r = await client.completions.create({ model: "tiny", prompt: "The capital of France is", max_tokens: 5,
                                             logprobs: 2 });
  assert.equal(r.object, "text_completion");
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, lp.token_logprobs.length);
  assert.equal(lp.text_offset[0], 0);
  const batch = await client.completions.create({ model: "tiny", prompt: ["a", "b c"], max_tokens: 3, n: 2 });
  assert.deepEqual(batch.choices.map((c) => c.index), [0, 1, 2, 3]);
  const echo = await client.completions.create({ model: "tiny", prompt: "echo me", max_tokens: 2, echo: true });
  assert.ok(echo.choices[0].text.startsWith("echo me"));
  // A stop string cut from the greedy output: the response ends right before it, with finish_reason stop.
  const full = await client.completions.create({ model: "tiny", prompt: "x", max_tokens: 12, temperature: 0 });
  const text = full.choices[0].text;
  const cut = [...text].slice(3, 5).join("");
  if (cut.trim().length && !cut.includes("\ufffd")) {
    const stopped = await client.completions.create({ model: "tiny", prompt: "x", max_tokens: 12, temperature: 0, stop: [cut] });
    assert.equal(stopped.choices[0].text, text.slice(0, text.indexOf(cut)));
    assert.equal(stopped.choices[0].finish_reason, "stop");
  }
  let streamed = "";
  for await (const chunk of await client.completions.create({ model: "tiny", prompt: "x", max_tokens: 12, temperature: 0, stream: true }))
    streamed += chunk.choices[0]?.text ?? "";
  assert.equal(streamed, text);
});

test("native /generate", async () => {
  const res = await post("/generate", JSON.stringify({ text: "hi", sampling_params: { max_new_tokens: 3, temperature: 0 } }));
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.output_ids.length, body.meta_info.completion_tokens);
  await expectError(post("/generate", JSON.stringify({ text: "hi", sampling_params: { bogus: 1 } })), 400);
});

test("bad requests get OpenAI errors", async () => {
  const chat = (body, headers) => post("/v1/chat/completions", typeof body === "string" ? body : JSON.stringify(body), headers);
  const ok = { model: "tiny", messages: chatMessages, max_tokens: 2 };
  await expectError(chat("{not json"), 400, "invalid_json");
  await expectError(chat("[1,2]"), 400);
  await expectError(chat({ model: "tiny" }), 400, "missing_required_parameter");
  await expectError(chat({ ...ok, messages: [] }), 400, "empty_array");
  await expectError(chat({ ...ok, messages: "hi" }), 400, "invalid_type");
  await expectError(chat({ ...ok, messages: [{ role: "wizard", content: "x" }] }), 400, "invalid_value");
  await expectError(chat({ ...ok, model: "gpt-9" }), 404, "model_not_found");
  await expectError(chat({ ...ok, max_tokens: -1 }), 400, "integer_below_min_value");
  await expectError(chat({ ...ok, max_tokens: 0 }), 400, "integer_below_min_value");
  await expectError(chat({ ...ok, max_tokens: "5" }), 400, "invalid_type");
  await expectError(chat({ ...ok, max_tokens: 10_000_000 }), 400, "context_length_exceeded");
  await expectError(chat({ ...ok, n: 0 }), 400);
  await expectError(chat({ ...ok, n: 1000 }), 400);
  await expectError(chat({ ...ok, temperature: 3 }), 400, "decimal_above_max_value");
  await expectError(chat({ ...ok, temperature: "hot" }), 400, "invalid_type");
  await expectError(chat({ ...ok, top_p: 1.5 }), 400);
  await expectError(chat({ ...ok, stop: [1] }), 400);
  await expectError(chat({ ...ok, top_logprobs: 3 }), 400);
  await expectError(chat({ ...ok, tool_choice: "required" }), 400);
  await expectError(chat({ ...ok, messages: [{ role: "user", content: "word ".repeat(20000) }] }), 400, "context_length_exceeded");
  await expectError(chat(JSON.stringify({ ...ok, junk: "x".repeat(1_100_000) })), 413);
  await expectError(chat(ok, { authorization: "Bearer wrong" }), 401, "invalid_api_key");
  await expectError(chat(ok, { authorization: "" }), 401);
  await expectError(post("/v1/completions", JSON.stringify({ model: "tiny", max_tokens: 2 })), 400, "missing_required_parameter");
  await expectError(post("/v1/completions", JSON.stringify({ model: "tiny", prompt: [[]] })), 400);
  await expectError(post("/v1/completions", JSON.stringify({ model: "tiny", prompt: [999999999] })), 400);
  await expectError(post("/v1/nothing", "{}"), 404);
  await expectError(fetch(`${base}/v1/chat/completions`, { headers: { authorization: `Bearer ${KEY}` } }), 405);
  // The client library surfaces them as typed errors.
  await assert.rejects(client.chat.completions.create({ ...ok, model: "nope" }), (e) => e.status === 404);
  await assert.rejects(new OpenAI({ baseURL: `${base}/v1`, apiKey: "bad", maxRetries: 0 }).models.list(), (e) => e.status === 401);
});

test("disconnects mid-stream abort and leave the server healthy", async () => {
  const metric = (name) => readMetric(base, name);
  const abortedBefore = await metric("narwhal:num_aborted_requests_total");
  for (let i = 0; i < 5; i++) {
    const controller = new AbortController();
    const res = await post("/v1/completions", JSON.stringify({ model: "tiny", prompt: "go", max_tokens: 2000,
                                                                ignore_eos: true, stream: true }),
                           {}).catch(() => null);
    const reader = res.body.getReader();
    await reader.read();  // first chunk arrived: the request is generating
    await reader.cancel();
    controller.abort();
  }
  for (let i = 0; i < 100 && (await metric("narwhal:num_aborted_requests_total")) < abortedBefore + 5; i++)
    await new Promise((r) => setTimeout(r, 50));
  assert.ok((await metric("narwhal:num_aborted_requests_total")) >= abortedBefore + 5);
  assert.equal(await metric("narwhal:num_running_reqs"), 0);
  const r = await client.completions.create({ model: "tiny", prompt: "still there?", max_tokens: 2 });
  assert.equal(r.choices.length, 1);
});

test("metrics in Prometheus text format", async () => {
  const res = await fetch(`${base}/metrics`);
  assert.equal(res.status, 200);
  const text = await res.text();
  for (const name of ["narwhal:prompt_tokens_total", "narwhal:generation_tokens_total", "narwhal:num_queue_reqs",
                      "narwhal:num_running_reqs", "narwhal:cache_hit_rate", "narwhal:time_to_first_token_seconds",
                      "narwhal:inter_token_latency_seconds", "narwhal:e2e_request_latency_seconds",
                      "narwhal:http_requests_total", "narwhal:kv_used_pages", "narwhal:kv_evictable_pages",
                      "narwhal:token_usage", "narwhal:engine_alive", "narwhal:slow_client_closes_total",
                      "narwhal:dp_rank_running_seqs", "narwhal:expert_routed_tokens_total"])
    assert.ok(text.includes(`# TYPE ${name} `), name);
  for (const line of text.split("\n").filter((l) => l && !l.startsWith("#")))
    assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+Inf-]+$/, line);
  assert.match(text, /narwhal:http_requests_total\{[^}]*code="400"\} [1-9]/);
  assert.match(text, /narwhal:time_to_first_token_seconds_bucket\{[^}]*le="\+Inf"\} [1-9]/);
  assert.match(text, /narwhal:expert_routed_tokens_total\{[^}]*expert="0"\} [0-9]/);
});

test("after everything above nothing leaks: no request left, KV pages back to the radix cache's", async () => {
  await expectNoLeaks(base);
});

// GET /health on a connection of its own, opened before the listening socket closes.
async function healthProbeConnection() {
  const { hostname, port } = new URL(base);
  const socket = net.connect({ host: hostname, port: Number(port) });
  socket.setEncoding("utf8");
  let buffered = "", closed = false, wake = () => {};
  socket.on("data", (d) => { buffered += d; wake(); });
  socket.on("close", () => { closed = true; wake(); });
  socket.on("error", () => {});
  const status = async () => {
    buffered = "";
    socket.write(`GET /health HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`);
    while (!/\r\n\r\n/.test(buffered)) {
      if (closed) throw new Error("the server closed the /health connection");
      await new Promise((r) => (wake = r));
    }
    return Number(buffered.split(" ")[1]);
  };
  await new Promise((r) => socket.once("connect", r));
  return { status, close: () => socket.destroy() };
}

test("flush_cache, then SIGTERM drains (health 503) and exits 0", async () => {
  assert.equal((await post("/flush_cache", "")).status, 200);
  assert.equal((await fetch(`${base}/health_generate`)).status, 200);
  const probe = await healthProbeConnection();
  assert.equal(await probe.status(), 200);
  const inFlight = client.completions.create({ model: "tiny", prompt: "last", max_tokens: 300, ignore_eos: true });
  await new Promise((r) => setTimeout(r, 20));
  const exited = new Promise((resolve) => server.on("exit", (code, signal) => resolve({ code, signal })));
  server.kill("SIGTERM");
  assert.equal(await eventually(async () => (await probe.status()) === 503), true, "draining: /health says 503");
  probe.close();
  const last = await inFlight;
  assert.equal(last.choices.length, 1);
  assert.equal(last.usage.completion_tokens, 300, "the in-flight request ran to its end");
  assert.deepEqual(await exited, { code: 0, signal: null });
});
