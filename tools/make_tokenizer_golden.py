#!/usr/bin/env python3
"""Writes tests/text/data/tokenizer_golden.jsonl: Hugging Face's ids and decodes for every corpus string.

One JSON object per line of tests/text/data/tokenizer_corpus.jsonl, same order:
  ids            tokenizers.Tokenizer.from_file(tokenizer.json).encode(s, add_special_tokens=False)
  ids_special    ids with BOS/EOS added as tokenizer_config.json's add_bos_token/add_eos_token say: what
                 transformers 4's LlamaTokenizerFast (the class DeepSeek's config names) returns. transformers 5
                 rebuilds that class's pipeline instead of reading tokenizer.json (no BOS, spaces dropped), so its
                 AutoTokenizer output is only reported below, not used.
  decoded        Tokenizer.decode(ids, skip_special_tokens=False)
  decoded_skip   Tokenizer.decode(ids, skip_special_tokens=True)
It also prints where the other ways of loading the tokenizer disagree. Run where tokenizers and transformers are
installed (the GPU machine): python3 tools/make_tokenizer_golden.py TOKENIZER_DIR OUT.jsonl [CORPUS.jsonl]
"""
import json
import os
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def report(name, got, want, corpus):
    bad = [i for i in range(len(corpus)) if got[i] != want[i]]
    print(f"{name}: {len(bad)} of {len(corpus)} differ")
    for i in bad[:3]:
        print(f"  {corpus[i]!r}: {got[i][:12]} vs {want[i][:12]}")


def main():
    tokenizer_dir, out_path = sys.argv[1], sys.argv[2]
    corpus_path = sys.argv[3] if len(sys.argv) > 3 else os.path.join(ROOT, "tests/text/data/tokenizer_corpus.jsonl")
    with open(corpus_path, encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]
    raw = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(tokenizer_dir)
    print("AutoTokenizer class:", type(auto).__name__)
    ids = [raw.encode(s, add_special_tokens=False).ids for s in corpus]
    with open(os.path.join(tokenizer_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    def token_id(key):
        token = config[key]
        return raw.token_to_id(token["content"] if isinstance(token, dict) else token)
    bos = [token_id("bos_token")] if config.get("add_bos_token") else []
    eos = [token_id("eos_token")] if config.get("add_eos_token") else []
    ids_special = [bos + x + eos for x in ids]
    report("from_file add_special_tokens=True vs False", [raw.encode(s).ids for s in corpus], ids, corpus)
    report("AutoTokenizer add_special_tokens=False vs from_file", [auto(s, add_special_tokens=False)["input_ids"] for s in corpus], ids, corpus)
    report("AutoTokenizer add_special_tokens=True vs ids_special",
           [auto(s, add_special_tokens=True)["input_ids"] for s in corpus], ids_special, corpus)
    try:
        from transformers import PreTrainedTokenizerFast
        fast = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
        report("PreTrainedTokenizerFast add_special_tokens=True vs ids_special",
               [fast(s, add_special_tokens=True)["input_ids"] for s in corpus], ids_special, corpus)
    except Exception as e:  # only a cross-check: the golden file does not depend on it
        print("PreTrainedTokenizerFast cross-check failed:", e)
    decoded = [raw.decode(x, skip_special_tokens=False) for x in ids]
    report("AutoTokenizer.decode vs Tokenizer.decode", [auto.decode(x) for x in ids], decoded, corpus)
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(len(corpus)):
            row = {"ids": ids[i], "ids_special": ids_special[i], "decoded": decoded[i],
                   "decoded_skip": raw.decode(ids[i], skip_special_tokens=True)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(corpus)} golden rows written to {out_path}")


if __name__ == "__main__":
    main()
