// EngineConfig: the scheduling and caching settings of one engine (filled from ServerArgs' SGLang-named flags).
#pragma once

#include <cstdint>
#include <string>

namespace narwhal {

enum class SchedulePolicy {
  kFcfs,  // first come, first served
  kLpm,   // longest prefix match first: requests that hit the cache most go first
};

// Parses --schedule-policy ("fcfs" or "lpm"); throws Error otherwise.
SchedulePolicy parse_schedule_policy(const std::string& name);

// Which DP rank a new request goes to (DP attention, SGLang's --load-balance-method).
enum class LoadBalanceMethod {
  kRoundRobin,     // in turn: SGLang's default; even over many similar requests, blind to their lengths
  kShortestQueue,  // the rank with the fewest running and waiting sequences: evens out uneven request lengths
};
// Parses --load-balance-method ("round_robin" or "shortest_queue"); throws Error otherwise.
LoadBalanceMethod parse_load_balance_method(const std::string& name);

struct EngineConfig {
  // Prompt + output tokens of one sequence at most (SGLang's --context-length); 0: config.json's
  // max_position_embeddings. It may only lower that: positions past what the model was trained for are refused.
  int64_t context_length = 0;
  SchedulePolicy schedule_policy = SchedulePolicy::kFcfs;
  int max_running_requests = 0;        // 0: half the cache's tokens, at most 4096 (SGLang's rule)
  int64_t chunked_prefill_size = 8192;  // prompt tokens per step and sequence chunk; -1: no chunking
  int64_t max_prefill_tokens = 16384;  // prompt tokens per step when not chunking
  bool enable_mixed_chunk = false;     // decode tokens ride along in prefill steps
  bool disable_radix_cache = false;
  double schedule_conservativeness = 1.0;  // > 1 reserves more cache for running requests' future tokens
  uint64_t random_seed = 0;            // seeds of requests that give none derive from it
  // Off: each step's tokens become text and are streamed before the next step is launched, instead of while it
  // runs (outputs are identical either way; overlap hides that host work behind the device's).
  bool disable_overlap_schedule = false;
  int decode_log_interval = 40;        // decode steps between two "Decode batch." log lines (SGLang's default)
  LoadBalanceMethod load_balance_method = LoadBalanceMethod::kRoundRobin;
  // Speculative decoding (the runner drafts and verifies, runtime/speculative.h): tokens drafted per sequence and
  // step; 0: off. The scheduler gives a decoding sequence pages for its drafts and the draft model's next ones.
  int speculative_num_steps = 0;
  // Tree drafting (SpeculativeConfig::topk > 1, the CPU only): children per node and round, tokens per verify.
  int speculative_topk = 1;
  int speculative_num_draft_tokens = 0;

  // Throws Error naming the flag whose value cannot work.
  void validate() const;
};

}  // namespace narwhal
