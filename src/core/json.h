// JSON: nlohmann::json under one short name, and helpers to read a file with errors that name it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace narwhal {

using json = nlohmann::json;

std::string read_text_file(const std::string& path);
// Parses a JSON file; throws Error naming the path (and the parser's byte position) if it is malformed.
json read_json_file(const std::string& path);

}  // namespace narwhal
