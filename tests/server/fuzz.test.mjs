// Seeded request fuzzing against a real `narwhal serve`: valid OpenAI / native requests with fields deleted,
// retyped or replaced by hostile values (nested past the parser's depth limit, 20,000 keys wide, numbers past
// double's range among them), truncated bodies and random bytes, 8 in flight. Every answer must be a
// 2xx in its endpoint's format or a 4xx with an OpenAI-style error body, and afterwards the server is healthy,
// answers a valid request, and holds no request or KV page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, expectNoLeaks } from "./narwhal_server.mjs";

let server, base, client, post;

before(async () => {
  ({ process: server, base, client, post } = await startServer(["--max-request-body", String(1 << 20)]));
});

after(() => { if (server.exitCode === null) server.kill("SIGKILL"); });

// mulberry32: the same requests on every run, so a failure names a reproducible case.
function prng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(20261123);
const pick = (list) => structuredClone(list[Math.floor(random() * list.length)]);

const bases = {
  "/v1/chat/completions": {
    model: "tiny", messages: [{ role: "system", content: "be brief" }, { role: "user", content: "hi" }],
    max_tokens: 3, temperature: 0.7, top_p: 0.9, n: 2, seed: 3, logprobs: true, top_logprobs: 2, stop: ["\n"],
    stream_options: { include_usage: true }, presence_penalty: 0.1, frequency_penalty: 0.1, tool_choice: "auto",
    tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: {} } } }],
    response_format: { type: "json_schema", json_schema: { name: "r", schema: {
      type: "object", properties: { a: { enum: [1, "x"] }, b: { type: "array", items: { type: "string" } } },
      required: ["a"], $defs: { d: { anyOf: [{ type: "integer" }, { $ref: "#/$defs/d" }] } } } } },
  },
  "/v1/completions": { model: "tiny", prompt: "hello", max_tokens: 3, temperature: 0, logprobs: 2, n: 2, stop: "x",
                       echo: false },
  "/generate": { text: "hello", sampling_params: { max_new_tokens: 3, temperature: 0,
                                                   json_schema: '{"type": "object", "properties": {"a": {}}}' } },
};
// Hostile values: wrong types, extremes, empty and huge strings, malformed messages and content parts. No large
// but valid token counts: each request must stay quick on the CPU model.
const hostile = [null, true, false, 0, -1, 1.5, -1e308, 1e308, 2 ** 63, -(2 ** 63), "", "x".repeat(5000), "\u0000",
                 [], [1, 2], [null], {}, { a: 1 }, [[]], "NaN", 1e6, -0, [{ role: "user" }], [{ type: "text" }],
                 [{ role: "tool", content: "x" }], [{ role: "assistant", tool_calls: [{ function: {} }] }],
                 [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }],
                 [{ role: "user", content: [{ type: "text", text: 5 }] }], [{ role: "wizard", content: "x" }],
                 JSON.parse("[".repeat(60) + "]".repeat(60)), JSON.parse('{"a":'.repeat(60) + "1" + "}".repeat(60)),
                 Object.fromEntries(Array.from({ length: 20000 }, (_, i) => [`k${i}`, i]))];
// Values JSON.stringify cannot write (numbers past double's range, integers past 2^64) or would recurse too deep
// for (nesting far past the server's limit of 128): hostile picks their placeholder, the text gets them as is.
const raw = { "\u0001deep arrays": "[".repeat(20000) + "]".repeat(20000),
              "\u0001deep objects": '{"a":'.repeat(20000) + "1" + "}".repeat(20000),
              "\u0001huge": "1e400", "\u0001-huge": "-1e400", "\u0001tiny": "1e-400",
              "\u0001long integer": "123456789012345678901234567890" };
hostile.push(...Object.keys(raw));
const withRaw = (text) => Object.entries(raw).reduce((t, [k, v]) => t.replaceAll(JSON.stringify(k), v), text);

function mutate(value, depth = 0) {
  const obj = structuredClone(value);
  const edits = 1 + Math.floor(random() * 3);
  for (let i = 0; i < edits; ++i) {
    const keys = Object.keys(obj);
    if (keys.length === 0) break;
    const key = keys[Math.floor(random() * keys.length)], r = random();
    if (r < 0.25) delete obj[key];
    else if (r < 0.8) obj[key] = pick(hostile);
    else if (depth < 2 && obj[key] && typeof obj[key] === "object" && !Array.isArray(obj[key])) obj[key] = mutate(obj[key], depth + 1);
    else if (depth < 2 && Array.isArray(obj[key]) && obj[key][0] && typeof obj[key][0] === "object")
      obj[key][0] = mutate(obj[key][0], depth + 1);
    else obj[`extra_${Math.floor(random() * 5)}`] = pick(hostile);
  }
  return obj;
}

function makeCase(i) {
  const routes = Object.keys(bases);
  const route = routes[Math.floor(random() * routes.length)];
  const body = mutate(bases[route]);
  if (random() < 0.3) body.stream = true;
  const text = withRaw(JSON.stringify(body)), r = random();
  if (r < 0.05) return { i, route, body: text.slice(0, Math.floor(random() * 40)) };       // truncated JSON
  if (r < 0.08) return { i, route, body: Buffer.from(Array.from({ length: 64 }, () => Math.floor(random() * 256))) };
  return { i, route, body: text, stream: body.stream === true };
}

async function check(c) {
  const res = await post(c.route, c.body);
  const text = await res.text();
  const where = `case ${c.i} ${c.route} -> ${res.status}: ${String(c.body).slice(0, 200)}`;
  assert.ok(res.status < 500, where);
  if (res.status >= 400) {
    const error = JSON.parse(text).error;
    assert.equal(typeof error?.message, "string", where);
    assert.ok("type" in error && "param" in error && "code" in error, where);
  } else if (c.stream && c.route !== "/generate") {
    assert.ok(text.trimEnd().endsWith("data: [DONE]"), where);
  } else if (!c.stream) {
    const answer = JSON.parse(text);
    if (c.route === "/v1/chat/completions") assert.equal(answer.object, "chat.completion", where);
    if (c.route === "/v1/completions") assert.equal(answer.object, "text_completion", where);
    if (c.route === "/generate") assert.ok("text" in answer || Array.isArray(answer), where);
  }
  return res.status;
}

test("400 mutated requests, 8 in flight: each a well-formed 2xx or 4xx; the server stays whole", async () => {
  const cases = Array.from({ length: 400 }, (_, i) => makeCase(i));
  const statuses = {};
  for (let i = 0; i < cases.length; i += 8) {
    for (const status of await Promise.all(cases.slice(i, i + 8).map(check))) statuses[status] = (statuses[status] ?? 0) + 1;
  }
  // Both kinds happen: the mutations leave some requests valid and break most.
  assert.ok((statuses[200] ?? 0) > 20 && (statuses[400] ?? 0) > 200, JSON.stringify(statuses));

  assert.equal((await fetch(`${base}/health`)).status, 200);
  const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }],
                                                   max_tokens: 3 });
  assert.equal(r.choices.length, 1);
  await expectNoLeaks(base);
});
