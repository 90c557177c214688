// `--reasoning-parser deepseek-r1` and `--tool-call-parser deepseekv3` end to end: the API's shape and its
// validation on the tiny model's random output (the parsing itself: tests/text/*parser_test.cpp).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, expectError, expectNoLeaks } from "./narwhal_server.mjs";

let server;
before(async () => {
  server = await startServer(["--reasoning-parser", "deepseek-r1", "--tool-call-parser", "deepseekv3"]);
});
after(() => server.kill());

const messages = [{ role: "user", content: "Think, then tell me the weather in Paris." }];
const tools = [{ type: "function", function: { name: "get_weather", description: "weather of a city",
                 parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
const TAGS = /<\/?think>/;

async function streamed(body) {
  const stream = await server.client.chat.completions.create({ ...body, stream: true });
  const out = { reasoning: "", content: "", toolCalls: [], finish: null };
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (!c) continue;
    assert.ok(!TAGS.test(c.delta.content ?? ""), "no think tag in a content delta");
    assert.ok(!TAGS.test(c.delta.reasoning_content ?? ""), "no think tag in a reasoning delta");
    out.reasoning += c.delta.reasoning_content ?? "";
    out.content += c.delta.content ?? "";
    out.toolCalls.push(...(c.delta.tool_calls ?? []));
    out.finish = c.finish_reason ?? out.finish;
  }
  return out;
}

test("deepseek-r1: reasoning_content beside content, never a think tag, streamed = whole", async () => {
  for (const seed of [1, 2, 3]) {
    const body = { model: "tiny", messages, max_tokens: 24, temperature: 0.9, seed };
    const r = await server.client.chat.completions.create(body);
    const m = r.choices[0].message;
    assert.ok("reasoning_content" in m, "the message has reasoning_content (string or null)");
    assert.ok(m.reasoning_content === null || typeof m.reasoning_content === "string");
    assert.equal(typeof m.content, "string");
    assert.ok(!TAGS.test(m.content) && !TAGS.test(m.reasoning_content ?? ""));
    // The same generation unsplit: without think tags it is all reasoning (R1 starts inside its thinking).
    const raw = (await server.client.chat.completions.create({ ...body, separate_reasoning: false })).choices[0].message;
    assert.ok(!("reasoning_content" in raw) || raw.reasoning_content === null);
    if (!TAGS.test(raw.content)) {
      assert.equal(m.reasoning_content ?? "", raw.content.trim());
      assert.equal(m.content, "");
    }
    const s = await streamed(body);
    assert.equal(s.reasoning.trim(), (m.reasoning_content ?? "").trim());
    assert.equal(s.content.trim(), m.content.trim());
  }
});

test("deepseekv3 tools: accepted, answered in OpenAI's shape", async () => {
  for (const tool_choice of [undefined, "auto", "required", { type: "function", function: { name: "get_weather" } }]) {
    const r = await server.client.chat.completions.create({ model: "tiny", messages, tools, tool_choice, max_tokens: 16,
                                                           seed: 5 });
    const c = r.choices[0];
    assert.ok(["stop", "length", "tool_calls"].includes(c.finish_reason));
    for (const call of c.message.tool_calls ?? []) {
      assert.match(call.id, /^call_/);
      assert.equal(call.type, "function");
      assert.equal(call.function.name, "get_weather");
      JSON.parse(call.function.arguments);
    }
    if (c.finish_reason === "tool_calls") assert.ok(c.message.tool_calls.length >= 1);
  }
});

test("a named tool_choice's arguments are JSON of the function's parameters, and the call completes", async () => {
  const pick = [{ type: "function", function: { name: "pick", parameters: { type: "object",
                  properties: { city: { enum: ["Paris", "Rome"] }, days: { enum: [1, 2, 3] } },
                  required: ["city", "days"] } } }];
  for (const seed of [1, 2, 3]) {
    const r = await server.client.chat.completions.create({
      model: "tiny", messages, tools: pick, tool_choice: { type: "function", function: { name: "pick" } },
      max_tokens: 400, temperature: 1, seed });
    const c = r.choices[0];
    assert.equal(c.finish_reason, "tool_calls", JSON.stringify(c.message));
    assert.equal(c.message.tool_calls.length, 1);
    const args = JSON.parse(c.message.tool_calls[0].function.arguments);
    assert.ok(["Paris", "Rome"].includes(args.city) && [1, 2, 3].includes(args.days), JSON.stringify(args));
  }
});

test("tool_choice none never returns tool_calls", async () => {
  for (const seed of [1, 2]) {
    const body = { model: "tiny", messages, tools, tool_choice: "none", max_tokens: 16, seed };
    const c = (await server.client.chat.completions.create(body)).choices[0];
    assert.ok(!("tool_calls" in c.message) || c.message.tool_calls == null);
    assert.notEqual(c.finish_reason, "tool_calls");
    const s = await streamed(body);
    assert.deepEqual(s.toolCalls, []);
    assert.notEqual(s.finish, "tool_calls");
  }
});

test("bad tools and tool_choice get 400", async () => {
  const chat = (extra) => server.post("/v1/chat/completions", { model: "tiny", messages, max_tokens: 2, ...extra });
  const named = (name) => ({ type: "function", function: { name } });
  await expectError(chat({ tools, tool_choice: named("no_such_function") }), 400, "invalid_value");
  await expectError(chat({ tools, tool_choice: "sometimes" }), 400, "invalid_value");
  await expectError(chat({ tools, tool_choice: 7 }), 400);
  await expectError(chat({ tool_choice: "required" }), 400, "invalid_value");
  await expectError(chat({ tool_choice: named("get_weather") }), 400, "invalid_value");
  await expectError(chat({ tools: "get_weather" }), 400, "invalid_type");
  await expectError(chat({ tools: [{ type: "function" }] }), 400);
  await expectError(chat({ tools: [{ type: "retrieval", function: { name: "x" } }] }), 400, "invalid_value");
  await expectError(chat({ tools: [{ type: "function", function: { name: 5 } }] }), 400);
  await expectError(chat({ tools: [{ type: "function", function: { description: "nameless" } }] }), 400);
  assert.equal((await fetch(`${server.base}/health`)).status, 200);
});

test("nothing leaks", async () => {
  await expectNoLeaks(server.base);
});
