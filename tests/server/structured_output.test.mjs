// Structured output through the official client: response_format json_schema and json_object, streamed or not, and
// /generate's json_schema, on the bundled random model with the DeepSeek-V3 tokenizer (129,280 tokens): every
// finished choice is JSON of the schema; schemas that cannot be enforced are 400s naming the keyword.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, expectError, expectNoLeaks } from "./narwhal_server.mjs";

let server, base, client, post;

before(async () => { ({ process: server, base, client, post } = await startServer()); });
after(() => { if (server.exitCode === null) server.kill("SIGKILL"); });

const messages = [{ role: "user", content: "Pick a color and a size." }];
// Every string is an enum value, so a random model still reaches the end of the value within max_tokens.
const schema = {
  type: "object",
  properties: { color: { enum: ["red", "green", "blue"] }, large: { type: "boolean" },
                sizes: { type: "array", items: { enum: [1, 2, 3] }, maxItems: 3 } },
  required: ["color", "large"],
};
const format = { type: "json_schema", json_schema: { name: "pick", schema, strict: true } };

function checkPick(text) {
  const value = JSON.parse(text);
  assert.deepEqual(Object.keys(value).filter((k) => !["color", "large", "sizes"].includes(k)), [], text);
  assert.ok(["red", "green", "blue"].includes(value.color), text);
  assert.equal(typeof value.large, "boolean", text);
  if ("sizes" in value) assert.ok(value.sizes.length <= 3 && value.sizes.every((s) => [1, 2, 3].includes(s)), text);
}

test("json_schema: every choice, sampled, is JSON of the schema and ends with finish_reason stop", async () => {
  const r = await client.chat.completions.create({ model: "tiny", messages, response_format: format, n: 4,
                                                   temperature: 1, max_tokens: 400, seed: 3 });
  assert.equal(r.choices.length, 4);
  for (const c of r.choices) {
    assert.equal(c.finish_reason, "stop", c.message.content);
    checkPick(c.message.content);
  }
});

test("json_schema streamed: the deltas join into JSON of the schema", async () => {
  const stream = await client.chat.completions.create({ model: "tiny", messages, response_format: format,
                                                        max_tokens: 400, temperature: 0, stream: true });
  let text = "", finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, "stop");
  checkPick(text);
});

test("json_object: an object, cut only by max_tokens", async () => {
  const r = await client.chat.completions.create({ model: "tiny", messages, response_format: { type: "json_object" },
                                                   max_tokens: 48, temperature: 1, n: 3, seed: 5 });
  for (const c of r.choices) {
    assert.ok(c.message.content.startsWith("{"), c.message.content);
    if (c.finish_reason === "stop") assert.equal(typeof JSON.parse(c.message.content), "object");
    else assert.equal(c.finish_reason, "length");
  }
});

test("/generate's json_schema (a string, as SGLang's)", async () => {
  const res = await post("/generate", { text: "A color:", sampling_params: { json_schema: JSON.stringify(schema),
                                                                             max_new_tokens: 400 } });
  assert.equal(res.status, 200);
  const out = await res.json();
  assert.equal(out.meta_info.finish_reason.type, "stop");
  checkPick(out.text);
  await expectNoLeaks(base);
});

test("schemas it cannot enforce, and malformed ones, are 400s naming the field", async () => {
  const chat = (response_format) => post("/v1/chat/completions", { model: "tiny", messages, response_format });
  const withSchema = (s) => chat({ type: "json_schema", json_schema: { name: "x", schema: s } });
  let e = await expectError(withSchema({ type: "string", pattern: "a+" }), 400, "invalid_value");
  assert.match(e.message, /'pattern' is not supported/);
  assert.equal(e.param, "response_format.json_schema.schema");
  e = await expectError(withSchema({ type: "object", properties: { d: { type: "string", format: "date" } } }), 400,
                        "invalid_value");
  assert.match(e.message, /schema\.properties\.d: the keyword 'format'/);
  await expectError(withSchema({ $ref: "#/$defs/none" }), 400, "invalid_value");
  e = await expectError(chat({ type: "json_schema", json_schema: { schema } }), 400, "missing_required_parameter");
  assert.equal(e.param, "response_format.json_schema.name");
  await expectError(chat({ type: "json_schema" }), 400, "missing_required_parameter");
  await expectError(post("/generate", { text: "x", sampling_params: { json_schema: "{not json" } }), 400,
                    "invalid_value");
  await expectError(post("/generate", { text: "x", sampling_params: { json_schema: { type: "object" } } }), 400,
                    "invalid_type");
});
