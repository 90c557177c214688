// Request field reading: OpenAI's wording for wrong types ("invalid_type") and ranges.
#include "server/request_fields.h"

#include <cmath>

#include "core/error.h"

namespace narwhal::server {

namespace {

std::string type_name(const Body& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a decimal";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

ApiError wrong_type(const char* key, const char* expected, const Body& got) {
  return invalid_request(cat("Invalid type for '", key, "': expected ", expected, ", but got ", type_name(got),
                             " instead."),
                         key, "invalid_type");
}

template <typename T>
void check_range(const char* key, const char* kind, T value, T min, T max) {
  if (value < min)
    throw invalid_request(cat("Invalid '", key, "': ", kind, " below minimum value. Expected a value >= ", min,
                              ", but got ", value, " instead."),
                          key, std::string(kind) + "_below_min_value");
  if (value > max)
    throw invalid_request(cat("Invalid '", key, "': ", kind, " above maximum value. Expected a value <= ", max,
                              ", but got ", value, " instead."),
                          key, std::string(kind) + "_above_max_value");
}

const Body* present(const Body& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

}  // namespace

const Body& parse_body(const HttpRequest& request) {
  if (!request.body_error.empty())
    throw invalid_request(cat("We could not parse the JSON body of your request. (", request.body_error, ")"), "",
                          "invalid_json");
  if (!request.body.is_object()) throw invalid_request("The request body must be a JSON object.", "", "invalid_json");
  return request.body;
}

std::optional<bool> read_bool(const Body& body, const char* key) {
  const Body* v = present(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

std::optional<int64_t> read_int(const Body& body, const char* key, int64_t min, int64_t max) {
  const Body* v = present(body, key);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    check_range<int64_t>(key, "integer", INT64_MAX, min, max);
  // 3.0 is an integer to Python clients and to OpenAI; 3.5 is not.
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e18) throw wrong_type(key, "an integer", *v);
    check_range<int64_t>(key, "integer", static_cast<int64_t>(d), min, max);
    return static_cast<int64_t>(d);
  }
  if (!v->is_number_integer()) throw wrong_type(key, "an integer", *v);
  const int64_t value = v->get<int64_t>();
  check_range<int64_t>(key, "integer", value, min, max);
  return value;
}

std::optional<double> read_number(const Body& body, const char* key, double min, double max) {
  const Body* v = present(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw wrong_type(key, "a decimal", *v);
  const double value = v->get<double>();
  check_range<double>(key, "decimal", value, min, max);
  return value;
}

std::optional<std::string> read_string(const Body& body, const char* key) {
  const Body* v = present(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw wrong_type(key, "a string", *v);
  return v->get<std::string>();
}

std::vector<std::string> read_stop(const Body& body) {
  const Body* v = present(body, "stop");
  if (!v) return {};
  std::vector<std::string> stops;
  if (v->is_string()) {
    stops.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const Body& s : *v) {
      if (!s.is_string()) throw wrong_type("stop", "a string or an array of strings", *v);
      stops.push_back(s.get<std::string>());
    }
  } else {
    throw wrong_type("stop", "a string or an array of strings", *v);
  }
  for (const std::string& s : stops)
    if (s.empty()) throw invalid_request("Invalid 'stop': stop sequences must not be empty.", "stop");
  return stops;
}

}  // namespace narwhal::server
