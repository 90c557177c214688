// Reading the accuracy benchmark's questions and answers; the rules mirror tools/arith_problems.py's last_number.
#include "cli/bench_accuracy_data.h"

#include <fstream>

#include "core/error.h"
#include "core/json.h"

namespace narwhal {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Characters after which a '-' is an operator, not a sign.
bool is_wordish(char c) {
  const auto u = static_cast<unsigned char>(c);
  return is_digit(c) || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || c == '_' || c == '.' || u >= 0x80;
}

}  // namespace

std::vector<AccuracyQuestion> read_accuracy_questions(const std::string& path) {
  std::ifstream in(path);
  NW_CHECK(in.good(), "--data-path ", path, ": cannot open the file");
  std::vector<AccuracyQuestion> out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const json row = json::parse(line, nullptr, false);
    const std::string where = cat(path, ":", number);
    NW_CHECK(!row.is_discarded() && row.is_object(), where, ": not a JSON object");
    for (const char* field : {"question", "answer"})
      NW_CHECK(row.contains(field) && row[field].is_string(), where, ": no string \"", field, "\"");
    AccuracyQuestion q{row["question"].get<std::string>(), row["answer"].get<std::string>(), ""};
    std::optional<std::string> label = answer_label(q.answer);
    NW_CHECK(label.has_value(), where, ": the answer has no number to score against");
    q.label = std::move(*label);
    out.push_back(std::move(q));
  }
  return out;
}

std::string few_shot_prompt(const std::vector<AccuracyQuestion>& shots, const AccuracyQuestion& question) {
  std::string prompt;
  for (const AccuracyQuestion& shot : shots)
    prompt += cat("Question: ", shot.question, "\nAnswer: ", shot.answer, "\n\n");
  return prompt + cat("Question: ", question.question, "\nAnswer:");
}

std::string canonical_number(std::string_view number) {
  const bool negative = !number.empty() && number.front() == '-';
  if (negative) number.remove_prefix(1);
  const size_t dot = number.find('.');
  std::string_view whole = number.substr(0, dot);
  std::string_view fraction = dot == std::string_view::npos ? std::string_view() : number.substr(dot + 1);
  while (!whole.empty() && whole.front() == '0') whole.remove_prefix(1);
  while (!fraction.empty() && fraction.back() == '0') fraction.remove_suffix(1);
  std::string out = whole.empty() ? "0" : std::string(whole);
  if (!fraction.empty()) out += cat(".", fraction);
  return negative && out != "0" ? "-" + out : out;
}

std::optional<std::string> last_number(std::string_view raw) {
  std::string text;
  text.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const bool digit_comma =
        raw[i] == ',' && i > 0 && i + 1 < raw.size() && is_digit(raw[i - 1]) && is_digit(raw[i + 1]);
    if (!digit_comma) text += raw[i];
  }
  std::optional<std::string> last;
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const size_t start = i;
    const bool sign = text[i] == '-' && i + 1 < n && is_digit(text[i + 1]) && (i == 0 || !is_wordish(text[i - 1]));
    if (sign) {
      ++i;
    } else if (!is_digit(text[i])) {
      ++i;
      continue;
    }
    while (i < n && is_digit(text[i])) ++i;
    if (i + 1 < n && text[i] == '.' && is_digit(text[i + 1])) {
      for (++i; i < n && is_digit(text[i]);) ++i;
    }
    last = canonical_number(std::string_view(text).substr(start, i - start));
  }
  return last;
}

std::optional<std::string> answer_label(std::string_view answer) {
  const size_t mark = answer.rfind("####");
  return last_number(mark == std::string_view::npos ? answer : answer.substr(mark + 4));
}

}  // namespace narwhal
