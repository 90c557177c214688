// Setup and info calls of the serving benchmarks, with errors that say what the server answered.
#include "cli/bench_serving_server.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"

namespace narwhal {

namespace {

bool has_tokenizer(const std::string& dir) {
  std::error_code ec;
  return !dir.empty() && std::filesystem::is_regular_file(std::filesystem::path(dir) / "tokenizer.json", ec);
}

}  // namespace

std::string api_key_or_env(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("OPENAI_API_KEY");
  return env != nullptr ? env : "";
}

std::string served_model_id(const BenchHttpClient& client) {
  const HttpResult r = client.request("GET", "/v1/models");
  NW_CHECK(r.status != 0, "cannot reach the server at ", client.url().text(), ": ", r.error,
           " (is it running? see --base-url, --host, --port)");
  NW_CHECK(r.ok(), "GET ", client.url().text(), "/v1/models: ", r.describe(), " (or give --model)");
  const json models = json::parse(r.body, nullptr, false);
  NW_CHECK(models.is_object() && models.contains("data") && models["data"].is_array() && !models["data"].empty() &&
               models["data"][0].value("id", "") != "",
           "GET /v1/models lists no model; give --model");
  return models["data"][0]["id"].get<std::string>();
}

std::string find_tokenizer_dir(const BenchHttpClient& client, const std::string& flag, const std::string& model) {
  if (!flag.empty()) {
    NW_CHECK(has_tokenizer(flag), "--tokenizer ", flag, ": no tokenizer.json there");
    return flag;
  }
  std::string reported;
  const HttpResult r = client.request("GET", "/get_model_info");
  if (r.ok()) {
    const json info = json::parse(r.body, nullptr, false);
    if (info.is_object()) reported = info.value("tokenizer_path", info.value("model_path", ""));
  }
  if (has_tokenizer(reported)) return reported;
  if (has_tokenizer(model)) return model;
  throw Error(cat("--tokenizer DIR (a directory with tokenizer.json) is required: ",
                  reported.empty() ? "the server reports no tokenizer path"
                                   : "the server's tokenizer path " + reported + " is not readable here"));
}

int64_t served_vocab_size(const BenchHttpClient& client) {
  const HttpResult r = client.request("GET", "/get_model_info");
  if (!r.ok()) return 0;
  const json info = json::parse(r.body, nullptr, false);
  if (!info.is_object() || !info.contains("vocab_size") || !info["vocab_size"].is_number_integer()) return 0;
  return info["vocab_size"].get<int64_t>();
}

nlohmann::ordered_json fetch_server_info(const BenchHttpClient& client) {
  const HttpResult r = client.request("GET", "/get_server_info");
  if (!r.ok()) return nullptr;
  nlohmann::ordered_json info = nlohmann::ordered_json::parse(r.body, nullptr, false);
  return info.is_discarded() ? nlohmann::ordered_json(nullptr) : info;
}

std::optional<double> accept_length(const nlohmann::ordered_json& server_info) {
  if (!server_info.is_object()) return std::nullopt;
  const auto& info = server_info.contains("decode") && server_info["decode"].is_array() && !server_info["decode"].empty()
                         ? server_info["decode"][0]
                         : server_info;
  if (!info.is_object() || !info.contains("internal_states") || !info["internal_states"].is_array() ||
      info["internal_states"].empty() || !info["internal_states"][0].is_object())
    return std::nullopt;
  const auto& state = info["internal_states"][0];
  if (!state.contains("avg_spec_accept_length") || !state["avg_spec_accept_length"].is_number()) return std::nullopt;
  return state["avg_spec_accept_length"].get<double>();
}

bool flush_cache(const BenchHttpClient& client) {
  const HttpResult r = client.request("POST", "/flush_cache");
  if (!r.ok()) std::fprintf(stderr, "warning: POST /flush_cache: %s\n", r.describe().c_str());
  return r.ok();
}

}  // namespace narwhal
