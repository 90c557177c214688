#!/usr/bin/env python3
"""Times Hugging Face tokenizers on bench_tokenizer's input (per line, from Python, one thread) for docs/performance.md.

python3 tools/bench_hf_tokenizer.py TOKENIZER_DIR
"""
import json
import os
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402  (after the thread settings)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    tok = Tokenizer.from_file(os.path.join(sys.argv[1], "tokenizer.json"))
    with open(os.path.join(ROOT, "bench/data/mixed_text.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    with open(os.path.join(ROOT, "tests/text/data/tokenizer_corpus.jsonl"), encoding="utf-8") as f:
        lines += [json.loads(line) for line in f]
    total = sum(len(s.encode("utf-8")) for s in lines)
    for label in ("warm-up", "timed"):
        start = time.perf_counter()
        tokens = sum(len(tok.encode(s, add_special_tokens=False).ids) for s in lines)
        seconds = time.perf_counter() - start
    print(f"HF tokenizers per line: {total / seconds / 1e6:.2f} MB/s ({total} bytes, {len(lines)} lines, {tokens} tokens)")
    start = time.perf_counter()
    tok.encode_batch(lines, add_special_tokens=False)
    print(f"HF tokenizers encode_batch (RAYON_NUM_THREADS=1): {total / (time.perf_counter() - start) / 1e6:.2f} MB/s")


if __name__ == "__main__":
    main()
