#!/usr/bin/env python3
# arith_problems.py: seeded arithmetic word problems with worked solutions, in GSM8K's JSONL format (stdlib only).
"""Arithmetic word problems for `narwhal bench-accuracy` and tools/train_tiny.py.

Each problem is {"question": ..., "answer": "<worked steps>\\n#### <number>"}, as GSM8K's test.jsonl, so the
few-shot prompt "Question: q\\nAnswer: a" of SGLang's benchmark/gsm8k reads it unchanged. One or two steps with
small numbers (sums and differences under 200, products of a one-digit factor), so that a model of a few
million parameters can learn them. A split and a seed fix the problems: the same call gives the same rows on
any machine, and the train and test splits draw from differently seeded generators.

    python3 tools/arith_problems.py --split test --num 500 --out test.jsonl
    python3 tools/arith_problems.py --split train --num 100000 --exclude test.jsonl --out train.jsonl
"""
import argparse
import json
import random
import re
import sys

NAMES = [("Ava", "She"), ("Ben", "He"), ("Chloe", "She"), ("Dan", "He"), ("Emma", "She"), ("Finn", "He"),
         ("Grace", "She"), ("Hugo", "He"), ("Isla", "She"), ("Jack", "He"), ("Kira", "She"), ("Liam", "He"),
         ("Maya", "She"), ("Noah", "He"), ("Olive", "She"), ("Paul", "He"), ("Rosa", "She"), ("Sam", "He"),
         ("Tara", "She"), ("Umar", "He"), ("Vera", "She"), ("Will", "He"), ("Yara", "She"), ("Zack", "He")]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "cards", "shells", "stamps", "beads",
         "crayons", "coins", "toy cars", "balloons", "oranges", "cupcakes"]


def _people(rng):
    (a, pa), (b, _) = rng.sample(NAMES, 2)
    return a, pa, b


# Each template draws its numbers and returns (question, worked steps, answer).
def _buy(rng):
    n, p, _ = _people(rng)
    item, a, b = rng.choice(ITEMS), rng.randint(2, 60), rng.randint(2, 40)
    return (f"{n} has {a} {item}. {p} buys {b} more {item}. How many {item} does {n} have now?",
            [f"{n} has {a} + {b} = {a + b} {item} now."], a + b)


def _give(rng):
    n, p, m = _people(rng)
    item, a = rng.choice(ITEMS), rng.randint(20, 90)
    b = rng.randint(2, a - 1)
    return (f"{n} has {a} {item}. {p} gives {b} of them to {m}. How many {item} does {n} have left?",
            [f"{n} has {a} - {b} = {a - b} {item} left."], a - b)


def _find_lose(rng):
    n, p, _ = _people(rng)
    item, a, b = rng.choice(ITEMS), rng.randint(5, 60), rng.randint(2, 40)
    c = rng.randint(2, a + b - 1)
    s = a + b
    return (f"{n} has {a} {item}. {p} finds {b} more and then loses {c}. How many {item} does {n} have now?",
            [f"After finding {b} more, {n} has {a} + {b} = {s} {item}.",
             f"After losing {c}, {n} has {s} - {c} = {s - c} {item}."], s - c)


def _packs(rng):
    n, _, _ = _people(rng)
    item, packs, each = rng.choice(ITEMS), rng.randint(2, 12), rng.randint(2, 9)
    return (f"{n} buys {packs} packs of {item}. Each pack has {each} {item}. How many {item} does {n} buy?",
            [f"{n} buys {packs} * {each} = {packs * each} {item}."], packs * each)


def _boxes_plus(rng):
    n, _, _ = _people(rng)
    item, boxes, each, loose = rng.choice(ITEMS), rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 30)
    s = boxes * each
    return (f"{n} has {boxes} boxes with {each} {item} in each box and {loose} more {item} on the table. "
            f"How many {item} does {n} have in total?",
            [f"The boxes hold {boxes} * {each} = {s} {item}.",
             f"In total {n} has {s} + {loose} = {s + loose} {item}."], s + loose)


def _share(rng):
    n, _, _ = _people(rng)
    item, friends, each = rng.choice(ITEMS), rng.randint(2, 9), rng.randint(2, 12)
    total = friends * each
    return (f"{n} has {total} {item} and shares them equally among {friends} friends. "
            f"How many {item} does each friend get?",
            [f"Each friend gets {total} / {friends} = {each} {item}."], each)


def _change(rng):
    n, _, _ = _people(rng)
    item, count, price = rng.choice(ITEMS), rng.randint(2, 9), rng.randint(2, 9)
    cost = count * price
    bill = next(b for b in (20, 50, 100) if b > cost)
    return (f"{n} buys {count} {item} for ${price} each and pays with a ${bill} bill. "
            f"How much change does {n} get?",
            [f"The {item} cost {count} * {price} = ${cost}.",
             f"{n} gets {bill} - {cost} = ${bill - cost} in change."], bill - cost)


