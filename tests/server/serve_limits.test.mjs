// `narwhal serve` refuses to start with a chat template that does not parse, naming its file and the line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readdirSync, symlinkSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { bin } from "./narwhal_server.mjs";

const root = process.env.NARWHAL_SOURCE_DIR ?? process.cwd();
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
