// A seeded script of forward steps (ragged prefill, decode, a mixed step) that any runner can replay, so two
// runners (CPU reference and GPU, graphs on and off) are compared on exactly the same inputs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/forward_batch.h"

namespace narwhal::testing {

struct StepScript {
  std::vector<ForwardBatch> steps;
  std::vector<std::string> names;  // "prefill", "decode 1", "mixed", ... per step
  int64_t pages_needed = 0;        // the scattered page ids are all below this
};

// 1..3 sequences with prompt lengths that cross page boundaries (1, 5, page-1, page+1, ...), on scattered pages;
// a prefill of all of them in one ragged batch, three decode steps, a mixed step (sequence 0 takes a chunk of 5
// new tokens while the others decode) and a last decode. Token ids are drawn from the seed, never from the
// outputs, so every runner sees the same inputs. `max_seqs` caps the sequence count (1 for a single sequence).
StepScript make_step_script(uint64_t seed, int64_t vocab, int64_t page_size, int max_seqs = 3);

// Runs every step through `run` (a runner's run(batch): host F32 logits [num_seqs, vocab]) and returns them.
std::vector<Tensor> run_step_script(const StepScript& script, const std::function<Tensor(const ForwardBatch&)>& run);

}  // namespace narwhal::testing