def _reading(rng):
    n, _, _ = _people(rng)
    per_day, days, extra = rng.randint(2, 20), rng.randint(2, 9), rng.randint(2, 30)
    s = per_day * days
    return (f"{n} reads {per_day} pages every day for {days} days and then {extra} more pages. "
            f"How many pages does {n} read in total?",
            [f"In {days} days {n} reads {per_day} * {days} = {s} pages.",
             f"In total {n} reads {s} + {extra} = {s + extra} pages."], s + extra)


def _more_than(rng):
    n, _, m = _people(rng)
    item, a, b = rng.choice(ITEMS), rng.randint(5, 50), rng.randint(2, 30)
    s = a + b
    return (f"{n} has {a} {item}. {m} has {b} more {item} than {n}. How many {item} do they have together?",
            [f"{m} has {a} + {b} = {s} {item}.", f"Together they have {a} + {s} = {a + s} {item}."], a + s)


def _times(rng):
    n, _, m = _people(rng)
    item, a, k = rng.choice(ITEMS), rng.randint(2, 20), rng.randint(2, 5)
    s = k * a
    return (f"{n} has {a} {item}. {m} has {k} times as many {item} as {n}. "
            f"How many {item} do they have together?",
            [f"{m} has {k} * {a} = {s} {item}.", f"Together they have {a} + {s} = {a + s} {item}."], a + s)


def _half(rng):
    n, p, m = _people(rng)
    item, half, more = rng.choice(ITEMS), rng.randint(2, 40), rng.randint(2, 30)
    total = 2 * half
    return (f"{n} had {total} {item}. {p} gave half of them to {m} and then bought {more} more. "
            f"How many {item} does {n} have now?",
            [f"{n} gave away {total} / 2 = {half} {item} and kept {half}.",
             f"After buying more, {n} has {half} + {more} = {half + more} {item}."], half + more)


TEMPLATES = [_buy, _give, _find_lose, _packs, _boxes_plus, _share, _change, _reading, _more_than, _times, _half]


def problem(rng):
    """One problem drawn with `rng` (a random.Random)."""
    question, steps, answer = rng.choice(TEMPLATES)(rng)
    return {"question": question, "answer": "\n".join(steps) + f"\n#### {answer}"}


def generate(split, seed, count, exclude=()):
    """`count` problems of `split` ("train" or "test"), none of whose questions is in `exclude`.

    Seeding with a string hashes it with SHA-512, the same everywhere, so the rows do not depend on the
    Python build or PYTHONHASHSEED.
    """
    rng = random.Random(f"arith-{split}-{seed}")
    excluded, rows = set(exclude), []
    while len(rows) < count:
        row = problem(rng)
        if row["question"] not in excluded:
            rows.append(row)
    return rows


def example_text(row, with_answer):
    """SGLang's get_one_example: the few-shot form of one row (bench-accuracy builds the same)."""
    return f"Question: {row['question']}\nAnswer:" + (f" {row['answer']}" if with_answer else "")


def few_shot_prompt(shots, row):
    """The prompt bench-accuracy sends for `row` after the solved `shots`."""
    return "".join(example_text(s, True) + "\n\n" for s in shots) + example_text(row, False)


# A minus sign belongs to a number unless a letter, digit, '_' or '.' (non-ASCII counts as a letter) is before it.
_WORDISH = "0-9A-Za-z_.\u0080-\U0010ffff"
_NUMBER = re.compile(rf"(?<![{_WORDISH}])-?[0-9]+(?:\.[0-9]+)?|(?<=[{_WORDISH}])[0-9]+(?:\.[0-9]+)?")


def canonical_number(text):
    """'007' -> '7', '3.50' -> '3.5', '4.0' -> '4', '-0' -> '0': numbers compare as these strings."""
    sign = "-" if text.startswith("-") else ""
    whole, _, frac = text.lstrip("-").partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    out = whole + ("." + frac if frac else "")
    return "0" if out == "0" else sign + out


def last_number(text):
    """The last number in `text` as canonical_number writes it, or None: bench-accuracy's extraction.

    Commas between digits are dropped first ("1,250" is 1250); a minus sign counts only where it cannot be an
    operator ("12-5" is 12 and 5, "x -5" ends in -5).
    """
    numbers = _NUMBER.findall(re.sub(r"(?<=[0-9]),(?=[0-9])", "", text))
    return canonical_number(numbers[-1]) if numbers else None


def final_answer(answer):
    """The label of a GSM8K-style answer: the number after '####' (the last number when there is no '####')."""
    _, sep, tail = answer.rpartition("####")
    return last_number(tail if sep else answer)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    out = sys.stdout if path == "-" else open(path, "w", encoding="utf-8")
    try:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["train", "test"], default="test")
    ap.add_argument("--num", type=int, default=500, help="problems to write")
    ap.add_argument("--seed", type=int, default=0, help="with --split, fixes the problems")
    ap.add_argument("--exclude", help="JSONL whose questions are left out (e.g. the test split, for train)")
    ap.add_argument("--out", default="-", help="JSONL file to write ('-': stdout)")
    args = ap.parse_args()
    exclude = [r["question"] for r in read_jsonl(args.exclude)] if args.exclude else ()
    write_jsonl(args.out, generate(args.split, args.seed, args.num, exclude))


if __name__ == "__main__":
    main()
