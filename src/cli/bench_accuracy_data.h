// The questions of the accuracy benchmark (a GSM8K-style JSONL), its few-shot prompts and how answers are read.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace narwhal {

struct AccuracyQuestion {
  std::string question;
  std::string answer;  // worked steps, then "#### <number>"
  std::string label;   // the answer's number, as canonical_number writes it
};

// Reads {"question": ..., "answer": ...} lines (blank lines skipped). Throws Error naming the file and line for a
// malformed line, a missing field, or an answer with no number.
std::vector<AccuracyQuestion> read_accuracy_questions(const std::string& path);

// SGLang's benchmark/gsm8k prompt: "Question: <q>\nAnswer: <a>\n\n" for every shot, then "Question: <q>\nAnswer:".
std::string few_shot_prompt(const std::vector<AccuracyQuestion>& shots, const AccuracyQuestion& question);

// "007" -> "7", "3.50" -> "3.5", "4.0" -> "4", "-0" -> "0", so that equal numbers compare equal as text.
std::string canonical_number(std::string_view number);

// The last number in `text`, canonical; nullopt when there is none. Commas between digits are dropped first
// ("1,250" is 1250); a minus sign counts only where it cannot be an operator: not right after a letter, digit, '_'
// or '.' (bytes past ASCII count as letters), so "12-5" ends in 5 and "is -5" in -5.
std::optional<std::string> last_number(std::string_view text);

// The label of a GSM8K answer: the number after its last "####", or its last number when it has no "####".
std::optional<std::string> answer_label(std::string_view answer);

}  // namespace narwhal
