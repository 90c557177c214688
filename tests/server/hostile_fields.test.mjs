// Hostile field values against every generating endpoint of a real `narwhal serve`: non-string types where strings
// belong, integers that would wrap when narrowed, fan-out past --max-sequences-per-request, and values nested
// 10,000 and 100,000 deep. Each answer is a well-formed 2xx or a 4xx with an OpenAI error body; afterwards the
// server is healthy, serves a valid request, and holds no request or KV page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, expectNoLeaks } from "./narwhal_server.mjs";

const kMaxSequences = 64;
let server, base, client, post;

before(async () => {
  ({ process: server, base, client, post } = await startServer([
    "--max-request-body", String(1 << 20), "--max-sequences-per-request", String(kMaxSequences)]));
});

after(() => { if (server.exitCode === null) server.kill("SIGKILL"); });

const user = [{ role: "user", content: "hi" }];
const chat = (extra) => ({ model: "tiny", messages: user, max_tokens: 2, ...extra });
const completion = (extra) => ({ model: "tiny", prompt: "hi", max_tokens: 2, ...extra });
const generate = (params) => ({ input_ids: [1, 2], sampling_params: { max_new_tokens: 2, ...params } });
const deep = (depth) => "[".repeat(depth) + "]".repeat(depth);  // as text: JSON.stringify would recurse

// Sends one request; returns the status and, for a 4xx, the error object (checked for OpenAI's shape).
async function send(route, body) {
  const shown = typeof body === "string" ? body : JSON.stringify(body);
  const res = await post(route, shown);
  const text = await res.text();
  const where = `${route} -> ${res.status}: ${shown.slice(0, 160)}`;
  assert.ok(res.status < 500, `${where}\n${text.slice(0, 300)}`);
  if (res.status >= 400) {
    const error = JSON.parse(text).error;
    assert.equal(typeof error?.message, "string", where);
    assert.ok("type" in error && "param" in error && "code" in error, where);
    return { status: res.status, error };
  }
  assert.equal(res.status, 200, where);
  JSON.parse(text);
  return { status: res.status };
}

async function expect400(route, body, param) {
  const { status, error } = await send(route, body);
  assert.equal(status, 400, `${route} ${JSON.stringify(body).slice(0, 160)} was accepted`);
  assert.equal(error.param, param, error.message);
  return error;
}

test("type confusion: every non-string type is a 400 naming the field", async () => {
  const tool = { function: { name: "f" } };
  await expect400("/v1/chat/completions", chat({ tools: [{ type: 5, ...tool }] }), "tools[0].type");
  await expect400("/v1/chat/completions", chat({ tools: [{ type: ["function"], ...tool }] }), "tools[0].type");
  await expect400("/v1/chat/completions", chat({ tools: [{ function: { name: {} } }] }), "tools[0].function.name");
  await expect400("/v1/chat/completions", chat({ tools: [tool], tool_choice: { type: 1, ...tool } }),
                  "tool_choice.type");
  await expect400("/v1/chat/completions", chat({ response_format: { type: 7 } }), "response_format.type");
  await expect400("/v1/chat/completions", chat({ messages: [{ role: "assistant", content: null,
    tool_calls: [{ type: {}, function: { name: "f", arguments: "{}" } }] }] }), "messages[0].tool_calls[0].type");
  await expect400("/v1/chat/completions", chat({ messages: [{ role: "user", content: [{ type: false, text: "x" }] }] }),
                  "messages[0].content[0].type");
  await expect400("/v1/chat/completions", chat({ stream: true, stream_options: { include_usage: "yes" } }),
                  "stream_options.include_usage");
  await expect400("/v1/completions", completion({ prompt: [1, "x"] }), "prompt");
  await expect400("/v1/completions", completion({ stop: [1] }), "stop");
  await expect400("/generate", generate({ temperature: true }), "sampling_params.temperature");
  await expect400("/generate", generate({ stop: { a: 1 } }), "sampling_params.stop");
  await expect400("/generate", { text: ["a", "b"] }, "text");
  await expect400("/generate", { input_ids: "1,2" }, "input_ids");
  await expect400("/generate", { text: "hi", sampling_params: "fast" }, "sampling_params");
});

