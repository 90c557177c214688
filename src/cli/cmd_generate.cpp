// `narwhal generate`: runs the model on token ids (prefill, then one decode step per token) and prints JSON.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>

#include "cli/commands.h"
#include "cli/server_args.h"
#include "core/error.h"
#include "core/logging.h"
#include "model/deepseek_model.h"
#include "ops/sampling.h"

namespace narwhal {

namespace {

struct GenerateRequest {
  std::string input_ids;
  int max_new_tokens = 16;
  double temperature = 1.0;
  bool ignore_eos = false;
  bool json = false;
  bool return_logits = false;
};

void append_float_row(std::string& out, const float* row, int64_t n) {
  char buf[32];
  out += '[';
  for (int64_t i = 0; i < n; ++i) {
    // %.9g round-trips every float32 exactly.
    int len = std::snprintf(buf, sizeof buf, "%s%.9g", i ? "," : "", static_cast<double>(row[i]));
    out.append(buf, static_cast<size_t>(len));
  }
  out += ']';
}

}  // namespace

int run_generate(int argc, char** argv) {
  ServerArgs args;
  GenerateRequest req;
  ArgParser parser("generate", "Generates tokens for one prompt given as token ids and prints them.");
  args.register_flags(parser);
  parser.add("input-ids", &req.input_ids, "prompt token ids, comma-separated, e.g. 5,17,42");
  parser.add("max-new-tokens", &req.max_new_tokens, "tokens to generate at most");
  parser.add("temperature", &req.temperature, "sampling temperature; 0 = greedy");
  parser.add_switch("ignore-eos", &req.ignore_eos, "keep generating after an end-of-sequence token");
  parser.add_switch("json", &req.json, "print one JSON object {\"output_ids\": [...]}");
  parser.add_switch("return-logits", &req.return_logits,
                    "with --json, add \"logits\": per generated token the full-vocabulary logits it was chosen from");
  if (!parser.parse(argc, argv, 2)) return 0;
  args.validate();
  NW_CHECK(!req.input_ids.empty(), "--input-ids is required");
  NW_CHECK(req.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got ", req.max_new_tokens);
  NW_CHECK(!req.return_logits || req.json, "--return-logits needs --json");
  NW_CHECK(req.temperature >= 0.0, "--temperature must be >= 0, got ", req.temperature);
  std::vector<int> prompt = parse_id_list(req.input_ids, "input-ids");

  DeepSeekModel model = DeepSeekModel::load(args.model_path);
  const ModelConfig& config = model.config();
  const int64_t context = config.max_position_embeddings;
  NW_CHECK(static_cast<int64_t>(prompt.size()) < context, "the prompt has ", prompt.size(),
           " tokens; the context length is ", context);
  const int64_t total = std::min<int64_t>(context, static_cast<int64_t>(prompt.size()) + req.max_new_tokens);
  const int64_t pages = (total + args.page_size - 1) / args.page_size;
  KvCache cache(config, config.num_hidden_layers, pages, args.page_size);
  std::vector<int32_t> page_table(pages);
  for (int64_t p = 0; p < pages; ++p) page_table[p] = static_cast<int32_t>(p);

  std::mt19937_64 rng(static_cast<uint64_t>(args.random_seed));
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<int32_t> output;
  std::string logits_json;
  std::vector<int32_t> step_tokens(prompt.begin(), prompt.end());
  int64_t prefix = 0;
  while (prefix + static_cast<int64_t>(step_tokens.size()) <= total && static_cast<int64_t>(output.size()) < req.max_new_tokens) {
    ForwardBatch batch;
    batch.add_sequence(step_tokens, prefix, page_table);
    ForwardOutput out = model.forward(batch, cache);
    const float* logits = out.logits.f32();
    const int32_t next = req.temperature == 0.0
                             ? ops::argmax(logits, config.vocab_size)
                             : ops::sample_with_temperature(logits, config.vocab_size,
                                                            static_cast<float>(req.temperature), uniform(rng));
    if (req.return_logits) {
      logits_json += logits_json.empty() ? "" : ",";
      append_float_row(logits_json, logits, config.vocab_size);
    }
    output.push_back(next);
    prefix += static_cast<int64_t>(step_tokens.size());
    step_tokens = {next};
    bool eos = std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), next) != config.eos_token_ids.end();
    if (eos && !req.ignore_eos) break;
  }

  std::string ids;
  for (size_t i = 0; i < output.size(); ++i) ids += (i ? "," : "") + std::to_string(output[i]);
  if (req.json) {
    std::string text = "{\"output_ids\":[" + ids + "]";
    if (req.return_logits) text += ",\"logits\":[" + logits_json + "]";
    text += "}\n";
    std::fwrite(text.data(), 1, text.size(), stdout);
  } else {
    std::printf("output_ids: %s\n", ids.c_str());
  }
  return 0;
}

}  // namespace narwhal
