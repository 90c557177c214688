#!/usr/bin/env python3
"""Writes tests/text/data/chat_conversations.json: seeded, varied conversations for the chat template tests
(system prompts, multi-turn, tool calls with JSON arguments, consecutive tool outputs, R1-style <think>
reasoning, CJK, emoji, awkward whitespace). Run from anywhere: python3 tools/make_chat_cases.py
"""
import json
import os
import random

SEED = 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["Hello!", "What's the weather in Paris?", "解释一下量子计算。", "Write a haiku about the sea 🌊",
         "  leading and trailing spaces  ", "line one\nline two\n\nline four", "Use `code` and **markdown**.",
         "Quote: \"double\" and 'single'", "Tabs\tand\\backslashes", "", "数学: 1 + 1 = 2 ✔️", "Ça va? Ñandú. Ελληνικά.",
         "{\"json\": \"inside text\"}", "<｜User｜> looks special but is text", "emoji 👨‍👩‍👧‍👦 and 🇯🇵",
         "Summarize: " + "lorem ipsum " * 12]
TOOLS = [("get_weather", {"city": "Paris", "unit": "celsius"}), ("search", {"query": "DeepSeek V3 paper", "top_k": 3}),
         ("calculator", {"expression": "2**10 + 3.5"}), ("lookup", {"ids": [1, 2, 3], "nested": {"a": None, "b": True}}),
         ("translate", {"text": "你好，世界", "to": "en"})]
OUTPUTS = ["sunny, 22°C", "{\"results\": [\"paper.pdf\"]}", "1027.5", "[]", "Error: timeout", "多行\n输出"]
THINK = ["<think>\nThe user greets me. I should reply politely.\n</think>\n\nHello! How can I help?",
         "<think>Compute 17*3 = 51.</think>The answer is 51.", "<think>\n\n</think>\n\nShort answer.",
         "No reasoning here.", "<think>first</think>middle</think>tail after two closings"]
SCHEMAS = [{"type": "function", "function": {"name": name, "description": f"Calls {name}.",
                                               "parameters": {"type": "object", "properties": {k: {"type": "string"} for k in args}}}}
           for name, args in TOOLS]


def tool_call_message(rng):
    calls = []
    for name, args in rng.sample(TOOLS, rng.randint(1, 3)):
        calls.append({"type": "function", "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=rng.random() < 0.5)}})
    return {"role": "assistant", "content": None, "tool_calls": calls}


def conversation(rng, index):
    messages = []
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        messages.append({"role": "system", "content": rng.choice(["You are a helpful assistant.", "Answer in Chinese. 用中文回答。",
                                                                  "Be brief.\nNo lists.", ""])})
    for turn in range(rng.randint(1, 4)):
        messages.append({"role": "user", "content": rng.choice(TEXTS)})
        last_turn = turn > 0 and rng.random() < 0.3
        if last_turn:
            break
        if rng.random() < 0.35:
            messages.append(tool_call_message(rng))
            for _ in range(rng.randint(1, 3)):
                messages.append({"role": "tool", "content": rng.choice(OUTPUTS)})
            if rng.random() < 0.8:
                messages.append({"role": "assistant", "content": rng.choice(TEXTS[:6])})
        else:
            messages.append({"role": "assistant", "content": rng.choice(THINK + TEXTS)})
    case = {"name": f"conversation_{index:02d}", "messages": messages}
    if rng.random() < 0.3:
        case["tools"] = rng.sample(SCHEMAS, rng.randint(1, 3))
    return case


def main():
    rng = random.Random(SEED)
    cases = [conversation(rng, i) for i in range(60)]
    path = os.path.join(ROOT, "tests/text/data/chat_conversations.json")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(cases)} conversations written to {path}")


if __name__ == "__main__":
    main()
