// Typed reads of request JSON fields that fail with OpenAI's 400 messages (invalid_type, out-of-range values).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/json.h"
#include "server/api_error.h"
#include "server/http_server.h"

namespace narwhal::server {

// Request bodies keep their key order: chat templates print tool schemas with tojson.
using Body = nlohmann::ordered_json;

// The request's body, parsed by the transport as it arrived; 400 when it was not JSON or is not an object.
const Body& parse_body(const HttpRequest& request);

// Each returns nullopt when the key is absent or null, else the value, or throws a 400 naming the key.
std::optional<bool> read_bool(const Body& body, const char* key);
std::optional<int64_t> read_int(const Body& body, const char* key, int64_t min, int64_t max);
std::optional<double> read_number(const Body& body, const char* key, double min, double max);
std::optional<std::string> read_string(const Body& body, const char* key);

// OpenAI's "stop": a string or a list of strings, none empty.
std::vector<std::string> read_stop(const Body& body);

}  // namespace narwhal::server
