// ServerArgs: the engine and server settings, with SGLang's flag names and defaults where they apply.
#pragma once

#include <cstdint>
#include <string>

#include "cli/arg_parser.h"
#include "parallel/parallel_config.h"
#include "runtime/engine_config.h"
#include "runtime/model_runner_factory.h"
#include "runtime/speculative.h"

namespace narwhal {

struct ServerArgs {
  std::string model_path;
  std::string device = "cpu";
  int page_size = 64;
  int64_t random_seed = 0;
  std::string log_level = "info";

  // Parallelism (SGLang's names and defaults; --dist-timeout, which SGLang leaves to torch, is 300 s here).
  int tp_size = 1;
  int ep_size = 1;             // routed experts split over this many groups of the TP ranks (EP-MoE)
  bool enable_ep_moe = false;  // SGLang's older switch: --ep-size = --tp-size
  std::string moe_a2a_backend = "none";  // none or deepep (DeepEP's all-to-all token dispatch; --ep-size = --tp-size)
  std::string deepep_mode = "auto";      // auto, normal or low_latency (with deepep)
  bool enable_dp_attention = false;  // DP attention: --dp-size groups of the TP ranks, each with its own batch
  int dp_size = 1;
  std::string load_balance_method = "round_robin";  // round_robin or shortest_queue: a new request's DP rank
  int nnodes = 1;
  int node_rank = 0;
  std::string dist_init_addr;  // HOST:PORT where node 0 serves the rendezvous
  double dist_timeout = 300.0;

  // Engine: context, KV cache budget and scheduling (SGLang's names; 0 = automatic where SGLang says None).
  int64_t context_length = 0;            // 0: config.json's max_position_embeddings; may only lower it
  double mem_fraction_static = 0.85;     // gpu: weights + KV cache share of device memory
  int cuda_graph_max_bs = 0;             // gpu: largest decode batch replayed from a captured CUDA graph (0: by GPU memory)
  std::string load_format = "auto";      // auto: the checkpoint's safetensors; dummy: random weights from config.json
  bool disable_cuda_graph = false;
  int64_t cpu_cache_bytes = 1LL << 30;   // cpu: host bytes for the KV cache
  int64_t max_total_tokens = 0;          // 0: as many as the memory budget holds
  int max_running_requests = 0;          // 0: half the cache's tokens, at most 4096
  int64_t chunked_prefill_size = 8192;   // -1: no chunking
  int64_t max_prefill_tokens = 16384;
  std::string schedule_policy = "fcfs";  // fcfs or lpm
  bool disable_radix_cache = false;
  bool enable_mixed_chunk = false;
  bool disable_overlap_schedule = false;
  int decode_log_interval = 40;
  double schedule_conservativeness = 1.0;

  // Speculative decoding (SGLang's names; 0 = SGLang's automatic choice for DeepSeek: 3 steps, topk 1, 4 tokens).
  std::string speculative_draft_model_path;  // a NextN checkpoint drafting instead of the served one's MTP layer
  std::string speculative_algorithm;      // NEXTN (EAGLE is the same here): drafts from the checkpoint's MTP layer
  int speculative_num_steps = 0;
  int speculative_eagle_topk = 0;
  int speculative_num_draft_tokens = 0;

  // HTTP server (narwhal serve).
  std::string host = "127.0.0.1";
  int port = 30000;
  std::string api_key;                // when set, every request needs "Authorization: Bearer <key>"
  std::string served_model_name;      // the model id of the API; default: --model-path
  std::string tokenizer_path;         // default: --model-path
  std::string chat_template;          // a Jinja file overriding the tokenizer's template
  std::string reasoning_parser;       // deepseek-r1
  std::string tool_call_parser;       // deepseekv3
  int64_t max_request_body = 32 << 20;  // bytes
  int64_t max_request_body_in_flight = 128 << 20;  // bytes of all bodies being read, parsed or handled at once
  int64_t max_queued_response_bytes = 4 << 20;  // unsent bytes per connection before a slow reader is cut off
  int limit_concurrency = 4096;       // open connections (uvicorn's name); past it idle ones are closed, or 503
  double timeout_keep_alive = 5.0;    // seconds an idle connection is kept (uvicorn's name and default)
  double timeout_request_head = 10.0;  // seconds from a request's first byte to the end of its headers
  int64_t min_request_body_rate = 64 << 10;  // bytes/s a body must arrive at, after the head's timeout of grace
  int http_threads = 4;
  int64_t max_sequences_per_request = 2048;  // prompts x n of one request (narwhal's; SGLang has none)
  bool allow_auto_truncate = false;   // a prompt past the context is cut (its start kept), not refused
  double drain_timeout = 30.0;        // seconds SIGTERM waits for in-flight requests before aborting them
  bool trust_remote_code = false;     // accepted for SGLang compatibility; narwhal runs no model code

  // Registers every field as a flag (--model-path, --device, --page-size, --random-seed, --log-level, the
  // parallelism flags, ...).
  void register_flags(ArgParser& parser);
  // The HTTP server's flags (serve only), and SGLang flags narwhal does not implement (a clear error).
  void register_server_flags(ArgParser& parser);
  // Checks values that flags alone cannot (e.g. --model-path given); applies --log-level.
  void validate() const;
  void validate_speculative() const;
  // The engine's settings and the runner's load/cache options these flags describe (after validate()).
  EngineConfig engine_config() const;
  RunnerOptions runner_options() const;
  ParallelFlags parallel_flags() const;
  SpeculativeConfig speculative_config() const;  // off without --speculative-algorithm
  // A DP rank's --chunked-prefill-size: with DP attention SGLang's split of it over --dp-size, since the ranks'
  // chunks meet in every MoE (the gathered rows are dp_size chunks).
  int64_t rank_chunked_prefill_size() const;
  void validate_server() const;
  const std::string& model_name() const { return served_model_name.empty() ? model_path : served_model_name; }
};

}  // namespace narwhal
