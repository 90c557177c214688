// `narwhal bench-accuracy` on problems from tools/arith_problems.py: its mechanics against a real `narwhal serve`
// (the random bundled model scores whatever it scores), and its scoring against a scripted OpenAI-style server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { KEY, bin, startServer, expectNoLeaks } from "./narwhal_server.mjs";

const root = process.env.NARWHAL_SOURCE_DIR ?? process.cwd();
const dir = mkdtempSync(path.join(tmpdir(), "narwhal-accuracy-"));
const data = path.join(dir, "test.jsonl");
execFileSync("python3", [path.join(root, "tools/arith_problems.py"), "--split", "test", "--num", "12", "--seed", "3",
                         "--out", data]);
const rows = readFileSync(data, "utf8").trim().split("\n").map((l) => JSON.parse(l));
let server;

before(async () => { server = await startServer(); });
after(() => server.kill());

function narwhal(args, env = {}) {
  return new Promise((resolve) => {
    execFile(bin, args, { env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stdout, stderr });
    });
  });
}

// SGLang's four result lines, parsed; each must be there.
function printed(stdout) {
  const number = (re) => {
    const m = stdout.match(re);
    assert.ok(m, `${re} not in:\n${stdout}`);
    return Number(m[1]);
  };
  return { accuracy: number(/^Accuracy: (\d\.\d{3})$/m), invalid: number(/^Invalid: (\d\.\d{3})$/m),
           latency: number(/^Latency: (\d+\.\d{3}) s$/m),
           throughput: number(/^Output throughput: (\d+\.\d{3}) token\/s$/m) };
}

let runs = 0;
async function benchAccuracy(args, env = {}) {
  const result = path.join(dir, `result${runs++}.jsonl`);
  const r = await narwhal(["bench-accuracy", "--data-path", data, "--result-file", result, ...args], env);
  const lines = existsSync(result) ? readFileSync(result, "utf8").trim().split("\n").map((l) => JSON.parse(l)) : [];
  return { ...r, result, lines };
}

test("bench-accuracy against narwhal serve: SGLang's lines, the JSONL result, --host and --port", async () => {
  const r = await benchAccuracy(["--base-url", server.base, "--api-key", KEY, "--num-questions", "6",
                                 "--num-shots", "2", "--parallel", "4", "--max-new-tokens", "8"]);
  assert.equal(r.code, 0, r.stderr);
  const p = printed(r.stdout);
  assert.ok(p.accuracy >= 0 && p.accuracy <= 1 && p.invalid >= 0 && p.invalid <= 1 && p.accuracy + p.invalid <= 1);
  assert.ok(p.latency > 0 && p.throughput > 0);
  assert.equal(r.lines.length, 1);
  const line = r.lines[0];
  assert.deepEqual(Object.keys(line).slice(0, 6), ["task", "backend", "latency", "accuracy", "num_requests", "other"]);
  assert.deepEqual(line.other, { num_questions: 6, parallel: 4 });
  assert.equal(line.accuracy, p.accuracy);
  assert.equal(line.invalid, p.invalid);
  assert.equal(line.model, "tiny");
  assert.equal(line.failed, 0);
  assert.ok(line.num_output_tokens > 0 && line.num_output_tokens <= 6 * 8, `${line.num_output_tokens} tokens`);
  assert.ok(Math.abs(line.output_throughput - line.num_output_tokens / line.latency) <= 0.01 * line.output_throughput);
  assert.deepEqual([line.num_shots, line.max_new_tokens, line.temperature], [2, 8, 0]);

  // --host and --port, the key from $OPENAI_API_KEY, the default shots; more questions asked than the file has
  // after the shots; a second run appends a second line.
  const { hostname, port } = new URL(server.base);
  const again = await narwhal(["bench-accuracy", "--host", hostname, "--port", port, "--data-path", data,
                               "--num-questions", "100", "--max-new-tokens", "4", "--result-file", r.result],
                              { OPENAI_API_KEY: KEY });
  assert.equal(again.code, 0, again.stderr);
  printed(again.stdout);
  const lines = readFileSync(r.result, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 2);
  assert.equal(lines[1].num_requests, rows.length - 5);
  assert.equal(lines[1].num_shots, 5);
  await expectNoLeaks(server.base);
});

