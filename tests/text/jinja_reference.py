#!/usr/bin/env python3
"""Renders chat templates with Python's jinja2 set up as Hugging Face transformers sets it up: the reference
narwhal's chat templates are compared with (tests/text/chat_template.test.mjs). Needs Debian's python3-jinja2.

Input (argv[1]): a JSON list of {"tokenizer_path", "messages_file", "add_generation_prompt"}, the same inputs as
`narwhal chat-template`. Output (stdout): a JSON list, per case {"text": ...} or {"error": ...}.
"""
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

# transformers' SpecialTokensMixin.SPECIAL_TOKENS_ATTRIBUTES order.
SPECIAL_ROLES = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]


class GenerationBlock(Extension):
    """HF's AssistantTracker without the tracking: {% generation %}...{% endgeneration %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, case):
    with open(os.path.join(case["tokenizer_path"], "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    special = {}
    for role in SPECIAL_ROLES:
        token = config.get(role)
        if token is not None:
            special[role] = token["content"] if isinstance(token, dict) else token
    with open(case["messages_file"], encoding="utf-8") as f:
        data = json.load(f)
    messages, tools, extra = data, None, {}
    if isinstance(data, dict):
        messages, tools = data["messages"], data.get("tools")
        extra = {k: v for k, v in data.items() if k not in ("messages", "tools")}
    template = env.from_string(config["chat_template"])
    return template.render(messages=messages, tools=tools, documents=None,
                           add_generation_prompt=case["add_generation_prompt"], **special, **extra)


def main():
    env = environment()
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    results = []
    for case in cases:
        try:
            results.append({"text": render(env, case)})
        except Exception as e:  # the test expects narwhal to fail on the same cases
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
