// `narwhal tokenize`: encodes text with a Hugging Face tokenizer directory and prints the ids as JSON.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "cli/arg_parser.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/json.h"
#include "text/tokenizer.h"

namespace narwhal {
namespace {

void print_ids(const std::vector<int>& ids) {
  std::string line = "{\"ids\": [";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ", ";
    line += std::to_string(ids[i]);
  }
  line += "]}\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
}

}  // namespace

int run_tokenize(int argc, char** argv) {
  std::string tokenizer_path;
  std::optional<std::string> text, text_file, jsonl;
  bool add_special_tokens = false;
  ArgParser parser("tokenize", "Encodes text and prints {\"ids\": [...]} (one line per input).");
  parser.add("tokenizer-path", &tokenizer_path, "directory with tokenizer.json and tokenizer_config.json");
  parser.add("text", &text, "the text to encode");
  parser.add("text-file", &text_file, "a file whose whole content is the text to encode");
  parser.add("jsonl", &jsonl, "a file of one JSON string per line; prints one {\"ids\": [...]} line each");
  parser.add_switch("add-special-tokens", &add_special_tokens, "add BOS/EOS as the tokenizer config says");
  if (!parser.parse(argc, argv, 2)) return 0;
  NW_CHECK(!tokenizer_path.empty(), "--tokenizer-path is required");
  NW_CHECK(text.has_value() + text_file.has_value() + jsonl.has_value() == 1,
           "give exactly one of --text, --text-file, --jsonl");

  const text::Tokenizer tokenizer(tokenizer_path);
  if (!jsonl) {
    print_ids(tokenizer.encode(text ? *text : read_text_file(*text_file), add_special_tokens));
    return 0;
  }
  std::istringstream lines(read_text_file(*jsonl));
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (line.empty()) continue;
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(cat(*jsonl, ":", number, ": not valid JSON: ", e.what()));
    }
    NW_CHECK(value.is_string(), *jsonl, ":", number, ": expected a JSON string");
    print_ids(tokenizer.encode(value.get_ref<const std::string&>(), add_special_tokens));
  }
  return 0;
}

}  // namespace narwhal
