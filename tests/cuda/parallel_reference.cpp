// The GPU parallel tests' shared reference: the CPU forward over a step script, and the check of logits against it.
#include "cuda/parallel_reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

#include "core/error.h"
#include "cuda/gpu_test_util.h"
#include "model/cuda_weights.h"
#include "model/deepseek_model.h"
#include "random_config.h"
#include "test_util.h"

namespace narwhal::testing {

CudaRunnerOptions script_runner_options(const StepScript& script) {
  CudaRunnerOptions o;
  o.page_size = kParallelPageSize;
  o.max_total_tokens = script.pages_needed * kParallelPageSize;
  o.max_tokens_per_step = 512;
  o.cuda_graph_max_bs = 3;
  o.disable_cuda_graph = true;
  return o;
}

Reference run_reference(const std::string& dir, const StepScript& script) {
  const DeepSeekModel cpu = DeepSeekModel::load(dir);
  const ModelConfig& c = cpu.config();
  KvCache cache(c, c.num_hidden_layers, script.pages_needed, kParallelPageSize);
  Reference out;
  out.tolerance = c.fp8 && fp8_kernels_fit(c) ? kParallelFp8Tolerance : kParallelTolerance;
  out.routing.resize(script.steps.size());
  for (size_t i = 0; i < script.steps.size(); ++i) {
    ForwardOptions options;
    options.routing_trace = &out.routing[i];
    out.logits.push_back(cpu.forward(script.steps[i], cache, options).logits);
  }
  return out;
}

double expect_logits_close(const std::vector<Tensor>& got, const std::vector<Tensor>& want, const std::string& what,
                           double tolerance) {
  double worst = 0;
  EXPECT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    EXPECT_EQ(got[i].shape, want[i].shape) << what << ": step " << i;
    if (got[i].shape != want[i].shape) continue;
    const int64_t vocab = want[i].size(1);
    for (int64_t s = 0; s < want[i].size(0); ++s) {
      const float* g = got[i].f32() + s * vocab;
      const float* w = want[i].f32() + s * vocab;
      const double err = l2_rel_error(g, w, vocab);
      EXPECT_LE(err, tolerance) << what << ": step " << i << " sequence " << s;
      worst = std::max(worst, err);
      std::vector<float> sorted(w, w + vocab);
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      const float largest = std::max(std::fabs(sorted[0]), std::fabs(*std::min_element(w, w + vocab)));
      if (sorted[0] - sorted[1] > tolerance * largest) {
        EXPECT_EQ(std::max_element(g, g + vocab) - g, std::max_element(w, w + vocab) - w)
            << what << ": greedy id, step " << i << " sequence " << s;
      }
    }
  }
  ::testing::Test::RecordProperty(what, cat(worst));
  std::printf("%s: worst row error %.3g (tolerance %.0e)\n", what.c_str(), worst, tolerance);
  return worst;
}

void write_deepseek_dims(const std::string& dir, bool fp8) {
  json config = deepseek_dims_json(fp8);
  if (fp8) config["moe_intermediate_size"] = 1024;
  write_random_checkpoint(dir, config, 13, fp8);
}

json deepseek_v3_dims_json() {
  json c = deepseek_dims_json(true);
  c["hidden_size"] = 7168;
  c["num_attention_heads"] = 128;
  c["q_lora_rank"] = 1536;
  c["intermediate_size"] = 18432;
  c["moe_intermediate_size"] = 2048;
  c["n_routed_experts"] = 256;
  c["num_experts_per_tok"] = 8;
  c["n_group"] = 8;
  c["topk_group"] = 4;
  c["vocab_size"] = 129280;
  return c;
}

}  // namespace narwhal::testing
