// EngineConfig parsing and validation.
#include "runtime/engine_config.h"

#include "core/error.h"

namespace narwhal {

SchedulePolicy parse_schedule_policy(const std::string& name) {
  if (name == "fcfs") return SchedulePolicy::kFcfs;
  if (name == "lpm") return SchedulePolicy::kLpm;
  throw Error(cat("--schedule-policy ", name, ": expected fcfs or lpm"));
}

LoadBalanceMethod parse_load_balance_method(const std::string& name) {
  if (name == "round_robin") return LoadBalanceMethod::kRoundRobin;
  if (name == "shortest_queue") return LoadBalanceMethod::kShortestQueue;
  throw Error(cat("--load-balance-method ", name, ": expected round_robin or shortest_queue"));
}

void EngineConfig::validate() const {
  NW_CHECK(context_length >= 0, "--context-length must be >= 0 (0 = config.json's max_position_embeddings), got ",
           context_length);
  NW_CHECK(max_running_requests >= 0, "--max-running-requests must be >= 0 (0 = automatic), got ",
           max_running_requests);
  NW_CHECK(chunked_prefill_size == -1 || chunked_prefill_size >= 1, "--chunked-prefill-size must be -1 (off) or >= 1, got ",
           chunked_prefill_size);
  NW_CHECK(max_prefill_tokens >= 1, "--max-prefill-tokens must be >= 1, got ", max_prefill_tokens);
  NW_CHECK(schedule_conservativeness > 0.0, "--schedule-conservativeness must be > 0, got ", schedule_conservativeness);
  NW_CHECK(decode_log_interval >= 1, "--decode-log-interval must be >= 1, got ", decode_log_interval);
}

}  // namespace narwhal
