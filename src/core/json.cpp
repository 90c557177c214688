// Reading whole text and JSON files with errors that name the file.
#include "core/json.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace narwhal {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  NW_CHECK(in.good(), path, ": cannot open: ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json_file(const std::string& path) {
  std::string text = read_text_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(cat(path, ": invalid JSON: ", e.what()));
  }
}

}  // namespace narwhal
