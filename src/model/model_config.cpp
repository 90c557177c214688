// ModelConfig parsing: both config.json layouts, defaults per model_type as transformers has them, and
// errors that name the file and the field.
#include "model/model_config.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace narwhal {

namespace {

// Typed access to config fields; every failure names the file and the field.
class FieldReader {
 public:
  FieldReader(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  int64_t integer(const char* key) const {
    NW_CHECK(has(key), source_, ": missing required field '", key, "'");
    return as_integer(j_[key], key);
  }
  int64_t integer_or(const char* key, int64_t fallback) const {
    return has(key) ? as_integer(j_[key], key) : fallback;
  }
  std::optional<int64_t> optional_integer(const char* key) const {
    if (!has(key)) return std::nullopt;
    return as_integer(j_[key], key);
  }
  // Counts and indices stored as int: range-checked as 64-bit values first, so 2^32 + 4 is no 4.
  int int32(const char* key) const { return narrow(key, integer(key)); }
  int int32_or(const char* key, int fallback) const { return has(key) ? narrow(key, integer(key)) : fallback; }
  double number_or(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    NW_CHECK(j_[key].is_number(), source_, ": field '", key, "' must be a number, got ", j_[key].dump());
    const double value = j_[key].get<double>();
    NW_CHECK(std::isfinite(value), source_, ": field '", key, "' must be finite, got ", value);
    return value;
  }
  bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    NW_CHECK(j_[key].is_boolean(), source_, ": field '", key, "' must be true or false, got ", j_[key].dump());
    return j_[key].get<bool>();
  }
  std::optional<std::string> optional_string(const char* key) const {
    if (!has(key)) return std::nullopt;
    NW_CHECK(j_[key].is_string(), source_, ": field '", key, "' must be a string, got ", j_[key].dump());
    return j_[key].get<std::string>();
  }
  const json& raw(const char* key) const { return j_[key]; }
  const std::string& source() const { return source_; }

 private:
  int64_t as_integer(const json& v, const char* key) const {
    NW_CHECK(v.is_number_integer(), source_, ": field '", key, "' must be an integer, got ", v.dump());
    NW_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX), source_, ": field '",
             key, "' is out of range, got ", v.dump());
    return v.get<int64_t>();
  }
  int narrow(const char* key, int64_t value) const {
    NW_CHECK(value >= INT32_MIN && value <= INT32_MAX, source_, ": field '", key, "' is out of range, got ", value);
    return static_cast<int>(value);
  }
  const json& j_;
  std::string source_;
};

// Sizes and counts: positive, and small enough that products of two of them (a weight's element count) fit int64.
void check_size(const FieldReader& f, const char* key, int64_t value) {
  NW_CHECK(value > 0, f.source(), ": field '", key, "' must be positive, got ", value);
  NW_CHECK(value <= INT32_MAX, f.source(), ": field '", key, "' is implausibly large, got ", value);
}

void check_positive(const FieldReader& f, const char* key, double value) {
  NW_CHECK(value > 0.0, f.source(), ": field '", key, "' must be positive, got ", value);
}

void check_at_least(const FieldReader& f, const char* key, int64_t value, int64_t min) {
  NW_CHECK(value >= min, f.source(), ": field '", key, "' must be >= ", min, ", got ", value);
}

