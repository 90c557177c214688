// bench-one-batch's speculative oracle: verify steps at full shapes whose drafts come from the target's own greedy
// tokens, so that a chosen number of them is accepted whatever the (random) weights.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/model_runner.h"

namespace narwhal {

struct OracleResult {
  double median_step_s = 0;   // one speculative step: the verify forward, its draws, the draft model's rounds
  double accept_length = 0;   // tokens a sequence took per step, measured (the oracle's when verify == decode)
};

// `truth[s]`: sequence s's plain greedy tokens after its prompt of `input` tokens (truth[s][0] is the first decode's
// pending token), from plain decode steps on `runner`'s cache over `tables[s]`. Runs `steps` speculative steps from
// the first decode: each sequence's num_steps drafts are its next accept - 1 true tokens, then wrong ones, so the
// target keeps accept - 1 drafts and draws one more; a sequence goes on from the token after what it took.
// truth[s] must hold steps * accept + num_steps + 1 tokens.
OracleResult time_oracle_verify(ModelRunner& runner, const std::vector<std::vector<int32_t>>& tables,
                                const std::vector<std::vector<int32_t>>& truth, int64_t input, int accept,
                                int num_steps, int steps);

}  // namespace narwhal
