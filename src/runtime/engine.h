// Engine: the serving loop. Thread-safe submit/abort in, one loop thread scheduling and running steps, outputs streamed back.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/engine_config.h"
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
  RequestInput input;
  std::vector<int32_t> stop_ids;  // eos (unless ignore_eos) and stop_token_ids: finish, and masked before min_new_tokens
  std::vector<std::unique_ptr<Sequence>> seqs;  // all n from the start; choices 1.. wait until choice 0 forks
  int unfinished = 0;
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
  // Liveness and occupancy, refreshed by the loop thread: at every step and at least once a second when idle.
  std::atomic<bool> loop_running{false};
  std::atomic<int64_t> heartbeat_ns{0};      // steady_clock time of the loop's last sign of life
  std::atomic<int64_t> running_requests{0};  // sequences in the running batch
  std::atomic<int64_t> waiting_requests{0};  // sequences waiting for admission
  std::atomic<int64_t> kv_total_pages{0};
  std::atomic<int64_t> kv_used_pages{0};     // pages with any holder (requests or the radix cache)
  std::atomic<int64_t> kv_evictable_pages{0};  // of those, pages only the radix cache holds
};

class Engine {
 public:
  // `text` (optional, must outlive the engine) turns tokens into text for stop strings and streamed text.
  Engine(std::unique_ptr<ModelRunner> runner, const EngineConfig& config, const TokenText* text = nullptr);
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
  // Thread-safe. "" unless the loop stopped by itself because the runner failed for good (ModelRunner::failure):
  // then why. Its requests were aborted with that message, and nothing runs any more.
  std::string failure() const;
  // Loop-thread state, for tests and tools when the loop is not running.
  const KvPool& kv_pool() const { return pool_; }
  RadixCache& radix_cache() { return cache_; }
  const ModelConfig& model_config() const { return runner_->config(); }
  // The most tokens (prompt + output) one request can have: the context length or the whole KV cache, whichever
  // is less (SGLang's max_req_len). submit() refuses longer prompts and clips max_new_tokens to fit.
  int64_t max_sequence_len() const { return max_sequence_len_; }
  int max_running_requests() const { return max_running_; }

 private:
  void loop();
  bool has_submissions();
  void drain_submissions();
  void admit(std::unique_ptr<RequestState> request);
  void finish_aborted(uint64_t request_id, const std::string& message);
  // The step's draws: every planned sequence that finishes its pending tokens, and the choices that fork off a
  // prompt finished now (they draw from its row).
  void plan_samples(const StepPlan& plan);
  void process_step(StepOutput& out);
  std::vector<Sequence*> fork(Sequence& parent);
  void accept_token(Sequence& seq, const SampledToken& sampled, const Tensor& logits, int64_t row);
  // Text, stop strings and streaming of the accepted tokens: with overlap, while the device runs the next step.
  void flush_outputs();
  void remove_stopped();
  void log_step(const StepPlan& plan);
  void emit(Sequence& seq, RequestOutput&& out);
  void abort_everything(const std::string& message);
  // The runner failed for good: every request is aborted and the loop records why (it ends after this).
  void stop_on_failure(const std::string& why);
  void drop_done();
  void publish_state();  // the liveness and occupancy fields of stats_

  std::unique_ptr<ModelRunner> runner_;
  EngineConfig config_;
  const TokenText* text_;
  KvPool pool_;
  RadixCache cache_;
  int max_running_;
  Scheduler scheduler_;
  // A token accepted but not yet turned into text and streamed (overlap defers that by one step). By ids, so
  // that an abort in between leaves nothing dangling.
  struct PendingOutput {
    uint64_t request_id = 0;
    int index = 0;
    SampledToken sampled;
    std::vector<float> logits;             // when the request asked for them
    std::optional<FinishReason> finish;    // length or a stop token, decided at acceptance
  };
  ForwardBatch batch_;                     // the step's batch and draws, reused so the loop does not allocate
  std::vector<SampleRequest> samples_;
  std::vector<Sequence*> sample_seqs_;
  std::vector<PendingOutput> pending_outputs_;
  std::vector<Sequence*> stopped_;         // ended by a stop string while in flight: removed once their step ends
  bool step_in_flight_ = false;
  int decode_steps_since_log_ = 0;
  int64_t generated_at_last_log_ = 0;
  std::chrono::steady_clock::time_point last_decode_log_ = std::chrono::steady_clock::now();
  int64_t max_sequence_len_;  // prompt + output, within the context and the cache
  std::unordered_map<uint64_t, std::unique_ptr<RequestState>> requests_;  // loop thread only
  std::vector<uint64_t> done_;  // requests whose every choice finished this step: dropped at its end

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
