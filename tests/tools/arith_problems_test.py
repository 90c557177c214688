#!/usr/bin/env python3
# tools/arith_problems.py: the same rows for a split and seed, worked steps that add up, GSM8K's format, its CLI.
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

ROOT = os.environ.get("NARWHAL_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import arith_problems  # noqa: E402

STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = \$?(\d+)")


class ArithProblemsTest(unittest.TestCase):
    def test_a_split_and_seed_fix_the_rows(self):
        self.assertEqual(arith_problems.generate("test", 0, 50), arith_problems.generate("test", 0, 50))
        self.assertNotEqual(arith_problems.generate("test", 0, 50), arith_problems.generate("test", 1, 50))
        self.assertNotEqual(arith_problems.generate("test", 0, 50), arith_problems.generate("train", 0, 50))
        # Pinned: train_tiny.py's test.jsonl and any committed results depend on these exact rows.
        self.assertEqual(arith_problems.generate("test", 0, 1)[0], {
            "question": "Maya has 21 balloons and shares them equally among 3 friends. "
                        "How many balloons does each friend get?",
            "answer": "Each friend gets 21 / 3 = 7 balloons.\n#### 7"})

    def test_excluded_questions_stay_out(self):
        test = [r["question"] for r in arith_problems.generate("test", 0, 300)]
        train = arith_problems.generate("train", 0, 3000, exclude=test)
        self.assertEqual(len(train), 3000)
        self.assertFalse(set(test) & {r["question"] for r in train})

    def test_steps_add_up_and_end_in_the_label(self):
        ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
        rows = arith_problems.generate("train", 7, 2000)
        for row in rows:
            steps, _, label = row["answer"].rpartition("\n#### ")
            self.assertRegex(label, r"^[0-9]+$", row)
            self.assertEqual(arith_problems.final_answer(row["answer"]), label)
            found = STEP.findall(steps)
            self.assertTrue(found, row)
            for a, op, b, result in found:
                self.assertEqual(ops[op](int(a), int(b)), int(result), row)
            self.assertEqual(found[-1][3], label, row)

    def test_last_number_follows_the_shared_case_list(self):
        with open(os.path.join(ROOT, "tests/cli/last_number_cases.json"), encoding="utf-8") as f:
            for text, expected in json.load(f):
                self.assertEqual(arith_problems.last_number(text), expected, repr(text))

    def test_few_shot_prompt(self):
        shots = [{"question": "Q1?", "answer": "A1\n#### 1"}]
        self.assertEqual(arith_problems.few_shot_prompt(shots, {"question": "Q2?", "answer": "x"}),
                         "Question: Q1?\nAnswer: A1\n#### 1\n\nQuestion: Q2?\nAnswer:")

    def test_cli_writes_jsonl(self):
        with tempfile.TemporaryDirectory() as d:
            test, train = os.path.join(d, "test.jsonl"), os.path.join(d, "train.jsonl")
            script = os.path.join(ROOT, "tools/arith_problems.py")
            subprocess.run([sys.executable, script, "--split", "test", "--num", "20", "--out", test], check=True)
            subprocess.run([sys.executable, script, "--split", "train", "--num", "40", "--exclude", test,
                            "--out", train], check=True)
            self.assertEqual(arith_problems.read_jsonl(test), arith_problems.generate("test", 0, 20))
            rows = arith_problems.read_jsonl(train)
            self.assertEqual(len(rows), 40)
            self.assertTrue(all(set(r) == {"question", "answer"} for r in rows))


if __name__ == "__main__":
    unittest.main()
