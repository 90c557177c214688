// Command-line flag parser: flags bind to struct fields, defaults are the fields' initial values.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace narwhal {

class ArgParser {
 public:
  ArgParser(std::string command, std::string summary);

  // `--name value` or `--name=value`. The help text shows the field's value at registration as default.
  void add(const std::string& name, std::string* target, const std::string& help);
  void add(const std::string& name, int* target, const std::string& help);
  void add(const std::string& name, int64_t* target, const std::string& help);
  void add(const std::string& name, double* target, const std::string& help);
  void add(const std::string& name, std::optional<std::string>* target, const std::string& help);
  // A flag that may repeat: each occurrence appends its value.
  void add(const std::string& name, std::vector<std::string>* target, const std::string& help);
  // `--name` alone sets true.
  void add_switch(const std::string& name, bool* target, const std::string& help);
  // A second spelling for an already registered flag (SGLang accepts e.g. both --tp and --tp-size).
  void alias(const std::string& alias_name, const std::string& name);
  // An SGLang flag narwhal knows but does not implement: giving it fails with "not supported by narwhal: why".
  void add_unsupported(const std::string& name, const std::string& why);

  // Parses argv[first..argc). Throws Error for unknown flags, missing or malformed values; with `unknown`,
  // unknown flags are appended there instead (each with the value after it, unless that starts with --), for
  // another command to parse: bench-one-batch-server hands them to `narwhal serve`.
  // Returns false when --help was given (help has been printed to stdout).
  bool parse(int argc, char** argv, int first = 1, std::vector<std::string>* unknown = nullptr);
  std::string help() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string default_text;
    bool takes_value;
    std::function<void(const std::string&)> set;
  };
  Flag* find(const std::string& name);
  // The registered spelling closest to a mistyped `name`, or "" when none is close.
  std::string suggest(const std::string& name) const;
  void add_flag(Flag flag);

  std::string command_;
  std::string summary_;
  std::vector<Flag> flags_;
  std::vector<std::pair<std::string, std::string>> aliases_;
  std::vector<std::pair<std::string, std::string>> unsupported_;  // name, why
};

// Parses "5,17,42" into ids; throws Error naming `what` on anything that is not a non-negative integer.
std::vector<int> parse_id_list(const std::string& text, const std::string& what);

}  // namespace narwhal
