// What `narwhal serve` tells clients and operators about its limits: with a 16-token KV cache the reported context
// length is 16 (not config.json's 16384), prompts past it are 400s naming it, and a limit the client did not set is
// clipped with finish_reason "length". --context-length lowers the context (never raises it), and with
// --allow-auto-truncate a prompt past it is cut to its start. A chat template that does not parse stops start-up
// naming its file.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readdirSync, symlinkSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { bin, KEY, startServer, expectError, expectNoLeaks } from "./narwhal_server.mjs";

const kCacheTokens = 16;
const root = process.env.NARWHAL_SOURCE_DIR ?? process.cwd();
let server, base, client, post;

before(async () => {
  ({ process: server, base, client, post } =
    await startServer(["--max-total-tokens", String(kCacheTokens), "--page-size", "8"]));
});

after(() => { if (server.exitCode === null) server.kill("SIGKILL"); });

const get = async (route) => (await fetch(`${base}${route}`, { headers: { authorization: `Bearer ${KEY}` } })).json();

test("the reported context length is what one request can hold in the cache", async () => {
  assert.equal((await client.models.list()).data[0].max_model_len, kCacheTokens);
  assert.equal((await get("/get_model_info")).context_length, kCacheTokens);
  assert.equal((await get("/get_server_info")).context_length, kCacheTokens);
});

test("a prompt or an explicit limit past it is a 400 naming it", async () => {
  const ids = Array.from({ length: kCacheTokens + 4 }, (_, i) => 5 + i);
  const hi = [{ role: "user", content: "hi" }];
  for (const [route, body] of [["/v1/completions", { prompt: ids, max_tokens: 1 }],
                               ["/v1/completions", { prompt: [5, 6, 7], max_tokens: 100 }],
                               ["/generate", { input_ids: ids }],
                               ["/generate", { input_ids: [5, 6, 7], sampling_params: { max_new_tokens: 100 } }],
                               ["/v1/chat/completions", { messages: hi, max_tokens: 100 }]]) {
    const error = await expectError(post(route, body), 400, "context_length_exceeded");
    assert.match(error.message, new RegExp(`maximum context length is ${kCacheTokens} tokens`), route);
  }
});

test("a limit the client did not set is clipped to the room left: finish_reason length", async () => {
  const chat = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }],
                                                      ignore_eos: true });
  assert.equal(chat.choices[0].finish_reason, "length");
  assert.equal(chat.usage.prompt_tokens + chat.usage.completion_tokens, kCacheTokens);
  // /generate's default max_new_tokens (128) is clipped the same way.
  const res = await post("/generate", { input_ids: [5, 6, 7], sampling_params: { ignore_eos: true } });
  assert.equal(res.status, 200);
  const out = await res.json();
  assert.equal(out.meta_info.finish_reason.type, "length");
  assert.equal(out.meta_info.completion_tokens, kCacheTokens - 3);
  await expectNoLeaks(base);
});

test("--context-length lowers the context; --allow-auto-truncate keeps a long prompt's start", async () => {
  const short = await startServer(["--context-length", "24", "--allow-auto-truncate"]);
  try {
    assert.equal((await short.client.models.list()).data[0].max_model_len, 24);
    const ids = Array.from({ length: 40 }, (_, i) => 5 + i);
    const cut = await short.client.completions.create({ model: "tiny", prompt: ids, max_tokens: 4, ignore_eos: true,
                                                        temperature: 0 });
    assert.deepEqual([cut.usage.prompt_tokens, cut.usage.completion_tokens], [20, 4]);
    // The kept start is the prompt's own: the same ids sent cut by hand give the same completion.
    const same = await short.client.completions.create({ model: "tiny", prompt: ids.slice(0, 20), max_tokens: 4,
                                                         ignore_eos: true, temperature: 0 });
    assert.equal(cut.choices[0].text, same.choices[0].text);
    const res = await short.post("/generate", { input_ids: ids, sampling_params: { ignore_eos: true } });
    const out = await res.json();
    assert.deepEqual([out.meta_info.prompt_tokens, out.meta_info.completion_tokens], [23, 1]);
    const clipped = await short.client.completions.create({ model: "tiny", prompt: [5, 6, 7], max_tokens: 100,
                                                            ignore_eos: true });
    assert.deepEqual([clipped.usage.completion_tokens, clipped.choices[0].finish_reason], [21, "length"]);
    await expectNoLeaks(short.base);
  } finally {
    short.kill();
  }
  const longer = spawnSync(bin, ["serve", "--model-path", path.join(root, "models/tiny"), "--port", "0",
                                 "--context-length", "20000"], { encoding: "utf8", timeout: 60000 });
  assert.notEqual(longer.status, 0);
  assert.match(longer.stderr, /--context-length 20000 exceeds the model's max_position_embeddings \(16384/,
               longer.stderr);
});

// A model directory of links to the bundled one, with its own tokenizer_config.json.
function modelWithTokenizerConfig(config) {
  const dir = mkdtempSync(path.join(tmpdir(), "narwhal-badtpl-"));
  const tiny = path.join(root, "models/tiny");
  for (const f of readdirSync(tiny))
    if (f !== "tokenizer_config.json") symlinkSync(path.join(tiny, f), path.join(dir, f));
  writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(config));
  return dir;
}

test("a chat template that does not parse stops start-up, naming the file and the line", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "narwhal-tpl-"));
  const file = path.join(dir, "bad.jinja");
  writeFileSync(file, "{% for m in messages %}\n{{ m.content + }}\n{% endfor %}");
  const serve = (model, extra) => spawnSync(bin, ["serve", "--model-path", model, "--port", "0", ...extra],
                                            { encoding: "utf8", timeout: 60000 });
  const own = serve(path.join(root, "models/tiny"), ["--chat-template", file]);
  assert.notEqual(own.status, 0);
  assert.match(own.stderr, new RegExp(`${file}: template line 2`), own.stderr);

  const config = JSON.parse(readFileSync(path.join(root, "models/tiny/tokenizer_config.json"), "utf8"));
  const model = modelWithTokenizerConfig({ ...config, chat_template: "{% if messages %}never closed" });
  const bundled = serve(model, []);
  assert.notEqual(bundled.status, 0);
  assert.match(bundled.stderr, /tokenizer_config\.json \(chat_template\): template line 1/, bundled.stderr);
});