test("integers are range-checked as 64-bit values: nothing wraps into a valid one", async () => {
  // Written as JSON text: JavaScript numbers cannot hold 2^64 - 1 exactly.
  for (const [route, json, param] of [
    ["/generate", '{"input_ids": [1], "sampling_params": {"max_new_tokens": 2, "n": 4294967297}}', "sampling_params.n"],
    ["/generate", '{"input_ids": [1], "sampling_params": {"max_new_tokens": 2, "stop_token_ids": [4294967296]}}',
     "sampling_params.stop_token_ids"],
    ["/generate", '{"input_ids": [1], "sampling_params": {"max_new_tokens": 2, "top_k": 18446744073709551615}}',
     "sampling_params.top_k"],
    ["/generate", '{"input_ids": [1], "sampling_params": {"max_new_tokens": 18446744073709551615}}',
     "sampling_params.max_new_tokens"],
    ["/generate", '{"input_ids": [4294967297]}', "input_ids"],
    ["/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "n": 4294967297}', "n"],
    ["/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 18446744073709551617}',
     "max_tokens"],
    ["/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "seed": 1e300}', "seed"],
    ["/v1/completions", '{"prompt": [4294967296], "max_tokens": 1}', "prompt"],
    ["/v1/completions", '{"prompt": "x", "max_tokens": 1, "logprobs": 4294967298}', "logprobs"],
  ]) {
    const { status, error } = await send(route, json);
    assert.equal(status, 400, `${json} was accepted`);
    assert.equal(error.param, param, error.message);
  }
});

test("fan-out past --max-sequences-per-request is a 400 naming the limit; at the limit it runs", async () => {
  const prompts = Array.from({ length: 2000 }, (_, i) => `p${i}`);
  const error = await expect400("/v1/completions", { model: "tiny", prompt: prompts, n: 128, max_tokens: 1 }, "prompt");
  assert.match(error.message, /2000 prompt\(s\) x 128 choice\(s\) = 256000 sequences/);
  assert.match(error.message, new RegExp(`at most ${kMaxSequences} per request`));
  await expect400("/v1/chat/completions", chat({ n: kMaxSequences + 1 }), "n");
  await expect400("/generate", generate({ n: kMaxSequences + 1 }), "n");
  const r = await client.completions.create({ model: "tiny", prompt: ["a", "b"], n: kMaxSequences / 2, max_tokens: 1 });
  assert.equal(r.choices.length, kMaxSequences);
});

test("values nested 10,000 and 100,000 deep in every field: 400, and the server lives", async () => {
  for (const depth of [10000, 100000]) {
    const d = deep(depth);
    const user = '[{"role": "user", "content": "hi"}]';
    for (const [route, json] of [
      ["/v1/chat/completions",
       `{"messages": ${user}, "tools": [{"type": "function", "function": {"name": "f", "parameters": ${d}}}]}`],
      ["/v1/chat/completions", `{"messages": [{"role": "user", "content": ${d}}]}`],
      ["/v1/chat/completions",
       `{"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": ${d}}}]}]}`],
      ["/v1/chat/completions", `{"messages": ${user}, "chat_template_kwargs": {"x": ${d}}}`],
      ["/v1/chat/completions", `{"messages": ${user}, "response_format": ${d}}`],
      ["/v1/completions", `{"prompt": ${d}}`],
      ["/v1/completions", `{"prompt": "x", "stop": ${d}}`],
      ["/generate", `{"input_ids": [1], "sampling_params": {"stop": ${d}}}`],
      ["/generate", `{"input_ids": ${d}}`],
      ["/generate", d],
    ]) {
      const { status } = await send(route, json);
      assert.equal(status, 400, `${route} depth ${depth}`);
    }
  }
});

test("afterwards: healthy, serving, nothing leaked", async () => {
  assert.equal((await fetch(`${base}/health`)).status, 200);
  const r = await client.chat.completions.create({ model: "tiny", messages: user, max_tokens: 2 });
  assert.equal(r.choices.length, 1);
  await expectNoLeaks(base);
});
