// Shared by the server's node tests: start a real `narwhal serve` on the bundled model, and read it back.
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import assert from "node:assert/strict";
import OpenAI from "openai";

export const bin = process.env.NARWHAL_BIN ?? "build/narwhal";
const root = process.env.NARWHAL_SOURCE_DIR ?? process.cwd();
export const KEY = "test-key";

// The bundled tiny model, made here (once) if the checkout has none.
let made;
export function modelDir() {
  const bundled = path.join(root, "models/tiny");
  if (existsSync(path.join(bundled, "config.json"))) return bundled;
  if (made) return made;
  made = mkdtempSync(path.join(tmpdir(), "narwhal-tiny-"));
  execFileSync(bin, ["make-model", "--preset", "tiny", "--output-dir", made], { stdio: "inherit" });
  return made;
}

// The `narwhal serve` arguments of startServer: the bundled model (or `model`) served as "tiny" with API key KEY,
// `args` added. A 256 MiB KV cache is plenty here and starts seconds sooner than the 1 GiB default.
export function serveArgs(args = [], model = modelDir()) {
  return ["serve", "--model-path", model, "--port", "0", "--api-key", KEY, "--served-model-name", "tiny",
          "--cpu-cache-bytes", String(256 << 20), ...args];
}

// The trained tiny model (models/arith-tiny), whose MTP layer drafts tokens worth keeping.
export const arithModel = () => path.join(root, "models/arith-tiny");

// Starts `narwhal serve` with serveArgs(args, model) (and `env`, when given, as its environment); resolves once it
// listens.
export async function startServer(args = [], env = process.env, model = modelDir()) {
  const process_ = spawn(bin, serveArgs(args, model), { stdio: ["ignore", "pipe", "inherit"], env });
  const base = await new Promise((resolve, reject) => {
    let out = "";
    process_.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m) resolve(m[1]);
    });
    process_.on("exit", (code) => reject(new Error(`narwhal serve exited with ${code} before listening`)));
  });
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0 });
  const post = (route, body, headers = {}) =>
    fetch(`${base}${route}`, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body),
                               headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", ...headers } });
  const kill = () => { if (process_.exitCode === null && process_.signalCode === null) process_.kill("SIGKILL"); };
  return { process: process_, base, client, post, kill };
}

export async function expectError(promise, status, code) {
  const res = await promise;
  assert.equal(res.status, status, `expected ${status}`);
  const body = await res.json();
  assert.equal(typeof body.error.message, "string");
  assert.ok("type" in body.error && "param" in body.error && "code" in body.error);
  if (code !== undefined) assert.equal(body.error.code, code);
  return body.error;
}

// The value of an unlabelled-by-route metric (the first series named `name`).
export async function metric(base, name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + "{"));
  assert.ok(line, `metric ${name} missing`);
  return Number(line.split(" ").pop());
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls until `condition()` holds (at most `ms`); returns its last value.
export async function eventually(condition, ms = 5000) {
  const end = Date.now() + ms;
  let value = await condition();
  while (!value && Date.now() < end) {
    await sleep(50);
    value = await condition();
  }
  return value;
}

// Once every response is over: no request is queued or running anywhere, and every KV page still in use is
// one only the radix cache holds (nothing leaked a page).
export async function expectNoLeaks(base) {
  const settled = async () => {
    const m = {};
    for (const name of ["num_running_reqs", "num_queue_reqs", "engine_running_seqs", "engine_waiting_seqs",
                        "kv_used_pages", "kv_evictable_pages", "token_usage"])
      m[name] = await metric(base, `narwhal:${name}`);
    return m;
  };
  let m;
  await eventually(async () => {
    m = await settled();
    return m.num_running_reqs === 0 && m.num_queue_reqs === 0 && m.engine_running_seqs === 0 &&
           m.engine_waiting_seqs === 0 && m.kv_used_pages === m.kv_evictable_pages;
  }, 5000);
  assert.deepEqual(m, { ...m, num_running_reqs: 0, num_queue_reqs: 0, engine_running_seqs: 0, engine_waiting_seqs: 0,
                        kv_used_pages: m.kv_evictable_pages, token_usage: 0 });
}
