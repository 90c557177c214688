// Engine: the serving loop. Thread-safe submit/abort in, one loop thread scheduling and running steps, outputs streamed back.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/engine_config.h"
#include "runtime/grammar_vocab.h"
#include "runtime/kv_pool.h"
#include "runtime/model_runner.h"
#include "runtime/radix_cache.h"
#include "runtime/request.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"
#include "runtime/sequence.h"

namespace narwhal {

// One request in the engine: its input and its choices (one Sequence each once the prompt forks).
struct RequestState {
  uint64_t id = 0;
  int dp_rank = 0;  // the DP rank whose cache holds all its choices
  RequestInput input;
  std::vector<int32_t> stop_ids;  // eos (unless ignore_eos) and stop_token_ids: finish, and masked before min_new_tokens
  std::vector<std::unique_ptr<Sequence>> seqs;  // all n from the start; choices 1.. wait until choice 0 forks
  int unfinished = 0;
};

// One DP rank's load, as publish_state last saw it.
struct DpRankLoad {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_used_pages = 0;  // held by running requests (not pages only the radix cache holds)
  int64_t kv_total_pages = 0;
};

// Counters since start, readable from any thread.
struct EngineStats {
  std::atomic<int64_t> steps{0};
  std::atomic<int64_t> prompt_tokens{0};     // of admitted requests (once per request)
  std::atomic<int64_t> cached_tokens{0};     // of those, found in the prefix cache
  std::atomic<int64_t> generated_tokens{0};
  std::atomic<int64_t> forward_tokens{0};    // fed to the model (re-prefills after retraction included)
  std::atomic<int64_t> finished_requests{0};  // ended by a stop condition or length (not aborted)
  std::atomic<int64_t> aborted_requests{0};
  std::atomic<int64_t> retractions{0};
  // Speculative decoding: decode steps of sequences that speculate, and the tokens they gave (drafts the target
  // kept plus the one it drew after them): their ratio is the mean accept length (SGLang's spec_accept_length).
  std::atomic<int64_t> spec_verifies{0};
  std::atomic<int64_t> spec_verified_tokens{0};
  double spec_accept_length() const;  // their ratio; 0 before any
  // Liveness and occupancy, refreshed by the loop thread: at every step and at least once a second when idle.
  std::atomic<bool> loop_running{false};
  std::atomic<int64_t> heartbeat_ns{0};      // steady_clock time of the loop's last sign of life
  std::atomic<int64_t> running_requests{0};  // sequences in the running batch
  std::atomic<int64_t> waiting_requests{0};  // sequences waiting for admission
  std::atomic<int64_t> kv_total_pages{0};
  std::atomic<int64_t> kv_used_pages{0};     // pages with any holder (requests or the radix cache)
  std::atomic<int64_t> kv_evictable_pages{0};  // of those, pages only the radix cache holds
  // Each DP rank's load (one entry without DP attention); the occupancy fields above are their sums.
  std::vector<DpRankLoad> dp_loads() const;
  void set_dp_loads(std::vector<DpRankLoad> loads);
  // ModelRunner::expert_tokens of the runners (summed), refreshed about twice a second.
  std::vector<int64_t> expert_tokens() const;
  void set_expert_tokens(std::vector<int64_t> tokens);

