// Typed reads of request JSON fields that fail with OpenAI's 400 messages (invalid_type, out-of-range values).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <string_view>
#include <vector>

#include "core/json.h"
#include "core/json_reader.h"
#include "runtime/json_grammar.h"
#include "server/api_error.h"
#include "server/http_server.h"

namespace narwhal::server {

// Request bodies keep their key order: chat templates print tool schemas with tojson.
using Body = nlohmann::ordered_json;

// The request's body, parsed by the transport as it arrived; 400 when it was not JSON or is not an object.
const Body& parse_body(const HttpRequest& request);

// Arrays and objects nested deeper than the JSON reader's limit are refused; bodies parsed from HTTP never are,
// but the request parsers also take values built otherwise (tests, tools), and copying, serializing or templating
// a value recurses once per level.
constexpr int kMaxNesting = kMaxJsonDepth;

// 400 naming the top-level field whose value nests deeper than kMaxNesting (the body itself is level 1). It walks
// with its own stack, so any depth is safe; call it before anything else touches the body.
void check_nesting(const Body& body);

// Each returns nullopt when the key is absent or null, else the value, or throws a 400 naming the field: `key`, or
// `parent`.`key` for a nested object (sampling_params.n). Integers are range-checked as 64-bit values before any
// narrowing; an integral decimal (3.0) is an integer, as it is to Python clients; booleans are not numbers.
std::optional<bool> read_bool(const Body& object, const char* key, std::string_view parent = {});
std::optional<int64_t> read_int(const Body& object, const char* key, int64_t min, int64_t max,
                                std::string_view parent = {});
std::optional<double> read_number(const Body& object, const char* key, double min, double max,
                                  std::string_view parent = {});
std::optional<std::string> read_string(const Body& object, const char* key, std::string_view parent = {});

// OpenAI's "stop": a string or a list of strings, none empty.
std::vector<std::string> read_stop(const Body& object, std::string_view parent = {});

// OpenAI's "logit_bias": an object mapping token ids (decimal strings) to a bias in [-100, 100]; `param` names it.
std::vector<std::pair<int32_t, float>> read_logit_bias(const Body& bias, const std::string& param);

// An array of token ids (integers in [0, 2^31 - 1]); `param` names it in the 400.
std::vector<int32_t> read_token_ids(const Body& ids, const std::string& param);

// A JSON Schema as structured output's grammar (JsonGrammar::from_schema); a schema it cannot enforce is a 400
// naming `param` and the keyword.
std::shared_ptr<const JsonGrammar> read_json_schema(const Body& schema, const std::string& param);

}  // namespace narwhal::server