ModelType parse_model_type(const FieldReader& f, const json& j) {
  std::optional<std::string> type = f.optional_string("model_type");
  if (!type && f.has("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    std::string arch = j["architectures"][0].get<std::string>();
    if (arch == "DeepseekV2ForCausalLM") type = "deepseek_v2";
    if (arch == "DeepseekV3ForCausalLM") type = "deepseek_v3";
  }
  NW_CHECK(type.has_value(), f.source(), ": missing field 'model_type' (and no known 'architectures')");
  if (*type == "deepseek_v2") return ModelType::kDeepseekV2;
  if (*type == "deepseek_v3") return ModelType::kDeepseekV3;
  throw Error(cat(f.source(), ": field 'model_type' is '", *type,
                  "'; narwhal serves deepseek_v2 and deepseek_v3 architectures"));
}

RopeConfig parse_rope(const FieldReader& f, const json& j, ModelType type, int64_t max_positions) {
  RopeConfig rope;
  // transformers v5 folds rope_theta into rope_parameters; the official layout keeps it top-level.
  const char* key = f.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  rope.theta = f.number_or("rope_theta", 10000.0);
  if (f.has(key)) {
    const json& params = j[key];
    NW_CHECK(params.is_object(), f.source(), ": field '", key, "' must be an object");
    FieldReader p(params, cat(f.source(), " (", key, ")"));
    rope.theta = p.number_or("rope_theta", rope.theta);
    std::string rope_type = p.optional_string("rope_type").value_or(p.optional_string("type").value_or("default"));
    if (rope_type == "yarn") {
      rope.yarn = true;
      NW_CHECK(p.has("factor"), f.source(), ": field '", key, ".factor' is required for yarn");
      rope.factor = p.number_or("factor", 1.0);
      rope.original_max_position_embeddings =
          p.integer_or("original_max_position_embeddings", max_positions);
      // transformers: `beta_fast or 32`, `beta_slow or 1` (a zero means the default).
      rope.beta_fast = p.number_or("beta_fast", 0.0);
      if (rope.beta_fast == 0.0) rope.beta_fast = 32.0;
      rope.beta_slow = p.number_or("beta_slow", 0.0);
      if (rope.beta_slow == 0.0) rope.beta_slow = 1.0;
      if (p.has("mscale")) rope.mscale = p.number_or("mscale", 0.0);
      if (p.has("mscale_all_dim")) rope.mscale_all_dim = p.number_or("mscale_all_dim", 0.0);
      if (p.has("attention_factor")) rope.attention_factor = p.number_or("attention_factor", 1.0);
      rope.truncate = p.boolean_or("truncate", true);
      // transformers wants factor >= 1; anything positive computes, zero or less gives NaN or nonsense.
      check_positive(p, "factor", rope.factor);
      check_size(p, "original_max_position_embeddings", rope.original_max_position_embeddings);
      check_positive(p, "beta_fast", rope.beta_fast);
      check_positive(p, "beta_slow", rope.beta_slow);
      NW_CHECK(rope.beta_fast >= rope.beta_slow, p.source(), ": field 'beta_fast' (", rope.beta_fast,
               ") must be >= beta_slow (", rope.beta_slow, "): the ramp runs from the fast rotations to the slow");
      // mscale(s, m) = 0.1 m ln(s) + 1 must stay >= 1: rope_attention_scaling divides by it.
      if (rope.mscale) NW_CHECK(*rope.mscale >= 0.0, p.source(), ": field 'mscale' must be >= 0, got ", *rope.mscale);
      if (rope.mscale_all_dim)
        NW_CHECK(*rope.mscale_all_dim >= 0.0, p.source(), ": field 'mscale_all_dim' must be >= 0, got ",
                 *rope.mscale_all_dim);
      if (rope.attention_factor) check_positive(p, "attention_factor", *rope.attention_factor);
    } else {
      NW_CHECK(rope_type == "default", f.source(), ": field '", key, ".type' is '", rope_type,
               "'; DeepSeek models use 'yarn' or 'default'");
    }
  }
  // The frequencies are theta^(-2i/d): they must fall with i, and YaRN divides by ln(theta).
  NW_CHECK(rope.theta > 1.0, f.source(), ": field 'rope_theta' must be > 1, got ", rope.theta);
  // V2 rotates interleaved pairs (complex multiply); V3 has the rope_interleave switch, default on.
  rope.interleave = type == ModelType::kDeepseekV2 ? true : f.boolean_or("rope_interleave", true);
  return rope;
}

std::optional<Fp8Config> parse_quantization(const FieldReader& f, const json& j) {
  if (!f.has("quantization_config")) return std::nullopt;
  const json& q = j["quantization_config"];
  NW_CHECK(q.is_object(), f.source(), ": field 'quantization_config' must be an object");
  FieldReader r(q, cat(f.source(), " (quantization_config)"));
  std::string method = r.optional_string("quant_method").value_or("");
  NW_CHECK(method == "fp8", f.source(), ": field 'quantization_config.quant_method' is '", method,
           "'; only block-wise fp8 (as DeepSeek-V3 ships) is supported");
  std::string fmt = r.optional_string("fmt").value_or("e4m3");
  NW_CHECK(fmt == "e4m3", f.source(), ": field 'quantization_config.fmt' is '", fmt, "'; only e4m3 is supported");
  std::string scheme = r.optional_string("activation_scheme").value_or("dynamic");
  NW_CHECK(scheme == "dynamic", f.source(), ": field 'quantization_config.activation_scheme' is '", scheme,
           "'; only dynamic is supported");
  Fp8Config fp8;
  if (r.has("weight_block_size")) {
    const json& b = q["weight_block_size"];
    const auto block = [](const json& v) {
      return v.is_number_integer() && v.get<int64_t>() > 0 && v.get<int64_t>() <= 65536;
    };
    NW_CHECK(b.is_array() && b.size() == 2 && block(b[0]) && block(b[1]), f.source(),
             ": field 'quantization_config.weight_block_size' must be two integers in [1, 65536], got ", b.dump());
    fp8.block_n = static_cast<int>(b[0].get<int64_t>());
    fp8.block_k = static_cast<int>(b[1].get<int64_t>());
  }
  return fp8;
}

// Token ids in [0, vocab_size), checked as 64-bit values before they become ints.
int token_id(const FieldReader& f, const char* key, const json& v, int64_t vocab_size) {
  NW_CHECK(v.is_number_integer(), f.source(), ": field '", key, "' must hold integers, got ", v.dump());
  const bool inside = v.is_number_unsigned() ? v.get<uint64_t>() < static_cast<uint64_t>(vocab_size)
                                             : v.get<int64_t>() >= 0 && v.get<int64_t>() < vocab_size;
  NW_CHECK(inside, f.source(),
           ": field '", key, "' holds ", v.dump(), ", outside the vocabulary (vocab_size ", vocab_size, ")");
  return static_cast<int>(v.get<int64_t>());
}

std::vector<int> parse_eos(const FieldReader& f, const json& j, int64_t vocab_size) {
  if (!f.has("eos_token_id")) return {};
  const json& e = j["eos_token_id"];
  NW_CHECK(e.is_number_integer() || e.is_array(), f.source(),
           ": field 'eos_token_id' must be an integer or a list of integers, got ", e.dump());
  std::vector<int> ids;
  for (const json& v : e.is_array() ? e : json::array({e})) ids.push_back(token_id(f, "eos_token_id", v, vocab_size));
  return ids;
}

void parse_moe(const FieldReader& f, ModelConfig& c) {
  const bool v3 = c.model_type == ModelType::kDeepseekV3;
  c.n_routed_experts = f.int32_or("n_routed_experts", 0);
  check_at_least(f, "n_routed_experts", c.n_routed_experts, 0);
  if (c.n_routed_experts == 0) return;
  c.moe_intermediate_size = f.integer("moe_intermediate_size");
  c.num_experts_per_tok = f.int32("num_experts_per_tok");
  c.n_shared_experts = f.int32_or("n_shared_experts", 0);
  c.moe_layer_freq = f.int32_or("moe_layer_freq", 1);
  c.n_group = f.int32_or("n_group", 1);
  c.topk_group = f.int32_or("topk_group", 1);
  c.norm_topk_prob = f.boolean_or("norm_topk_prob", v3);
  c.routed_scaling_factor = f.number_or("routed_scaling_factor", v3 ? 2.5 : 1.0);
  check_positive(f, "routed_scaling_factor", c.routed_scaling_factor);
  // transformers v5 configs drop these two; the model type implies them (V2: softmax, V3: sigmoid + noaux_tc).
  std::string scoring = f.optional_string("scoring_func").value_or(v3 ? "sigmoid" : "softmax");
  if (scoring == "softmax") c.scoring_func = ScoringFunc::kSoftmax;
  else if (scoring == "sigmoid") c.scoring_func = ScoringFunc::kSigmoid;
  else throw Error(cat(f.source(), ": field 'scoring_func' is '", scoring, "' (expected softmax or sigmoid)"));
  std::string method = f.optional_string("topk_method").value_or(v3 ? "noaux_tc" : "greedy");
  if (method == "greedy") c.topk_method = TopkMethod::kGreedy;
  else if (method == "group_limited_greedy") c.topk_method = TopkMethod::kGroupLimitedGreedy;
  else if (method == "noaux_tc") c.topk_method = TopkMethod::kNoauxTc;
  else
    throw Error(cat(f.source(), ": field 'topk_method' is '", method,
                    "' (expected greedy, group_limited_greedy or noaux_tc)"));

  check_size(f, "moe_intermediate_size", c.moe_intermediate_size);
  check_size(f, "moe_layer_freq", c.moe_layer_freq);
  check_size(f, "n_group", c.n_group);
  check_size(f, "topk_group", c.topk_group);
  NW_CHECK(c.num_experts_per_tok > 0 && c.num_experts_per_tok <= c.n_routed_experts, f.source(),
           ": field 'num_experts_per_tok' must be in [1, n_routed_experts = ", c.n_routed_experts, "], got ",
           c.num_experts_per_tok);
  check_at_least(f, "n_shared_experts", c.n_shared_experts, 0);
  NW_CHECK(c.n_routed_experts % c.n_group == 0, f.source(), ": field 'n_group' (", c.n_group,
           ") must divide n_routed_experts (", c.n_routed_experts, ")");
  NW_CHECK(c.topk_group <= c.n_group, f.source(), ": field 'topk_group' (", c.topk_group, ") exceeds n_group (",
           c.n_group, ")");
  if (c.topk_method != TopkMethod::kGreedy)
    NW_CHECK(int64_t{c.topk_group} * (c.n_routed_experts / c.n_group) >= c.num_experts_per_tok, f.source(),
             ": field 'num_experts_per_tok' (", c.num_experts_per_tok, ") exceeds topk_group x experts per group (",
             c.topk_group, " x ", c.n_routed_experts / c.n_group, ")");
  if (c.topk_method == TopkMethod::kNoauxTc)
    NW_CHECK(c.n_routed_experts / c.n_group >= 2, f.source(),
             ": noaux_tc scores groups by their top-2 experts, so each group needs >= 2 experts");
  // transformers' DeepSeek-V3 router always scores with sigmoid and groups noaux-style.
  NW_CHECK(!v3 || (c.topk_method == TopkMethod::kNoauxTc && c.scoring_func == ScoringFunc::kSigmoid), f.source(),
           ": deepseek_v3 models route with scoring_func 'sigmoid' and topk_method 'noaux_tc'");
  NW_CHECK(v3 || c.topk_method != TopkMethod::kNoauxTc, f.source(),
           ": topk_method 'noaux_tc' needs model_type deepseek_v3 (it uses e_score_correction_bias)");
}

}  // namespace

