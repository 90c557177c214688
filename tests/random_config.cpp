// Random valid DeepSeek configs: each field drawn in the range the issue names, constrained to stay consistent.
#include "random_config.h"

#include <random>
#include <vector>

#include "core/error.h"

namespace narwhal::testing {

namespace {

class Draw {
 public:
  explicit Draw(uint64_t seed) : rng_(seed * 0x9E3779B97F4A7C15ull + 12345) {}
  int64_t range(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }
  // A multiple of `step` in [lo, hi] (lo and hi multiples of step).
  int64_t step(int64_t lo, int64_t hi, int64_t step) { return range(lo / step, hi / step) * step; }
  bool chance(double p) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < p; }
  template <typename T>
  T pick(const std::vector<T>& options) {
    return options[static_cast<size_t>(range(0, static_cast<int64_t>(options.size()) - 1))];
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace

RandomModel random_model(uint64_t seed) {
  Draw d(seed);
  RandomModel m;
  const bool deepseek_dims = d.chance(0.25);
  const bool v3 = d.chance(0.5);
  m.fp8 = d.chance(0.3);
  json& c = m.config;
  c["architectures"] = {v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"};
  c["model_type"] = v3 ? "deepseek_v3" : "deepseek_v2";
  c["vocab_size"] = d.range(128, 1024);
  const int64_t hidden = deepseek_dims ? d.step(128, 1024, 128) : d.step(64, 1024, 8);
  c["hidden_size"] = hidden;
  c["num_hidden_layers"] = d.range(2, 4);
  c["num_attention_heads"] = d.range(1, deepseek_dims ? 16 : 32);
  c["num_key_value_heads"] = c["num_attention_heads"];
  if (deepseek_dims) {
    c["kv_lora_rank"] = 512;
    c["qk_rope_head_dim"] = 64;
    c["qk_nope_head_dim"] = 128;
    c["v_head_dim"] = 128;
    c["q_lora_rank"] = d.chance(0.5) ? json(nullptr) : json(d.step(128, 512, 128));
  } else {
    c["kv_lora_rank"] = d.pick<int64_t>({32, 64, 96, 128, 512});
    c["qk_rope_head_dim"] = d.pick<int64_t>({16, 32, 64});
    c["qk_nope_head_dim"] = d.step(16, 128, 8);
    c["v_head_dim"] = d.step(16, 128, 8);
    c["q_lora_rank"] = d.chance(0.4) ? json(nullptr) : json(d.step(32, 512, 8));
  }
  c["intermediate_size"] = deepseek_dims ? d.step(128, 512, 128) : d.step(64, 512, 8);
  // Experts as groups x members, so that grouped routing meets 3 and 6 groups and not only a lone group.
  const std::string method = v3 ? "noaux_tc" : d.chance(0.5) ? "greedy" : "group_limited_greedy";
  int64_t n_group = method == "greedy" ? 1 : d.pick<int64_t>({1, 2, 3, 4, 6, 8});
  const int64_t per_group = d.range(method == "noaux_tc" ? 2 : 1, std::max<int64_t>(2, 64 / n_group));
  const int64_t experts = std::max<int64_t>(4, n_group * per_group);
  if (experts % n_group != 0) n_group = 1;  // a lone group padded up to 4 experts
  c["n_routed_experts"] = experts;
  // Expert weights stay under ~12M parameters per layer: a CPU forward of the script takes well under a second.
  const int64_t max_inter = std::max<int64_t>(32, 12'000'000 / (3 * experts * hidden) / 16 * 16);
  c["moe_intermediate_size"] = deepseek_dims ? int64_t{128} : d.step(32, std::min<int64_t>(256, max_inter), 16);
  c["n_shared_experts"] = d.range(0, 2);
  c["first_k_dense_replace"] = d.range(0, 2);
  c["moe_layer_freq"] = 1;
  // Gating: V3 routes noaux_tc with sigmoid scores; V2 greedy or group-limited greedy with softmax.
  const int64_t topk_group = method == "greedy" ? 1 : d.range(1, n_group);
  const int64_t reachable = method == "greedy" ? experts : topk_group * (experts / n_group);
  c["n_group"] = n_group;
  c["topk_group"] = topk_group;
  c["num_experts_per_tok"] = d.range(1, std::min<int64_t>(8, reachable));
  c["topk_method"] = method;
  c["scoring_func"] = v3 ? "sigmoid" : "softmax";
  c["norm_topk_prob"] = d.chance(0.5);
  c["routed_scaling_factor"] = d.pick<double>({1.0, 2.5, 16.0});
  if (v3) c["rope_interleave"] = d.chance(0.7);
  c["rms_norm_eps"] = d.pick<double>({1e-6, 1e-5});
  c["max_position_embeddings"] = 4096;
  c["rope_theta"] = d.pick<double>({10000.0, 50000.0});
  if (d.chance(0.6)) {
    json yarn = {{"type", "yarn"}, {"factor", d.pick<double>({2.0, 4.0, 8.0, 40.0})},
                 {"original_max_position_embeddings", d.pick<int64_t>({32, 64, 128})}, {"beta_fast", 32},
                 {"beta_slow", 1}};
    if (d.chance(0.7)) yarn["mscale"] = d.pick<double>({0.707, 1.0});
    if (d.chance(0.7)) yarn["mscale_all_dim"] = d.pick<double>({0.0, 0.707, 1.0});
    c["rope_scaling"] = yarn;
  }
  c["num_nextn_predict_layers"] = 0;
  c["bos_token_id"] = 0;
  c["eos_token_id"] = 1;
  c["tie_word_embeddings"] = false;
  if (m.fp8)
    c["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                                {"weight_block_size", {128, 128}}};
  m.summary = cat("seed ", seed, ": ", v3 ? "v3" : "v2", m.fp8 ? " fp8" : " bf16", " hidden ", hidden, " layers ",
                  c["num_hidden_layers"].get<int>(), " heads ", c["num_attention_heads"].get<int>(), " q_lora ",
                  c["q_lora_rank"].dump(), " kv_lora ", c["kv_lora_rank"].get<int>(), " nope ",
                  c["qk_nope_head_dim"].get<int>(), " rope ", c["qk_rope_head_dim"].get<int>(), " v ",
                  c["v_head_dim"].get<int>(), " experts ", experts, " (", method, ", ", n_group, " groups, top ",
                  topk_group, " groups, top-", c["num_experts_per_tok"].get<int>(), ", ",
                  c["n_shared_experts"].get<int>(), " shared, ", c["first_k_dense_replace"].get<int>(), " dense)",
                  c.contains("rope_scaling") ? cat(" yarn ", c["rope_scaling"].dump()) : std::string(" no yarn"));
  return m;
}

}  // namespace narwhal::testing
