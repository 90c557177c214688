// What the GPU forward's parallel tests (cuda_tp_test.cpp, cuda_dp_test.cpp) share: the CPU reference their logits
// are held to, its tolerances (cuda_tp_test.cpp says why these), runner options for a step script, the logits
// check, and checkpoints and configs at DeepSeek's dims.
#pragma once

#include <string>
#include <vector>

#include "core/json.h"
#include "core/tensor.h"
#include "model/routing_trace.h"
#include "runtime/cuda_model_runner.h"
#include "step_script.h"

namespace narwhal::testing {

constexpr double kParallelTolerance = 2e-2;        // BF16 activations, ||got - cpu||_2 / ||cpu||_2 per row
constexpr double kParallelFp8Tolerance = 8e-2;     // FP8 weights kept FP8 (activations quantized to e4m3 per 128)
constexpr int64_t kParallelPageSize = 16;

// Eager runner options with a cache just large enough for the script, at most 512 tokens a step.
CudaRunnerOptions script_runner_options(const StepScript& script);

// The CPU reference's logits at every step of the script, its routing, and the tolerance its config is held to.
struct Reference {
  std::vector<Tensor> logits;
  std::vector<RoutingTrace> routing;
  double tolerance = kParallelTolerance;
};
Reference run_reference(const std::string& dir, const StepScript& script);

// Worst row error of `got` against `want`, expecting every row within the tolerance and the greedy id equal
// wherever `want`'s top-2 margin is clear of it.
double expect_logits_close(const std::vector<Tensor>& got, const std::vector<Tensor>& want, const std::string& what,
                           double tolerance);

// A checkpoint at DeepSeek's attention dims (deepseek_dims_json). FP8 keeps FP8 where a rank's expert slice is
// whole 128-blocks: its moe_intermediate 1024 splits into 512, 256 and 128.
void write_deepseek_dims(const std::string& dir, bool fp8);

// DeepSeek-V3's dims (128 heads, hidden 7168, 256 experts of 2048, vocab 129280, FP8) in two layers, one dense and
// one MoE: per-rank shapes at TP 8 for dummy weights.
json deepseek_v3_dims_json();

}  // namespace narwhal::testing
