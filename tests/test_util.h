// Shared test helpers: fixture paths, temporary directories, error metrics and small model configs.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/json.h"
#include "core/tensor.h"
#include "model/model_config.h"

namespace narwhal::testing {

// The repository root: $NARWHAL_SOURCE_DIR when set (binaries copied to the GPU machine), else the build's.
std::string source_dir();
inline std::string source_path(const std::string& relative) { return source_dir() + "/" + relative; }
// The narwhal binary: $NARWHAL_BIN when set, else the one this build made.
std::string narwhal_bin();
inline std::string fixture_dir(const std::string& name) { return source_path("tests/fixtures/" + name); }

// A fresh directory under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct ErrorStats {
  double max_abs = 0.0;
  double rel = 0.0;  // max |a - b| / max |b|
};
ErrorStats compare(const float* actual, const float* expected, int64_t n);
// ||actual - expected||_2 / ||expected||_2 (infinite if `actual` holds a NaN or an infinity): the per-row logits
// error the GPU forward is held to.
double l2_rel_error(const float* actual, const float* expected, int64_t n);

// A small DeepSeek-V3-style config (official layout) for tests that build their own checkpoints:
// q_lora, YaRN, noaux_tc, one MTP layer; dims that leave partial FP8 blocks.
json small_v3_config();

// Writes config.json and random weights (two shards + index) for `config` into `dir`.
void write_random_checkpoint(const std::string& dir, const json& config, uint64_t seed = 1, bool fp8 = false);

// Runs a shell command and returns its stdout, expecting exit status `status` (a test failure naming the command
// otherwise).
std::string run_command(const std::string& command, int status);

// The integer in environment variable `name`, or `fallback` when it is unset or empty (test sizes a run may raise).
int env_int(const char* name, int fallback);

// Chi-square of token counts against `expected` probabilities (any scale), at most 7 nonzero ones; tokens of
// probability 0 must never appear. The 99.9999th percentile of chi-square with <= 7 degrees of freedom is below 40;
// a wrong support or normalisation at tens of thousands of draws gives hundreds or more.
void expect_distribution(const std::vector<int64_t>& counts, std::vector<double> expected, const std::string& what);

// What the expert counts of `tokens` forwarded tokens sum to (ModelRunner::expert_tokens): top_k choices per token
// in every MoE layer.
int64_t routed_choices(const ModelConfig& config, int64_t tokens);

}  // namespace narwhal::testing
