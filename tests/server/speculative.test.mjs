// `narwhal serve --speculative-algorithm NEXTN` on the trained tiny model: concurrent greedy and seeded requests,
// streamed and not, get the plain server's tokens; /metrics, the decode log and /generate's meta_info
// (spec_verify_ct) show the accept length; an aborted stream and finished requests leave nothing behind;
// bench-accuracy scores the speculating server as the plain one.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { KEY, bin, arithModel, startServer, metric, expectNoLeaks } from "./narwhal_server.mjs";

const root = process.env.NARWHAL_SOURCE_DIR ?? process.cwd();
const questions = [
  "Maya has 21 balloons and shares them equally among 3 friends. How many balloons does each friend get?",
  "Isla reads 10 pages every day for 7 days and then 9 more pages. How many pages does Isla read in total?",
  "Noah buys 3 coins for $7 each and pays with a $50 bill. How much change does Noah get?",
  "Ava has 18 books. She buys 32 more books. How many books does Ava have now?",
  "Leo has 45 marbles and gives away 17. How many marbles does Leo have left?",
  "A box holds 6 rows of 8 eggs. How many eggs are in the box?",
];
const prompt = (q) => `Question: ${q}\nAnswer:`;
let plain, spec;

before(async () => {
  const small = ["--page-size", "4", "--chunked-prefill-size", "32", "--decode-log-interval", "4"];
  [plain, spec] = await Promise.all([
    startServer(small, process.env, arithModel()),
    startServer([...small, "--speculative-algorithm", "NEXTN", "--speculative-num-steps", "3"], process.env,
                arithModel()),
  ]);
});
after(() => { plain?.kill(); spec?.kill(); });

// Every question at once, half of them streamed; returns the texts in question order.
async function answers(server, params) {
  return Promise.all(questions.map(async (q, i) => {
    const body = { model: "tiny", prompt: prompt(q), max_tokens: 48, ...params };
    if (i % 2 === 0) return (await server.client.completions.create(body)).choices[0].text;
    let text = "";
    for await (const chunk of await server.client.completions.create({ ...body, stream: true }))
      text += chunk.choices[0]?.text ?? "";
    return text;
  }));
}

test("concurrent greedy and seeded requests get the plain server's tokens", async () => {
  for (const params of [{ temperature: 0 }, { temperature: 0.7, seed: 11 }]) {
    const want = await answers(plain, params);
    assert.deepEqual(await answers(spec, params), want, JSON.stringify(params));
  }
  const accept = await metric(spec.base, "narwhal:spec_accept_length");
  assert.ok(accept > 2 && accept <= 4, `accept length ${accept}: the trained MTP layer's drafts are mostly kept`);
  assert.ok(await metric(spec.base, "narwhal:spec_verify_steps_total") > 0);
  assert.equal(await metric(plain.base, "narwhal:spec_accept_length"), 0);
  await expectNoLeaks(spec.base);
});

test("/generate's spec_verify_ct and /get_server_info's avg_spec_accept_length, as SGLang's", async () => {
  const generate = async (server) => (await fetch(`${server.base}/generate`, {
    method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ text: prompt(questions[1]), sampling_params: { temperature: 0, max_new_tokens: 40,
                                                                          ignore_eos: true } }),
  })).json();
  const [got, want] = await Promise.all([generate(spec), generate(plain)]);
  assert.deepEqual(got.output_ids, want.output_ids);
  assert.equal(want.meta_info.spec_verify_ct, undefined, "a plain server has no verify steps to count");
  const verifies = got.meta_info.spec_verify_ct;
  // The prefill draws the first token; every later one comes from a verify, 1 to 4 at a time.
  assert.ok(verifies >= 39 / 4 && verifies <= 39, `${verifies} verify steps for 40 tokens`);
  assert.ok(40 / verifies > 2, `accept length ${40 / verifies}: the trained drafts are mostly kept`);
  // /get_server_info's internal_states, where SGLang's benchmarks read the accept length.
  const info = async (server) => (await fetch(`${server.base}/get_server_info`,
                                              { headers: { Authorization: `Bearer ${KEY}` } })).json();
  const accept = (await info(spec)).internal_states[0].avg_spec_accept_length;
  assert.ok(accept > 2 && accept <= 4, `avg_spec_accept_length ${accept}`);
  assert.equal((await info(plain)).internal_states[0].avg_spec_accept_length, undefined);
});

// A stop string inside a step's kept drafts ends the output there: the text, the ids and the usage are the plain
// server's, not counting the kept tokens after it.
test("a stop string among the kept drafts ends the output and the usage there", async () => {
  for (const stop of [["= "], ["*"], ["####"]]) {
    const body = { model: "tiny", prompt: prompt(questions[2]), max_tokens: 40, temperature: 0, stop };
    const [got, want] = await Promise.all([spec.client.completions.create(body), plain.client.completions.create(body)]);
    assert.equal(got.choices[0].text, want.choices[0].text, JSON.stringify(stop));
    assert.equal(got.choices[0].finish_reason, want.choices[0].finish_reason);
    assert.deepEqual(got.usage, want.usage, `usage with stop ${JSON.stringify(stop)}`);
  }
});

test("an aborted stream frees its drafts' pages", async () => {
  const controller = new AbortController();
  const stream = await spec.client.completions.create(
    { model: "tiny", prompt: prompt(questions[0]), max_tokens: 400, temperature: 0, ignore_eos: true, stream: true },
    { signal: controller.signal });
  let chunks = 0;
  try {
    for await (const _ of stream) if (++chunks === 5) controller.abort();
  } catch {
    // the client's own abort
  }
  await expectNoLeaks(spec.base);
});

test("bench-accuracy scores the speculating server as it scores the plain one", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "narwhal-spec-accuracy-"));
  const data = path.join(dir, "test.jsonl");
  execFileSync("python3", [path.join(root, "tools/arith_problems.py"), "--split", "test", "--num", "16", "--seed", "5",
                           "--out", data]);
  const score = (server) => new Promise((resolve) => {
    execFile(bin, ["bench-accuracy", "--base-url", server.base, "--api-key", KEY, "--data-path", data,
                   "--num-questions", "16", "--parallel", "8", "--num-shots", "0",
                   "--result-file", path.join(dir, "result.jsonl")], (error, stdout, stderr) => {
      assert.equal(error, null, stderr);
      resolve(Number(stdout.match(/^Accuracy: (\d\.\d{3})$/m)[1]));
    });
  });
  const [a, b] = [await score(plain), await score(spec)];
  assert.equal(b, a);
  assert.ok(a >= 0.9, `the trained model answers ${a} of the problems`);
});
