// SamplingParams validation and parsing from SGLang's native JSON.
#include "runtime/sampling_params.h"

#include <cctype>
#include <climits>
#include <string>

#include "core/error.h"

namespace narwhal {

void SamplingParams::validate() const {
  NW_CHECK(max_new_tokens >= 0, "max_new_tokens must be >= 0, got ", max_new_tokens);
  NW_CHECK(min_new_tokens >= 0 && min_new_tokens <= max_new_tokens, "min_new_tokens must be in [0, max_new_tokens = ",
           max_new_tokens, "], got ", min_new_tokens);
  NW_CHECK(temperature >= 0.0, "temperature must be >= 0, got ", temperature);
  NW_CHECK(top_k == -1 || top_k >= 1, "top_k must be -1 (all) or >= 1, got ", top_k);
  NW_CHECK(top_p > 0.0 && top_p <= 1.0, "top_p must be in (0, 1], got ", top_p);
  NW_CHECK(min_p >= 0.0 && min_p <= 1.0, "min_p must be in [0, 1], got ", min_p);
  NW_CHECK(frequency_penalty >= -2.0 && frequency_penalty <= 2.0, "frequency_penalty must be in [-2, 2], got ",
           frequency_penalty);
  NW_CHECK(presence_penalty >= -2.0 && presence_penalty <= 2.0, "presence_penalty must be in [-2, 2], got ",
           presence_penalty);
  NW_CHECK(repetition_penalty > 0.0 && repetition_penalty <= 2.0, "repetition_penalty must be in (0, 2], got ",
           repetition_penalty);
  NW_CHECK(n >= 1 && n <= 1024, "n must be in [1, 1024], got ", n);
  for (const std::string& s : stop) NW_CHECK(!s.empty(), "stop strings must not be empty");
  for (int32_t id : stop_token_ids) NW_CHECK(id >= 0, "stop_token_ids must be token ids, got ", id);
  for (size_t i = 0; i < logit_bias.size(); ++i) {
    const auto& [id, bias] = logit_bias[i];
    NW_CHECK(id >= 0, "logit_bias keys must be token ids, got ", id);
    NW_CHECK(bias >= -100.0f && bias <= 100.0f, "logit_bias of token ", id, " must be in [-100, 100], got ", bias);
    for (size_t j = 0; j < i; ++j) NW_CHECK(logit_bias[j].first != id, "logit_bias lists token ", id, " twice");
  }
}

namespace {

template <typename T>
T field(const json& j, const char* key) {
  try {
    return j.get<T>();
  } catch (const json::exception& e) {
    throw Error(cat("sampling_params.", key, ": ", j.dump(), " has the wrong type (", e.what(), ")"));
  }
}

// {"token id": bias, ...}, the keys decimal token ids.
std::vector<std::pair<int32_t, float>> logit_bias_field(const json& j) {
  NW_CHECK(j.is_object(), "sampling_params.logit_bias must be an object of token id -> bias, got ", j.dump());
  std::vector<std::pair<int32_t, float>> out;
  for (const auto& [key, value] : j.items()) {
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(key, &used);
    } catch (const std::exception&) {
    }
    NW_CHECK(used == key.size() && !key.empty() && std::isdigit(static_cast<unsigned char>(key[0])) &&
                 id <= INT32_MAX,
             "sampling_params.logit_bias: key \"", key, "\" is not a token id");
    out.emplace_back(static_cast<int32_t>(id), field<float>(value, "logit_bias"));
  }
  return out;
}

}  // namespace

SamplingParams SamplingParams::from_json(const json& j) {
  NW_CHECK(j.is_object(), "sampling_params must be an object, got ", j.dump());
  SamplingParams p;
  for (const auto& [key, value] : j.items()) {
    const char* k = key.c_str();
    if (key == "max_new_tokens") p.max_new_tokens = field<int64_t>(value, k);
    else if (key == "min_new_tokens") p.min_new_tokens = field<int64_t>(value, k);
    else if (key == "temperature") p.temperature = field<double>(value, k);
    else if (key == "top_k") p.top_k = field<int64_t>(value, k);
    else if (key == "top_p") p.top_p = field<double>(value, k);
    else if (key == "min_p") p.min_p = field<double>(value, k);
    else if (key == "frequency_penalty") p.frequency_penalty = field<double>(value, k);
    else if (key == "presence_penalty") p.presence_penalty = field<double>(value, k);
    else if (key == "repetition_penalty") p.repetition_penalty = field<double>(value, k);
    else if (key == "sampling_seed") p.seed = field<uint64_t>(value, k);
    else if (key == "n") p.n = field<int>(value, k);
    else if (key == "ignore_eos") p.ignore_eos = field<bool>(value, k);
    else if (key == "no_stop_trim") p.no_stop_trim = field<bool>(value, k);
    else if (key == "logit_bias") p.logit_bias = logit_bias_field(value);
    else if (key == "stop_token_ids") p.stop_token_ids = field<std::vector<int32_t>>(value, k);
    else if (key == "stop") p.stop = value.is_string() ? std::vector<std::string>{value.get<std::string>()}
                                                       : field<std::vector<std::string>>(value, k);
    else throw Error(cat("sampling_params: unknown parameter \"", key, "\""));
  }
  p.validate();
  return p;
}

}  // namespace narwhal
