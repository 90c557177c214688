// CudaModelRunner::SpeculativeGraphs: the speculative graphs' fixed-address buffers and the step they launched
// (cuda_speculative_graphs.cpp; here so that the runner's destructor sees the type).
#pragma once

#include <map>
#include <vector>

#include "ops/sampling.h"
#include "runtime/cuda_model_runner.h"

namespace narwhal {

// Fixed-address device buffers the graphs read and write (sized for the largest graph), and the launched step.
struct CudaModelRunner::SpeculativeGraphs {
  int64_t rows = 0;  // 1 + N per sequence
  std::map<int, cudaGraphExec_t> execs, sampled_execs;  // argmax draws; the GPU sampler's from sampling_rows
  Tensor seq_info, ext_ids, ext_slots, ext_last, chain_positions, chain_slots, chain_lens, draft_ids, identity;
  Tensor hidden;  // the first chain round's input: the extend's state at each sequence's last kept row
  PinnedBuffer seq_info_host, results, sampling_rows_host;
  Tensor sampling_rows, sampling_workspace;  // [max_bs * rows] ops::SamplingRow; the sampler's workspace
  ops::SampledRows sampled;                  // the sampler's outputs (its tokens go where the argmax's do)
  std::vector<int64_t> logit_rows;  // 0 .. bs * rows - 1: a verify graph returns every row's logits
  // The launched step, for finish().
  bool pending = false;
  int bs = 0;
  ForwardBatch batch;
  std::vector<SampleRequest> samples;
  std::vector<int64_t> limits;
  cudaEvent_t done = nullptr;

  ~SpeculativeGraphs() {
    for (auto& [size, exec] : execs) cudaGraphExecDestroy(exec);
    for (auto& [size, exec] : sampled_execs) cudaGraphExecDestroy(exec);
    if (done) cudaEventDestroy(done);
  }
};

}  // namespace narwhal