bool ModelConfig::renormalize_topk() const {
  // transformers' DeepseekV2 router never renormalises (it ignores norm_topk_prob); V3 follows the flag.
  return model_type == ModelType::kDeepseekV3 && norm_topk_prob;
}

namespace {
double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }
}  // namespace

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope.yarn && rope.mscale_all_dim.value_or(0.0) != 0.0) {
    double m = yarn_mscale(rope.factor, *rope.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

float ModelConfig::rope_attention_scaling() const {
  if (!rope.yarn) return 1.0f;
  if (rope.attention_factor) return static_cast<float>(*rope.attention_factor);
  if (rope.mscale.value_or(0.0) != 0.0 && rope.mscale_all_dim.value_or(0.0) != 0.0)
    return static_cast<float>(yarn_mscale(rope.factor, *rope.mscale) / yarn_mscale(rope.factor, *rope.mscale_all_dim));
  return static_cast<float>(yarn_mscale(rope.factor, 1.0));
}

std::vector<float> ModelConfig::rope_inv_freq() const {
  const int64_t dim = qk_rope_head_dim, half = dim / 2;
  const float base = static_cast<float>(rope.theta);
  std::vector<float> pos_freq(half), inv(half);
  for (int64_t i = 0; i < half; ++i) {
    pos_freq[i] = std::pow(base, static_cast<float>(2 * i) / static_cast<float>(dim));
    inv[i] = 1.0f / pos_freq[i];
  }
  if (!rope.yarn) return inv;
  // YaRN exactly as transformers' _compute_yarn_parameters: blend interpolated and extrapolated
  // frequencies with a linear ramp over the correction range.
  const double orig = static_cast<double>(rope.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(orig / (rotations * 2 * M_PI))) / (2 * std::log(rope.theta));
  };
  double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  float lo = static_cast<float>(low), hi = static_cast<float>(high);
  if (lo == hi) hi += 0.001f;
  const float factor = static_cast<float>(rope.factor);
  for (int64_t i = 0; i < half; ++i) {
    float ramp = std::clamp((static_cast<float>(i) - lo) / (hi - lo), 0.0f, 1.0f);
    float extrapolation_weight = 1.0f - ramp;
    float interpolated = 1.0f / (factor * pos_freq[i]);
    inv[i] = interpolated * (1.0f - extrapolation_weight) + inv[i] * extrapolation_weight;
  }
  return inv;
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  NW_CHECK(j.is_object(), source, ": expected a JSON object");
  FieldReader f(j, source);
  ModelConfig c;
  c.model_type = parse_model_type(f, j);
  c.vocab_size = f.integer("vocab_size");
  c.hidden_size = f.integer("hidden_size");
  c.num_hidden_layers = f.int32("num_hidden_layers");
  c.num_attention_heads = f.int32("num_attention_heads");
  c.q_lora_rank = f.optional_integer("q_lora_rank");
  c.kv_lora_rank = f.integer("kv_lora_rank");
  c.qk_nope_head_dim = f.integer("qk_nope_head_dim");
  c.qk_rope_head_dim = f.integer("qk_rope_head_dim");
  c.v_head_dim = f.integer("v_head_dim");
  c.intermediate_size = f.integer("intermediate_size");
  c.first_k_dense_replace = f.int32_or("first_k_dense_replace", 0);
  c.rms_norm_eps = f.number_or("rms_norm_eps", 1e-6);
  c.max_position_embeddings = f.integer_or("max_position_embeddings", 4096);
  c.tie_word_embeddings = f.boolean_or("tie_word_embeddings", false);
  c.num_nextn_predict_layers = f.int32_or("num_nextn_predict_layers", 0);
  check_size(f, "vocab_size", c.vocab_size);
  if (f.has("bos_token_id")) c.bos_token_id = token_id(f, "bos_token_id", j["bos_token_id"], c.vocab_size);
  c.eos_token_ids = parse_eos(f, j, c.vocab_size);
  parse_moe(f, c);
  c.rope = parse_rope(f, j, c.model_type, c.max_position_embeddings);
  c.fp8 = parse_quantization(f, j);

  for (auto [key, value] : {std::pair{"hidden_size", c.hidden_size},
                            {"num_hidden_layers", int64_t{c.num_hidden_layers}},
                            {"num_attention_heads", int64_t{c.num_attention_heads}},
                            {"kv_lora_rank", c.kv_lora_rank}, {"qk_nope_head_dim", c.qk_nope_head_dim},
                            {"qk_rope_head_dim", c.qk_rope_head_dim}, {"v_head_dim", c.v_head_dim},
                            {"intermediate_size", c.intermediate_size},
                            {"max_position_embeddings", c.max_position_embeddings}})
    check_size(f, key, value);
  if (c.q_lora_rank) check_size(f, "q_lora_rank", *c.q_lora_rank);
  NW_CHECK(c.qk_rope_head_dim % 2 == 0, source, ": field 'qk_rope_head_dim' must be even, got ", c.qk_rope_head_dim);
  NW_CHECK(c.first_k_dense_replace >= 0 && c.first_k_dense_replace <= c.num_hidden_layers, source,
           ": field 'first_k_dense_replace' must be in [0, num_hidden_layers = ", c.num_hidden_layers, "], got ",
           c.first_k_dense_replace);
  check_at_least(f, "num_nextn_predict_layers", c.num_nextn_predict_layers, 0);
  check_positive(f, "rms_norm_eps", c.rms_norm_eps);
  std::string act = f.optional_string("hidden_act").value_or("silu");
  NW_CHECK(act == "silu", source, ": field 'hidden_act' is '", act, "'; DeepSeek models use silu");
  NW_CHECK(!f.boolean_or("attention_bias", false), source,
           ": field 'attention_bias' is true; DeepSeek attention has no biases");
  NW_CHECK(!f.boolean_or("mlp_bias", false), source, ": field 'mlp_bias' is true; DeepSeek MLPs have no biases");
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) { return from_json(read_json_file(path), path); }

const char* topk_method_name(TopkMethod m) {
  switch (m) {
    case TopkMethod::kGreedy: return "greedy";
    case TopkMethod::kGroupLimitedGreedy: return "group_limited_greedy";
    case TopkMethod::kNoauxTc: return "noaux_tc";
  }
  return "?";
}

}  // namespace narwhal
