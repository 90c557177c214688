// Scheduler: which sequences run in the next step, with how many tokens, and whose pages make room.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "runtime/engine_config.h"
#include "runtime/kv_pool.h"
#include "runtime/radix_cache.h"
#include "runtime/sequence.h"

namespace narwhal {

struct ScheduledSequence {
  Sequence* seq = nullptr;
  int64_t new_tokens = 0;  // fed this step: tokens[kv_len, kv_len + new_tokens)
  bool decode = false;     // the one pending token of a generating sequence
};

struct StepPlan {
  std::vector<ScheduledSequence> items;
  bool empty() const { return items.empty(); }
};

// SGLang's policy on a paged cache. Waiting sequences hold no pages; running ones hold pages for every
// token fed so far. A step either extends (prefill chunks: sequences in progress first, then new
// admissions in policy order, under the --chunked-prefill-size budget) or decodes every generating
// sequence; with --enable-mixed-chunk it does both. A sequence is admitted only if the cache can hold
// its prompt plus its future tokens, where running sequences' futures count at new_token_ratio (it
// decays as steps pass and rises after a retraction). When decoding finds no page, the least advanced
// sequence is retracted: its pages go to the radix cache, it waits again, and later re-prefills prompt
// and output (hitting its own cached pages when they survived), so no token is lost. Admission is fair across
// groups (the prompts of one API request): the group with the fewest running sequences goes first, so a
// request with thousands of sequences cannot hold the engine while a small one waits behind it.
class Scheduler {
 public:
  Scheduler(const EngineConfig& config, int max_running, KvPool& pool, RadixCache& cache);

  // A new sequence, waiting for admission.
  void enqueue(Sequence* seq);
  // A sequence that already holds pages (a fork of a running one).
  void add_running(Sequence* seq);
  // Plans the next step and gives every planned sequence pages for its new tokens (evicting and
  // retracting as needed). Empty only when nothing is waiting or running.
  StepPlan plan();
  // After the step ran: advances kv_len of the planned sequences and caches the pages extensions filled.
  void complete(const StepPlan& plan);
  // Takes a finished or aborted sequence out; its pages go to the radix cache and are released.
  void remove(Sequence* seq);
  // `count` pages into `out`, evicting cached ones if the free list is short; false if even that fails.
  bool allocate(int64_t count, std::vector<int32_t>& out);

  bool idle() const { return waiting_.empty() && running_.empty(); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_retractions() const { return retractions_; }

 private:
  void plan_decodes(StepPlan& plan);
  void plan_extends(StepPlan& plan);
  // The tokens admission tries to find in the cache: all but the last, whose logits the step must compute.
  static std::span<const int32_t> cacheable_prompt(const Sequence& seq);
  // The waiting sequences as --schedule-policy orders them (fcfs: arrival, retracted ones first; lpm: cached
  // prefix length).
  std::vector<Sequence*> policy_order() const;
  // That order interleaved fairly across groups: the order admission tries them in.
  std::vector<Sequence*> waiting_order() const;
  bool shares_uncached_prefix(const Sequence& seq, int64_t cached, const StepPlan& plan) const;
  int64_t chunk_length(const Sequence& seq, int64_t budget, bool step_empty) const;
  bool grow(Sequence& seq, int64_t tokens);
  int64_t reserved_tokens() const;
  Sequence* pick_victim() const;
  void retract(Sequence* seq);
  void release_pages(Sequence& seq);

  EngineConfig config_;
  int max_running_;
  KvPool& pool_;
  RadixCache& cache_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
  double new_token_ratio_;
  double min_new_token_ratio_;
  double new_token_ratio_decay_;
  int64_t retractions_ = 0;
};

}  // namespace narwhal
