// What the serving benchmarks ask the server before and after a run: its model, tokenizer, info and cache.
#pragma once

#include <optional>
#include <string>

#include "cli/bench_serving_http.h"
#include "core/json.h"

namespace narwhal {

// --api-key if given, else $OPENAI_API_KEY (SGLang's), else none.
std::string api_key_or_env(const std::string& flag);

// The first model id of GET /v1/models. Throws Error saying the server cannot be reached or what it answered.
std::string served_model_id(const BenchHttpClient& client);

// A directory holding tokenizer.json: `flag` when given, else the tokenizer_path /get_model_info reports if it
// is readable here, else `model` when that is such a directory. Throws Error asking for --tokenizer otherwise.
std::string find_tokenizer_dir(const BenchHttpClient& client, const std::string& flag, const std::string& model);

// The served model's vocabulary size from /get_model_info (narwhal reports it), or 0 when the server does not say:
// random token ids must stay below it as well as below the tokenizer's.
int64_t served_vocab_size(const BenchHttpClient& client);

// GET /get_server_info, or null when the server has none.
nlohmann::ordered_json fetch_server_info(const BenchHttpClient& client);

// SGLang's speculative-decoding accept length from server info, when it reports one.
std::optional<double> accept_length(const nlohmann::ordered_json& server_info);

// POST /flush_cache; true when the server flushed (a warning is printed otherwise).
bool flush_cache(const BenchHttpClient& client);

}  // namespace narwhal
