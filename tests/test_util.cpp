// Shared test helpers.
#include "test_util.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>

#include "model/checkpoint_layout.h"
#include "model/model_config.h"
#include "model/random_weights.h"

namespace narwhal::testing {

std::string source_dir() {
  const char* env = std::getenv("NARWHAL_SOURCE_DIR");
  return env && *env ? env : NARWHAL_SOURCE_DIR;
}

std::string narwhal_bin() {
  const char* env = std::getenv("NARWHAL_BIN");
  return env && *env ? env : NARWHAL_BIN;
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "narwhal-test-XXXXXX").string();
  char* made = ::mkdtemp(pattern.data());
  if (!made) throw std::runtime_error("mkdtemp failed");
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

ErrorStats compare(const float* actual, const float* expected, int64_t n) {
  ErrorStats s;
  double ref_max = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    s.max_abs = std::max(s.max_abs, std::fabs(static_cast<double>(actual[i]) - expected[i]));
    ref_max = std::max(ref_max, std::fabs(static_cast<double>(expected[i])));
    if (std::isnan(actual[i]) != std::isnan(expected[i])) s.max_abs = INFINITY;
  }
  s.rel = ref_max > 0 ? s.max_abs / ref_max : s.max_abs;
  return s;
}

double l2_rel_error(const float* actual, const float* expected, int64_t n) {
  double diff = 0.0, norm = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(actual[i])) return INFINITY;
    const double d = static_cast<double>(actual[i]) - expected[i];
    diff += d * d;
    norm += static_cast<double>(expected[i]) * expected[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

json small_v3_config() {
  return json::parse(R"({
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 97, "hidden_size": 160, "intermediate_size": 200, "moe_intermediate_size": 72,
    "num_hidden_layers": 3, "num_attention_heads": 3, "q_lora_rank": 48, "kv_lora_rank": 40,
    "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 12,
    "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 3, "n_group": 4, "topk_group": 2,
    "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true, "routed_scaling_factor": 2.5,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_nextn_predict_layers": 1,
    "rms_norm_eps": 1e-6, "max_position_embeddings": 512, "rope_theta": 10000,
    "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 64, "beta_fast": 32,
                     "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.707},
    "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false
  })");
}

void write_random_checkpoint(const std::string& dir, const json& config, uint64_t seed, bool fp8) {
  ModelConfig parsed = ModelConfig::from_json(config, "test config");
  write_checkpoint(dir, config.dump(2), random_checkpoint_tensors(parsed, seed, fp8), 2);
}

int64_t routed_choices(const ModelConfig& config, int64_t tokens) {
  int64_t moe_layers = 0;
  for (int layer = 0; layer < config.num_hidden_layers; ++layer) moe_layers += config.is_moe_layer(layer);
  return tokens * moe_layers * config.num_experts_per_tok;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

std::string run_command(const std::string& command, int status) {
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << command;
  if (!pipe) return "";
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  EXPECT_EQ(WEXITSTATUS(pclose(pipe)), status) << command << "\n" << out;
  return out;
}

void expect_distribution(const std::vector<int64_t>& c, std::vector<double> expected, const std::string& what) {
  const double total_p = std::accumulate(expected.begin(), expected.end(), 0.0);
  const double n = static_cast<double>(std::accumulate(c.begin(), c.end(), int64_t{0}));
  double chi2 = 0.0;
  int df = -1;
  for (size_t i = 0; i < c.size(); ++i) {
    if (expected[i] == 0.0) {
      EXPECT_EQ(c[i], 0) << what << ": token " << i << " is outside the allowed set";
      continue;
    }
    const double e = n * expected[i] / total_p;
    chi2 += (static_cast<double>(c[i]) - e) * (static_cast<double>(c[i]) - e) / e;
    ++df;
  }
  EXPECT_LT(chi2, 40.0) << what << ": chi-square " << chi2 << " with " << df << " degrees of freedom";
}

}  // namespace narwhal::testing