test("bench-accuracy errors: no data file, too few rows, a server that is down, a wrong key", async () => {
  const missing = await benchAccuracy(["--base-url", server.base, "--data-path", path.join(dir, "none.jsonl")]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /--data-path .*none\.jsonl: cannot open the file/);
  const fewRows = await benchAccuracy(["--base-url", server.base, "--num-shots", "12"]);
  assert.equal(fewRows.code, 1);
  assert.match(fewRows.stderr, /has 12 questions: none is left after --num-shots 12/);
  const down = await benchAccuracy(["--base-url", "http://127.0.0.1:9"]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach the server at http:\/\/127\.0\.0\.1:9/);
  const rejected = await benchAccuracy(["--base-url", server.base, "--api-key", "wrong", "--model", "tiny",
                                        "--num-questions", "3"]);
  assert.equal(rejected.code, 1);
  assert.match(rejected.stderr, /3 of 3 requests failed \(counted invalid\); the first: HTTP 401/);
  assert.equal(rejected.lines[0].invalid, 1);
});

// An OpenAI-style server that answers from the labels: question i (after the shots) gets the label when i % 4 < 2,
// the label + 1 when i % 4 == 2 and no number at all when i % 4 == 3, each streamed in two chunks.
async function scriptedServer(shots) {
  const state = { inFlight: 0, maxInFlight: 0, bodies: [] };
  const http = createServer((req, res) => {
    if (req.url === "/v1/models") return res.end(JSON.stringify({ data: [{ id: "scripted" }] }));
    let body = "";
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      const request = JSON.parse(body);
      state.bodies.push(request);
      state.maxInFlight = Math.max(state.maxInFlight, ++state.inFlight);
      const question = request.prompt.match(/Question: ([^\n]*)\nAnswer:$/)[1];
      const i = rows.findIndex((r) => r.question === question) - shots;
      const label = Number(rows[i + shots].answer.split("#### ")[1]);
      const text = [`${label}`, `${label}`, `${label + 1}`, "no idea"][i % 4];
      const event = (o) => `data: ${JSON.stringify(o)}\n\n`;
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(event({ choices: [{ index: 0, text: " So the answer:\n#### " }] }));
      setTimeout(() => {
        res.write(event({ choices: [{ index: 0, text, finish_reason: "stop" }] }));
        res.write(event({ choices: [], usage: { prompt_tokens: 50, completion_tokens: 5, total_tokens: 55 } }));
        res.end("data: [DONE]\n\n");
        state.inFlight--;
      }, 30);
    });
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  return { state, base: `http://127.0.0.1:${http.address().port}`, close: () => http.close() };
}

test("bench-accuracy scores exactly: labels, wrong numbers and answers without one; requests as SGLang's", async () => {
  const scripted = await scriptedServer(3);
  try {
    const r = await benchAccuracy(["--base-url", scripted.base, "--num-shots", "3", "--num-questions", "8",
                                   "--parallel", "3", "--max-new-tokens", "40"]);
    assert.equal(r.code, 0, r.stderr);
    const p = printed(r.stdout);
    assert.deepEqual([p.accuracy, p.invalid], [0.5, 0.25]);
    assert.equal(r.lines[0].num_output_tokens, 8 * 5);
    assert.equal(r.lines[0].model, "scripted");
    assert.ok(scripted.state.maxInFlight <= 3, `${scripted.state.maxInFlight} requests in flight with --parallel 3`);
    const shots = rows.slice(0, 3).map((s) => `Question: ${s.question}\nAnswer: ${s.answer}\n\n`).join("");
    assert.equal(scripted.state.bodies.length, 8);
    for (const b of scripted.state.bodies) {
      assert.ok(b.prompt.startsWith(shots), b.prompt);
      assert.deepEqual([b.model, b.max_tokens, b.temperature, b.stream, b.stop],
                       ["scripted", 40, 0, true, ["Question:"]]);
    }
  } finally {
    scripted.close();
  }
});
