// Request field reading: OpenAI's wording for wrong types ("invalid_type") and ranges.
#include "server/request_fields.h"

#include <algorithm>
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

std::string field_name(std::string_view parent, const char* key) {
  return parent.empty() ? std::string(key) : cat(parent, ".", key);
}

ApiError wrong_type(const std::string& param, const char* expected, const Body& got) {
  return invalid_request(cat("Invalid type for '", param, "': expected ", expected, ", but got ", type_name(got),
                             " instead."),
                         param, "invalid_type");
}

// `bound` is the maximum (`above`) or the minimum `got` crossed; `kind` is "integer" or "decimal".
template <typename Bound, typename Got>
ApiError out_of_range(const std::string& param, const char* kind, bool above, Bound bound, Got got) {
  return invalid_request(cat("Invalid '", param, "': ", kind, above ? " above maximum" : " below minimum",
                             " value. Expected a value ", above ? "<= " : ">= ", bound, ", but got ", got,
                             " instead."),
                         param, cat(kind, above ? "_above_max_value" : "_below_min_value"));
}

template <typename T>
void check_range(const std::string& param, const char* kind, T value, T min, T max) {
  if (value < min) throw out_of_range(param, kind, false, min, value);
  if (value > max) throw out_of_range(param, kind, true, max, value);
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

void check_nesting(const Body& body) {
  for (const auto& [key, value] : body.items()) {
    std::vector<std::pair<const Body*, int>> stack = {{&value, 2}};  // (value, its level) left to visit
    while (!stack.empty()) {
      const auto [v, level] = stack.back();
      stack.pop_back();
      if (!v->is_structured()) continue;
      if (level > kMaxNesting)
        throw invalid_request(cat("Invalid '", key, "': arrays and objects nested deeper than ", kMaxNesting,
                                  " levels are not supported."),
                              key, "invalid_value");
      for (const Body& child : *v) stack.emplace_back(&child, level + 1);
    }
  }
}

std::optional<bool> read_bool(const Body& object, const char* key, std::string_view parent) {
  const Body* v = present(object, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw wrong_type(field_name(parent, key), "a boolean", *v);
  return v->get<bool>();
}

std::optional<int64_t> read_int(const Body& object, const char* key, int64_t min, int64_t max,
                                std::string_view parent) {
  const Body* v = present(object, key);
  if (!v) return std::nullopt;
  const std::string param = field_name(parent, key);
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    throw out_of_range(param, "integer", true, max, v->get<uint64_t>());
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (!std::isfinite(d) || d != std::floor(d)) throw wrong_type(param, "an integer", *v);
    // 2^63 is the first double outside int64; casting it (or anything beyond) would be undefined.
    if (d >= 0x1p63) throw out_of_range(param, "integer", true, max, d);
    if (d < -0x1p63) throw out_of_range(param, "integer", false, min, d);
    check_range<int64_t>(param, "integer", static_cast<int64_t>(d), min, max);
    return static_cast<int64_t>(d);
  }
  if (!v->is_number_integer()) throw wrong_type(param, "an integer", *v);
  const int64_t value = v->get<int64_t>();
  check_range<int64_t>(param, "integer", value, min, max);
  return value;
}

std::optional<double> read_number(const Body& object, const char* key, double min, double max,
                                  std::string_view parent) {
  const Body* v = present(object, key);
  if (!v) return std::nullopt;
  const std::string param = field_name(parent, key);
  if (!v->is_number()) throw wrong_type(param, "a decimal", *v);
  const double value = v->get<double>();
  // JSON has no NaN or infinity, but a parser may turn 1e400 into one; neither compares as out of range.
  if (!std::isfinite(value)) throw wrong_type(param, "a finite decimal", *v);
  check_range<double>(param, "decimal", value, min, max);
  return value;
}

std::optional<std::string> read_string(const Body& object, const char* key, std::string_view parent) {
  const Body* v = present(object, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw wrong_type(field_name(parent, key), "a string", *v);
  return v->get<std::string>();
}

std::vector<std::string> read_stop(const Body& object, std::string_view parent) {
  const Body* v = present(object, "stop");
  if (!v) return {};
  const std::string param = field_name(parent, "stop");
  std::vector<std::string> stops;
  if (v->is_string()) {
    stops.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const Body& s : *v) {
      if (!s.is_string()) throw wrong_type(param, "a string or an array of strings", *v);
      stops.push_back(s.get<std::string>());
    }
  } else {
    throw wrong_type(param, "a string or an array of strings", *v);
  }
  for (const std::string& s : stops)
    if (s.empty()) throw invalid_request("Invalid '" + param + "': stop sequences must not be empty.", param);
  return stops;
}

std::vector<std::pair<int32_t, float>> read_logit_bias(const Body& bias, const std::string& param) {
  if (!bias.is_object()) throw wrong_type(param, "an object of token ids and biases", bias);
  std::vector<std::pair<int32_t, float>> out;
  for (const auto& [key, value] : bias.items()) {
    const std::string where = cat(param, ".", key);
    int64_t id = -1;
    const bool digits = !key.empty() && key.size() <= 10 &&
                        std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) id = std::stoll(key);
    if (!digits || id > INT32_MAX)
      throw invalid_request(cat("Invalid '", param, "': keys must be token ids, but got '", key, "'."), param,
                            "invalid_value");
    if (!value.is_number()) throw wrong_type(where, "a number", value);
    const double b = value.get<double>();
    if (!(b >= -100.0 && b <= 100.0))
      throw invalid_request(cat("Invalid '", where, "': the bias must be in [-100, 100], but got ", value.dump(), "."),
                            param, "invalid_value");
    out.emplace_back(static_cast<int32_t>(id), static_cast<float>(b));
  }
  return out;
}

std::vector<int32_t> read_token_ids(const Body& ids, const std::string& param) {
  if (!ids.is_array()) throw wrong_type(param, "an array of token ids", ids);
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (const Body& id : ids) {
    // Unsigned values above INT64_MAX read as negative int64 and fail the same test.
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      throw invalid_request(cat("Invalid '", param, "': expected token ids (integers in [0, ", INT32_MAX,
                                "]), but got ", id.is_number_integer() ? id.dump() : type_name(id), "."),
                            param, "invalid_value");
    out.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return out;
}

std::shared_ptr<const JsonGrammar> read_json_schema(const Body& schema, const std::string& param) {
  try {
    return JsonGrammar::from_schema(schema);
  } catch (const Error& e) {
    throw invalid_request(cat("Invalid '", param, "': ", e.what()), param, "invalid_value");
  }
}

}  // namespace narwhal::server
