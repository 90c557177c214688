// `narwhal serve` split over local processes (--tp N --nnodes N --node-rank r --dist-init-addr 127.0.0.1:PORT, the
// same command on each): node 0 answers OpenAI requests as the TP 1 server does while the workers serve no HTTP and
// stop when node 0 stops; a worker killed mid-serve, idle or busy, turns node 0's /health 503, then node 0 exits 1.
// Expert parallelism (also with DeepEP's dispatch, --moe-a2a-backend deepep) and DP attention (in one process) answer
// concurrent requests as TP 1 does, leaking nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import { bin, serveArgs, startServer, eventually, expectNoLeaks } from "./narwhal_server.mjs";

// Several processes of OpenMP threads on a few cores: spinning threads would starve each other.
const env = { ...process.env, OMP_WAIT_POLICY: "passive" };
const kSmallCache = ["--cpu-cache-bytes", String(32 << 20)];

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// Resolves with the exit code (or the signal's name) once the process has ended.
function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? child.signalCode);
  return new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal)));
}

// Node 0 (listening) and its workers: `tp` ranks over `nnodes` processes.
async function startWorld(tp, nnodes, extra = []) {
  const flags = ["--tp", String(tp), "--nnodes", String(nnodes), "--dist-init-addr", `127.0.0.1:${await freePort()}`,
                 ...kSmallCache, ...extra];
  const workers = [];
  for (let rank = 1; rank < nnodes; ++rank) {
    const worker = spawn(bin, serveArgs([...flags, "--node-rank", String(rank)]),
                         { stdio: ["ignore", "pipe", "pipe"], env });
    worker.log = "";
    worker.stdout.on("data", (d) => { worker.log += d; });
    worker.stderr.on("data", (d) => { worker.log += d; });
    workers.push(worker);
  }
  const node0 = await startServer([...flags, "--node-rank", "0"], env);
  return { node0, workers, kill: () => { node0.kill(); for (const w of workers) w.kill("SIGKILL"); } };
}

const greedy = async (client) =>
  (await client.completions.create({ model: "tiny", prompt: "The capital of France is", max_tokens: 12,
                                     temperature: 0 })).choices[0].text;

const health = async (base) => (await fetch(`${base}/health`)).status;

test("two and four processes answer as the TP 1 server does", async () => {
  const single = await startServer(kSmallCache, env);
  const want = await greedy(single.client);
  single.kill();
  for (const [tp, nnodes] of [[2, 2], [4, 4]]) {
    const world = await startWorld(tp, nnodes);
    try {
      assert.equal(await greedy(world.node0.client), want, `tp ${tp} over ${nnodes} processes`);
      assert.equal(await health(world.node0.base), 200);
      world.node0.process.kill("SIGTERM");  // node 0 drains, then tells the workers to stop
      assert.equal(await exited(world.node0.process), 0);
      for (const worker of world.workers) {
        assert.equal(await exited(worker), 0, worker.log);
        assert.match(worker.log, /narwhal serve: node \d of \d, a worker of node 0 at 127\.0\.0\.1:\d+/);
        assert.match(worker.log, /a worker of node 0 \(127\.0\.0\.1:\d+\), following its steps/);
        assert.doesNotMatch(worker.log, /listening on/);
      }
    } finally {
      world.kill();
    }
  }
});

// Expert parallelism, DP attention (each DP rank its own scheduler and cache, requests spread round robin or to the
// shortest queue), both together, and DeepEP's dispatch with and without DP attention (concurrent requests make steps
// that mix prefills and decodes, so its auto mode switches between normal and low latency) answer concurrent
// requests as TP 1 does, and leak nothing; /metrics shows each DP rank's load.
test("expert parallelism, deepep and DP attention answer concurrent requests as the TP 1 server does", async () => {
  const prompts = ["The capital of France is", "Once upon a time", "1, 2, 3,", "def main():", "Hello"];
  const complete = (client, prompt) =>
    client.completions.create({ model: "tiny", prompt, max_tokens: 10, temperature: 0 }).then((r) => r.choices[0].text);
  const single = await startServer(kSmallCache, env);
  const want = await Promise.all(prompts.map((p) => complete(single.client, p)));
  single.kill();
  const configs = [["--tp", "2", "--ep-size", "2"],
                   ["--tp", "2", "--enable-dp-attention", "--dp-size", "2"],
                   ["--tp", "4", "--enable-dp-attention", "--dp", "2", "--enable-ep-moe",
                    "--load-balance-method", "shortest_queue"],
                   ["--tp", "2", "--moe-a2a-backend", "deepep"],
                   ["--tp", "4", "--enable-dp-attention", "--dp", "2", "--moe-a2a-backend", "deepep"]];
  for (const flags of configs) {
    const server = await startServer([...flags, ...kSmallCache], env);
    try {
      const got = await Promise.all([...prompts, ...prompts].map((p) => complete(server.client, p)));
      assert.deepEqual(got, [...want, ...want], flags.join(" "));
      await expectNoLeaks(server.base);
      const text = await (await fetch(`${server.base}/metrics`)).text();
      const ranks = flags.includes("--enable-dp-attention") ? 2 : 1;
      for (let r = 0; r < ranks; ++r)
        assert.match(text, new RegExp(`narwhal:dp_rank_running_seqs\\{[^}]*dp_rank="${r}"\\} 0`), flags.join(" "));
      assert.doesNotMatch(text, new RegExp(`dp_rank="${ranks}"`));
    } finally {
      server.kill();
    }
  }
});

// Kills the worker (after `busy` starts a long request, if given); /health must say 503 before node 0 exits 1.
async function expectKillNoticed(busy) {
  const world = await startWorld(2, 2, ["--dist-timeout", "30"]);
  try {
    const request = busy ? busy(world.node0.client) : null;
    if (request) await new Promise((resolve) => setTimeout(resolve, 500));
    const node0Exit = exited(world.node0.process);
    let exitedFirst = false;
    node0Exit.then(() => { exitedFirst = true; });
    world.workers[0].kill("SIGKILL");
    const start = Date.now();
    const unhealthy = await eventually(async () => {
      try {
        return await health(world.node0.base) === 503;
      } catch {
        return false;  // the process is gone: too late
      }
    }, 5000);
    assert.ok(unhealthy && !exitedFirst, "node 0's /health turned 503 before it exited");
    assert.equal(await node0Exit, 1);
    assert.ok(Date.now() - start < 10000, "node 0 noticed within seconds, not at --dist-timeout");
    if (request) await request.catch(() => {});
  } finally {
    world.kill();
  }
}

test("a worker killed while node 0 is idle: /health 503, then node 0 exits 1", async () => {
  await expectKillNoticed(null);
});

test("a worker killed mid-request: /health 503, then node 0 exits 1", async () => {
  await expectKillNoticed((client) => client.completions.create({
    model: "tiny", prompt: "Once upon a time", max_tokens: 4000, temperature: 0, ignore_eos: true }));
});
