// ArgParser: typed flag binding, help text, and clear errors for unknown or malformed flags.
#include "cli/arg_parser.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "core/error.h"

namespace narwhal {

namespace {
int64_t parse_integer(const std::string& flag, const std::string& value) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  NW_CHECK(used == value.size() && !value.empty(), "--", flag, ": expected an integer, got '", value, "'");
  return v;
}
}  // namespace

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void ArgParser::add_flag(Flag flag) { flags_.push_back(std::move(flag)); }

void ArgParser::add(const std::string& name, std::string* target, const std::string& help) {
  add_flag({name, help, *target, true, [target](const std::string& v) { *target = v; }});
}

void ArgParser::add(const std::string& name, int* target, const std::string& help) {
  add_flag({name, help, std::to_string(*target), true, [name, target](const std::string& v) {
              int64_t x = parse_integer(name, v);
              NW_CHECK(x >= INT32_MIN && x <= INT32_MAX, "--", name, ": ", v, " is out of range");
              *target = static_cast<int>(x);
            }});
}

void ArgParser::add(const std::string& name, int64_t* target, const std::string& help) {
  add_flag({name, help, std::to_string(*target), true,
            [name, target](const std::string& v) { *target = parse_integer(name, v); }});
}

void ArgParser::add(const std::string& name, double* target, const std::string& help) {
  std::ostringstream def;
  def << *target;
  add_flag({name, help, def.str(), true, [name, target](const std::string& v) {
              size_t used = 0;
              double x = 0;
              try {
                x = std::stod(v, &used);
              } catch (const std::exception&) {
                used = 0;
              }
              NW_CHECK(used == v.size() && !v.empty(), "--", name, ": expected a number, got '", v, "'");
              *target = x;
            }});
}

void ArgParser::add(const std::string& name, std::optional<std::string>* target, const std::string& help) {
  add_flag({name, help, target->value_or("none"), true, [target](const std::string& v) { *target = v; }});
}

void ArgParser::add(const std::string& name, std::vector<std::string>* target, const std::string& help) {
  add_flag({name, help + "; repeat the flag for several", "none", true,
            [target](const std::string& v) { target->push_back(v); }});
}

void ArgParser::add_switch(const std::string& name, bool* target, const std::string& help) {
  add_flag({name, help, "", false, [target](const std::string&) { *target = true; }});
}

void ArgParser::alias(const std::string& alias_name, const std::string& name) {
  aliases_.emplace_back(alias_name, name);
}

void ArgParser::add_unsupported(const std::string& name, const std::string& why) {
  unsupported_.emplace_back(name, why);
}

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}
}  // namespace

std::string ArgParser::suggest(const std::string& name) const {
  std::vector<std::string> known;
  for (const Flag& f : flags_) known.push_back(f.name);
  for (const auto& [alias_name, target] : aliases_) known.push_back(alias_name);
  std::string best;
  size_t best_distance = std::max<size_t>(2, name.size() / 3) + 1;
  for (const std::string& k : known) {
    const size_t d = edit_distance(name, k);
    if (d < best_distance) best_distance = d, best = k;
  }
  return best;
}

ArgParser::Flag* ArgParser::find(const std::string& name) {
  std::string canonical = name;
  for (const auto& [alias_name, target] : aliases_)
    if (alias_name == name) canonical = target;
  for (Flag& f : flags_)
    if (f.name == canonical) return &f;
  return nullptr;
}

bool ArgParser::parse(int argc, char** argv, int first, std::vector<std::string>* unknown) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    NW_CHECK(arg.rfind("--", 0) == 0, command_, ": unexpected argument '", arg, "' (flags start with --)");
    std::string name = arg.substr(2), value;
    bool has_inline_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline_value = true;
    }
    Flag* flag = find(name);
    if (flag == nullptr && unknown != nullptr) {
      unknown->push_back(arg);
      if (!has_inline_value && i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0)
        unknown->push_back(argv[++i]);
      continue;
    }
    if (flag == nullptr) {
      for (const auto& [unsupported, why] : unsupported_)
        NW_CHECK(unsupported != name, command_, ": --", name, " is an SGLang flag not supported by narwhal: ", why);
      const std::string close = suggest(name);
      throw Error(cat(command_, ": unknown flag --", name, close.empty() ? "" : " (did you mean --" + close + "?)",
                      " (see `narwhal ", command_, " --help`)"));
    }
    if (flag->takes_value && !has_inline_value) {
      NW_CHECK(i + 1 < argc, "--", name, " needs a value");
      value = argv[++i];
    }
    NW_CHECK(flag->takes_value || !has_inline_value, "--", name, " takes no value");
    flag->set(value);
  }
  return true;
}

std::string ArgParser::help() const {
  std::ostringstream os;
  os << "usage: narwhal " << command_ << " [flags]\n\n" << summary_ << "\n\nflags:\n";
  for (const Flag& f : flags_) {
    std::string spelled = "--" + f.name;
    for (const auto& [alias_name, target] : aliases_)
      if (target == f.name) spelled += ", --" + alias_name;
    os << "  " << spelled << (f.takes_value ? " VALUE" : "") << "\n      " << f.help;
    if (f.takes_value) os << " (default: " << (f.default_text.empty() ? "\"\"" : f.default_text) << ")";
    os << "\n";
  }
  return os.str();
}

std::vector<int> parse_id_list(const std::string& text, const std::string& what) {
  std::vector<int> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int64_t v = parse_integer(what, item);
    NW_CHECK(v >= 0 && v <= INT32_MAX, "--", what, ": token id ", v, " is out of range");
    ids.push_back(static_cast<int>(v));
  }
  NW_CHECK(!ids.empty(), "--", what, ": expected comma-separated token ids, got '", text, "'");
  return ids;
}

}  // namespace narwhal
