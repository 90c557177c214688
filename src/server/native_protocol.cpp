// /generate request parsing: SGLang's sampling_params names and ranges, read with the OpenAI field readers.
#include "server/native_protocol.h"

#include <limits>

#include "core/error.h"

namespace narwhal::server {

namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();
constexpr double kMaxDouble = std::numeric_limits<double>::max();
constexpr const char* kParams = "sampling_params";

SamplingParams parse_sampling_params(const Body& j) {
  if (!j.is_object())
    throw invalid_request("Invalid type for 'sampling_params': expected an object.", kParams, "invalid_type");
  SamplingParams p;
  for (const auto& [key, value] : j.items()) {
    const char* k = key.c_str();
    if (key == "max_new_tokens") p.max_new_tokens = read_int(j, k, 0, kMaxInt, kParams).value_or(p.max_new_tokens);
    else if (key == "min_new_tokens") p.min_new_tokens = read_int(j, k, 0, kMaxInt, kParams).value_or(0);
    else if (key == "temperature") p.temperature = read_number(j, k, 0.0, kMaxDouble, kParams).value_or(1.0);
    else if (key == "top_k") p.top_k = read_int(j, k, -1, kMaxInt, kParams).value_or(-1);
    else if (key == "top_p") p.top_p = read_number(j, k, 0.0, 1.0, kParams).value_or(1.0);
    else if (key == "min_p") p.min_p = read_number(j, k, 0.0, 1.0, kParams).value_or(0.0);
    else if (key == "frequency_penalty") p.frequency_penalty = read_number(j, k, -2.0, 2.0, kParams).value_or(0.0);
    else if (key == "presence_penalty") p.presence_penalty = read_number(j, k, -2.0, 2.0, kParams).value_or(0.0);
    else if (key == "repetition_penalty") p.repetition_penalty = read_number(j, k, 0.0, 2.0, kParams).value_or(1.0);
    else if (key == "n") p.n = static_cast<int>(read_int(j, k, 1, SamplingParams::kMaxN, kParams).value_or(1));
    else if (key == "ignore_eos") p.ignore_eos = read_bool(j, k, kParams).value_or(false);
    else if (key == "no_stop_trim") p.no_stop_trim = read_bool(j, k, kParams).value_or(false);
    else if (key == "stop") p.stop = read_stop(j, kParams);
    else if (key == "stop_token_ids") {
      if (!value.is_null()) p.stop_token_ids = read_token_ids(value, cat(kParams, ".", key));
    } else if (key == "logit_bias") {
      if (!value.is_null()) p.logit_bias = read_logit_bias(value, cat(kParams, ".", key));
    } else if (key == "json_schema") {  // SGLang's: the schema as a JSON string
      if (auto text = read_string(j, k, kParams)) {
        Body schema;
        try {
          schema = Body::parse(*text);
        } catch (const nlohmann::json::exception& e) {
          throw invalid_request(cat("Invalid 'sampling_params.json_schema': not JSON (", e.what(), ")."),
                                cat(kParams, ".", key), "invalid_value");
        }
        check_nesting(schema);
        p.grammar = read_json_schema(schema, cat(kParams, ".", key));
      }
    } else if (key == "sampling_seed") {
      if (auto seed = read_int(j, k, std::numeric_limits<int64_t>::min(), kMaxInt, kParams))
        p.seed = static_cast<uint64_t>(*seed);
    } else {
      throw invalid_request(cat("Unknown parameter: 'sampling_params.", key, "'."), cat(kParams, ".", key),
                            "unknown_parameter");
    }
  }
  try {
    p.validate();  // what single fields cannot say: min_new_tokens <= max_new_tokens, top_p and top_k's holes
  } catch (const Error& e) {
    throw invalid_request(cat("Invalid 'sampling_params': ", e.what()), kParams, "invalid_value");
  }
  return p;
}

}  // namespace

GenerateRequest parse_generate_request(const Body& body) {
  check_nesting(body);  // first: what follows copies client values recursively
  GenerateRequest r;
  GenerationOptions& o = r.options;
  o.stream = read_bool(body, "stream").value_or(false);
  o.logprobs = read_bool(body, "return_logprob").value_or(false);
  o.top_logprobs = static_cast<int>(read_int(body, "top_logprobs_num", 0, 20).value_or(0));
  if (auto it = body.find("sampling_params"); it != body.end() && !it->is_null()) {
    o.params = parse_sampling_params(*it);
    o.max_tokens_given = it->contains("max_new_tokens") && !(*it)["max_new_tokens"].is_null();
  }
  r.text = read_string(body, "text");
  if (!r.text) {
    auto ids = body.find("input_ids");
    if (ids == body.end() || ids->is_null())
      throw invalid_request("Either 'text' (a string) or 'input_ids' (a list of token ids) is required.", "text",
                            "missing_required_parameter");
    r.input_ids = read_token_ids(*ids, "input_ids");
    if (r.input_ids.empty()) throw invalid_request("The prompt is empty.", "input_ids", "empty_array");
  }
  return r;
}

}  // namespace narwhal::server