 private:
  mutable std::mutex mutex_;  // guards the two vectors
  std::vector<DpRankLoad> dp_loads_;
  std::vector<int64_t> expert_tokens_;
};

// One DP rank's share of the engine (the whole of it without DP attention, SGLang's one scheduler per DP rank): its
// runner, cache pool, radix cache and scheduler, the batch and draws of its part of the step, and its log counters.
struct DpRank {
  DpRank(int index, std::unique_ptr<ModelRunner> runner, const EngineConfig& config, int max_running);
  int index;
  std::unique_ptr<ModelRunner> runner;
  KvPool pool;
  RadixCache cache;
  Scheduler scheduler;
  StepPlan plan;
  ForwardBatch batch;  // reused so the loop does not allocate
  std::vector<SampleRequest> samples;
  std::vector<Sequence*> sample_seqs;
  int64_t generated = 0;  // tokens its sequences accepted, for its decode log line
  int decode_steps_since_log = 0;
  bool cuda_graph = false;  // the last step replayed a CUDA graph (StepOutput::cuda_graph), for its decode log line
  int64_t generated_at_last_log = 0;
  int64_t spec_verifies = 0, spec_verified_tokens = 0;  // as EngineStats', this rank's, for its decode log line
  int64_t spec_verifies_at_last_log = 0, spec_verified_tokens_at_last_log = 0;
  std::chrono::steady_clock::time_point last_decode_log = std::chrono::steady_clock::now();
};

class Engine {
 public:
  // `text` (optional, must outlive the engine) turns tokens into text for stop strings and streamed text.
  Engine(std::unique_ptr<ModelRunner> runner, const EngineConfig& config, const TokenText* text = nullptr);
  // DP attention: a runner per DP rank (make_model_runners). Each rank schedules its own requests in its own cache;
  // every step launches every rank's part, an idle rank's empty, so their collectives meet; new requests go to a
  // rank by --load-balance-method.
  Engine(std::vector<std::unique_ptr<ModelRunner>> runners, const EngineConfig& config,
         const TokenText* text = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Thread-safe. Checks the request (Error on a bad one: empty prompt, id outside the vocabulary, a prompt
  // the context or the cache cannot hold, stop strings without a tokenizer) and queues it; returns its id.
  // max_new_tokens is clipped so prompt + output fit the context and the cache.
  uint64_t submit(RequestInput input);
  // Thread-safe. Ends the request at the next step, whatever its state: its pages are released and each
  // unfinished choice gets a last output with finish reason abort. Unknown or finished ids are ignored.
  void abort(uint64_t request_id);
  // Thread-safe. Empties the prefix cache of every entry no running request uses (SGLang's /flush_cache), before
  // the next step.
  void flush_cache();

  // Runs the loop on its own thread until stop() (or destruction).
  void start();
  void stop();
  // Without start(): runs one step on the caller's thread; returns whether work remains.
  bool step();
  void run_until_idle();

  const EngineStats& stats() const { return stats_; }
  bool speculating() const { return config_.speculative_num_steps > 0; }  // --speculative-algorithm is on
  // Thread-safe. "" unless the loop stopped by itself because the runner failed for good (ModelRunner::failure):
  // then why. Its requests were aborted with that message, and nothing runs any more.
  std::string failure() const;
  // Loop-thread state, for tests and tools when the loop is not running.
  int num_dp_ranks() const { return static_cast<int>(ranks_.size()); }
  const KvPool& kv_pool(int dp_rank = 0) const { return ranks_.at(dp_rank)->pool; }
  RadixCache& radix_cache(int dp_rank = 0) { return ranks_.at(dp_rank)->cache; }
  const ModelConfig& model_config() const { return ranks_[0]->runner->config(); }
  // The most tokens (prompt + output) one request can have: the context length (--context-length, else
  // config.json's) or the whole KV cache, whichever is less (SGLang's max_req_len). submit() refuses longer prompts and clips max_new_tokens to fit.
  int64_t max_sequence_len() const { return max_sequence_len_; }
  // Over all DP ranks.
  int max_running_requests() const { return max_running_ * num_dp_ranks(); }

 private:
  DpRank& rank_of(const Sequence& seq) { return *ranks_[static_cast<size_t>(seq.request->dp_rank)]; }
  int pick_dp_rank();  // --load-balance-method's choice for a new request
  void loop();
  bool has_submissions();
  void drain_submissions();
  void admit(std::unique_ptr<RequestState> request);
  void finish_aborted(uint64_t request_id, const std::string& message);
  // The step's draws: every planned sequence that finishes its pending tokens, and the choices that fork off a
  // prompt finished now (they draw from its row).
  void plan_samples(DpRank& rank);
  void make_grammar_masks(const std::vector<Sequence*>& seqs);  // structured output's, for this step's draws
  void launch(DpRank& rank);
  void process_step(DpRank& rank, StepOutput& out);
  std::vector<Sequence*> fork(Sequence& parent);
  // Appends a drawn token; `cached`: a verified draft, whose latents the step wrote. False once the sequence ended.
  bool accept_token(Sequence& seq, const SampledToken& sampled, const Tensor& logits, int64_t row, bool cached = false);
  bool may_draft(const Sequence& seq) const;  // whether its decodes may verify drafts (greedy, no penalties, ...)
  void keep_draft(Sequence& seq, std::vector<int32_t> draft, std::vector<int32_t> parents);
  // Text, stop strings and streaming of the accepted tokens: with overlap, while the device runs the next step.
  void flush_outputs();
  void remove_stopped();
  void log_step(DpRank& rank);
  std::string accept_length_since_log(const DpRank& rank) const;
  std::string failure_of_runners() const;  // the first runner's failure(), or ""
  bool any_rank_busy() const;
  void emit(Sequence& seq, RequestOutput&& out);
  void abort_everything(const std::string& message);
  // The runner failed for good: every request is aborted and the loop records why (it ends after this).
  void stop_on_failure(const std::string& why);
  void drop_done();
  void publish_state();  // the liveness and occupancy fields of stats_

  EngineConfig config_;
  const TokenText* text_;
  // Structured output's token masks: made from text_ by the first request with a grammar.
  std::once_flag grammar_vocab_once_;
  std::unique_ptr<const GrammarVocab> grammar_vocab_;
  int max_running_;  // per DP rank
  std::vector<std::unique_ptr<DpRank>> ranks_;
  size_t next_rank_ = 0;  // round robin's
  // A token accepted but not yet turned into text and streamed (overlap defers that by one step). By ids, so
  // that an abort in between leaves nothing dangling.
  struct PendingOutput {
    uint64_t request_id = 0;
    int index = 0;
    SampledToken sampled;
    std::vector<float> logits;             // when the request asked for them
    std::optional<FinishReason> finish;    // length or a stop token, decided at acceptance
  };
  std::vector<PendingOutput> pending_outputs_;
  std::vector<Sequence*> stopped_;         // ended by a stop string while in flight: removed once their step ends
  bool step_in_flight_ = false;
  int64_t context_length_;    // --context-length, else config.json's max_position_embeddings
  int64_t max_sequence_len_;  // prompt + output, within the context and the cache
  std::unordered_map<uint64_t, std::unique_ptr<RequestState>> requests_;  // loop thread only
  std::vector<uint64_t> done_;  // requests whose every choice finished this step: dropped at its end
  std::chrono::steady_clock::time_point expert_tokens_published_{};

  mutable std::mutex mutex_;  // guards the two queues below and failure_, and wakes the loop
  std::condition_variable wake_;
  std::vector<std::unique_ptr<RequestState>> submitted_;
  std::vector<uint64_t> aborted_;
  bool flush_requested_ = false;
  bool stopping_ = false;
  std::string failure_;
  std::thread thread_;

  std::atomic<uint64_t> next_id_{1};
  EngineStats stats_;
};

}  // namespace narwhal
