// The step script: sequences on shuffled pages, prefill, decode and mixed steps with seeded token ids.
#include "step_script.h"

#include <algorithm>
#include <numeric>
#include <random>

namespace narwhal::testing {

StepScript make_step_script(uint64_t seed, int64_t vocab, int64_t page_size, int max_seqs) {
  std::mt19937_64 rng(seed * 0xD1B54A32D192ED03ull + 7);
  auto draw = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int num_seqs = static_cast<int>(draw(1, max_seqs));
  const std::vector<int64_t> lengths = {1, 5, page_size - 1, page_size, page_size + 1, 2 * page_size + 3, 37, 80};
  std::vector<int64_t> prompt(num_seqs);
  for (int64_t& p : prompt) p = lengths[static_cast<size_t>(draw(0, static_cast<int64_t>(lengths.size()) - 1))];
  constexpr int64_t kExtraTokens = 5 + 5;  // decode and mixed steps add at most this many per sequence

  // Every sequence's pages, drawn from one shuffled pool with spare pages, so no sequence's pages are contiguous.
  std::vector<std::vector<int32_t>> pages(num_seqs);
  int64_t total = 0;
  for (int s = 0; s < num_seqs; ++s) total += (prompt[s] + kExtraTokens + page_size - 1) / page_size;
  std::vector<int32_t> pool(static_cast<size_t>(total * 2));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  size_t next = 0;
  for (int s = 0; s < num_seqs; ++s)
    for (int64_t p = 0; p < (prompt[s] + kExtraTokens + page_size - 1) / page_size; ++p) pages[s].push_back(pool[next++]);

  StepScript script;
  script.pages_needed = static_cast<int64_t>(pool.size());
  std::vector<int64_t> kv(num_seqs, 0);
  auto tokens = [&](int64_t n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int32_t& id : t) id = static_cast<int32_t>(draw(0, vocab - 1));
    return t;
  };
  auto step = [&](const std::string& name, const std::vector<int64_t>& new_tokens) {
    ForwardBatch batch;
    for (int s = 0; s < num_seqs; ++s) {
      batch.add_sequence(tokens(new_tokens[s]), kv[s], pages[s]);
      kv[s] += new_tokens[s];
    }
    script.steps.push_back(std::move(batch));
    script.names.push_back(name);
  };
  step("prefill", prompt);
  for (int i = 1; i <= 3; ++i) step("decode " + std::to_string(i), std::vector<int64_t>(num_seqs, 1));
  std::vector<int64_t> mixed(num_seqs, 1);
  mixed[0] = 5;
  step("mixed", mixed);
  step("decode 4", std::vector<int64_t>(num_seqs, 1));
  return script;
}

std::vector<Tensor> run_step_script(const StepScript& script, const std::function<Tensor(const ForwardBatch&)>& run) {
  std::vector<Tensor> out;
  for (const ForwardBatch& batch : script.steps) out.push_back(run(batch));
  return out;
}

}  // namespace narwhal::testing
