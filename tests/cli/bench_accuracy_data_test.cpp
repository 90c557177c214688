// bench-accuracy's data rules: number extraction (the case list tools/arith_problems.py agrees with), labels,
// SGLang's few-shot prompt, and the JSONL reader's errors.
#include "cli/bench_accuracy_data.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "test_util.h"

namespace narwhal {
namespace {

TEST(BenchAccuracyData, LastNumberFollowsTheSharedCaseList) {
  const json cases = read_json_file(testing::source_path("tests/cli/last_number_cases.json"));
  ASSERT_GT(cases.size(), 10u);
  for (const json& c : cases) {
    const std::string text = c[0].get<std::string>();
    const std::optional<std::string> got = last_number(text);
    if (c[1].is_null()) {
      EXPECT_FALSE(got.has_value()) << text << " -> " << got.value_or("");
    } else {
      EXPECT_EQ(got.value_or("<none>"), c[1].get<std::string>()) << text;
    }
  }
}

TEST(BenchAccuracyData, CanonicalNumbers) {
  EXPECT_EQ(canonical_number("007"), "7");
  EXPECT_EQ(canonical_number("3.50"), "3.5");
  EXPECT_EQ(canonical_number("4.0"), "4");
  EXPECT_EQ(canonical_number("-0"), "0");
  EXPECT_EQ(canonical_number("-0.000"), "0");
  EXPECT_EQ(canonical_number("0.05"), "0.05");
  EXPECT_EQ(canonical_number("-120"), "-120");
}

TEST(BenchAccuracyData, LabelIsTheNumberAfterTheLastMark) {
  EXPECT_EQ(answer_label("He has 3 + 4 = 7 apples.\n#### 7").value(), "7");
  EXPECT_EQ(answer_label("Total 1,000 + 250.\n#### 1,250").value(), "1250");
  EXPECT_EQ(answer_label("no mark: 3 then 9").value(), "9");
  EXPECT_EQ(answer_label("steps 5 #### 6 #### 8").value(), "8");
  EXPECT_FALSE(answer_label("5 apples\n#### none").has_value());
}

TEST(BenchAccuracyData, FewShotPromptIsSglangs) {
  const std::vector<AccuracyQuestion> shots = {{"Q1?", "A1\n#### 1", "1"}, {"Q2?", "A2\n#### 2", "2"}};
  const AccuracyQuestion q{"Q3?", "A3\n#### 3", "3"};
  EXPECT_EQ(few_shot_prompt(shots, q),
            "Question: Q1?\nAnswer: A1\n#### 1\n\nQuestion: Q2?\nAnswer: A2\n#### 2\n\nQuestion: Q3?\nAnswer:");
  EXPECT_EQ(few_shot_prompt({}, q), "Question: Q3?\nAnswer:");
}

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string read_error(const std::string& path) {
  try {
    read_accuracy_questions(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(BenchAccuracyData, ReadsJsonl) {
  testing::TempDir dir;
  write(dir.file("q.jsonl"), "{\"question\": \"a?\", \"answer\": \"x\\n#### 12\"}\n\n"
                             "{\"answer\": \"#### 3.0\", \"question\": \"b?\"}\n");
  const std::vector<AccuracyQuestion> rows = read_accuracy_questions(dir.file("q.jsonl"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].question, "a?");
  EXPECT_EQ(rows[0].answer, "x\n#### 12");
  EXPECT_EQ(rows[0].label, "12");
  EXPECT_EQ(rows[1].label, "3");
  write(dir.file("empty.jsonl"), "");
  EXPECT_TRUE(read_accuracy_questions(dir.file("empty.jsonl")).empty());
}

TEST(BenchAccuracyData, ErrorsNameTheFileAndLine) {
  testing::TempDir dir;
  const std::string bad = dir.file("bad.jsonl"), first = "{\"question\": \"a\", \"answer\": \"1\"}\n";
  write(bad, first + "{not json\n");
  EXPECT_EQ(read_error(bad), bad + ":2: not a JSON object");
  write(bad, first + "{\"question\": \"b\"}\n");
  EXPECT_EQ(read_error(bad), bad + ":2: no string \"answer\"");
  write(bad, first + "{\"question\": \"b\", \"answer\": \"none\"}\n");
  EXPECT_EQ(read_error(bad), bad + ":2: the answer has no number to score against");
  const std::string missing = dir.file("missing.jsonl");
  EXPECT_EQ(read_error(missing), "--data-path " + missing + ": cannot open the file");
}

}  // namespace
}  // namespace narwhal
