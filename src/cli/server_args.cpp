// ServerArgs flag registration and validation.
#include "cli/server_args.h"

#include <algorithm>

#include "core/error.h"
#include "core/logging.h"
#include "ops/cuda/mla.h"

namespace narwhal {

void ServerArgs::register_flags(ArgParser& p) {
  p.add("model-path", &model_path, "model directory: config.json + safetensors in the Hugging Face layout");
  p.add("device", &device, "where the model runs: cuda (the current GPU) or cpu (the reference forward)");
  p.add("cuda-graph-max-bs", &cuda_graph_max_bs,
        "cuda: decode batches up to this size replay captured CUDA graphs (0: by GPU memory, 512 on an H200 as SGLang)");
  p.add("load-format", &load_format,
        "auto (the checkpoint's safetensors) or dummy (random weights made on the GPU from config.json alone; the "
        "tokenizer then comes from --tokenizer-path)");
  p.add_switch("disable-cuda-graph", &disable_cuda_graph, "cuda: run every step eagerly, capture no graph");
  p.add("page-size", &page_size, "tokens per page of the paged MLA latent cache");
  p.add("random-seed", &random_seed, "seed for sampling when a request gives none");
  p.add("log-level", &log_level, "debug, info, warning or error");
  p.add("mem-fraction-static", &mem_fraction_static,
        "gpu: fraction of device memory for weights + KV cache; the cache gets what the weights leave of it");
  p.add("cpu-cache-bytes", &cpu_cache_bytes, "cpu: host bytes for the KV cache");
  p.add("context-length", &context_length,
        "prompt + output tokens one request may have (0: config.json's max_position_embeddings; only lower is "
        "taken, as positions past the model's are refused)");
  p.add("max-total-tokens", &max_total_tokens, "KV cache size in tokens at most (0: what the memory budget holds)");
  p.add("max-running-requests", &max_running_requests,
        "requests decoding at once at most (0: half the cache's tokens, at most 4096)");
  p.add("chunked-prefill-size", &chunked_prefill_size, "prompt tokens per prefill chunk and step; -1: no chunking");
  p.add("max-prefill-tokens", &max_prefill_tokens, "prompt tokens per prefill step at most");
  p.add("schedule-policy", &schedule_policy, "waiting queue order: fcfs or lpm (longest cached prefix first)");
  p.add_switch("disable-radix-cache", &disable_radix_cache, "do not reuse cached prompt prefixes across requests");
  p.add_switch("enable-mixed-chunk", &enable_mixed_chunk, "run decode tokens in the same step as prefill chunks");
  p.add("decode-log-interval", &decode_log_interval, "decode steps between two 'Decode batch.' log lines");
  p.add_switch("disable-overlap-schedule", &disable_overlap_schedule,
               "turn each step's tokens into text and stream them before launching the next step, not while it runs");
  p.add("schedule-conservativeness", &schedule_conservativeness,
        "> 1 reserves more KV cache for running requests' future tokens (fewer retractions), < 1 admits more");
  p.add("tp-size", &tp_size,
        "tensor parallel size: ranks over all nodes that split the weights (a thread per rank; cuda: a GPU per rank)");
  p.alias("tp", "tp-size");
  p.add("nnodes", &nnodes, "nodes (processes, each with --tp-size / --nnodes ranks); run the same command on each");
  p.add("node-rank", &node_rank, "this process's node: 0 runs the engine (and serves HTTP), the others follow it");
  p.add("dist-init-addr", &dist_init_addr, "HOST:PORT of node 0, where the nodes meet (needed with --nnodes > 1)");
  p.add("dist-timeout", &dist_timeout,
        "seconds any wait for another rank or node may take (joining, each collective, node 0's next command)");
  p.add("ep-size", &ep_size,
        "expert parallel size: the routed experts are split over this many groups of the --tp-size ranks (it must "
        "divide it; each group's tp-size / ep-size ranks split their experts' intermediate dimension)");
  p.alias("ep", "ep-size");
  p.add_switch("enable-ep-moe", &enable_ep_moe, "expert parallelism over all TP ranks: --ep-size = --tp-size");
  p.add("moe-a2a-backend", &moe_a2a_backend,
        "how MoE layers move tokens between EP ranks: none (every rank runs its experts over every token, one "
        "all_reduce sums them) or deepep (each rank sends its slice of the tokens to the ranks holding their experts "
        "by all_to_all and gets the results back; needs whole experts per rank: --ep-size = --tp-size, the default "
        "it then takes)");
  p.add("deepep-mode", &deepep_mode,
        "with --moe-a2a-backend deepep: normal (counts exchanged first, variable sizes; eager steps only), "
        "low_latency (fixed-size blocks, no host sync: decode CUDA graphs capture it) or auto (low_latency for "
        "steps where every rank decodes, normal otherwise)");
  p.add_switch("enable-dp-attention", &enable_dp_attention,
               "data-parallel attention: the TP ranks form --dp-size groups, each with its own scheduler, radix cache "
               "and KV cache, running attention TP over its tp-size / dp-size ranks; their tokens meet around "
               "every MLP / MoE, which stays split over all ranks");
  p.add("dp-size", &dp_size, "data-parallel size: DP-attention groups (with --enable-dp-attention; it must divide "
        "--tp-size)");
  p.alias("dp", "dp-size");
  p.add("speculative-algorithm", &speculative_algorithm,
        "NEXTN (or EAGLE): speculative decoding, drafting with the checkpoint's MTP layer and verifying the drafts "
        "in one target forward (greedy and seeded sampling give the tokens decoding without it gives)");
  p.add("speculative-draft-model-path", &speculative_draft_model_path,
        "a NextN checkpoint (SGLang's export: the target's config.json and its MTP layer as model.layers.<N>.*) whose "
        "layer drafts instead of the served checkpoint's own");
  p.alias("speculative-draft", "speculative-draft-model-path");  // SGLang's older names
  p.alias("speculative-algo", "speculative-algorithm");
  p.add("speculative-num-steps", &speculative_num_steps, "tokens drafted per sequence and step (0: 3)");
  p.add("speculative-eagle-topk", &speculative_eagle_topk,
        "drafts per node and round: 1 chain drafting, more a draft tree (on --device cuda without CUDA graphs) (0: 1)");
  p.add("speculative-num-draft-tokens", &speculative_num_draft_tokens,
        "tokens a verify step checks per sequence: --speculative-num-steps + 1 for a chain; a tree's nodes "
        "(0: 1 + steps x topk)");
  p.add("load-balance-method", &load_balance_method,
        "which DP rank a new request goes to: round_robin (in turn) or shortest_queue (the fewest running and "
        "waiting sequences)");
}

ParallelFlags ServerArgs::parallel_flags() const {
  ParallelFlags f;
  f.tp_size = tp_size;
  f.moe_a2a_backend = parse_moe_a2a_backend(moe_a2a_backend);
  f.deepep_mode = parse_deepep_mode(deepep_mode);
  // As SGLang: --enable-ep-moe and deepep put the experts over every TP rank unless --ep-size says otherwise (which
  // deepep then refuses).
  const bool whole_experts = enable_ep_moe || f.moe_a2a_backend == MoeA2aBackend::kDeepEp;
  f.ep_size = whole_experts && ep_size == 1 ? tp_size : ep_size;
  f.dp_size = dp_size;
  f.enable_dp_attention = enable_dp_attention;
  f.nnodes = nnodes;
  f.node_rank = node_rank;
  f.dist_init_addr = dist_init_addr;
  f.dist_timeout_s = dist_timeout;
  return f;
}

SpeculativeConfig ServerArgs::speculative_config() const {
  if (speculative_algorithm.empty()) return {};
  SpeculativeConfig c{speculative_num_steps > 0 ? speculative_num_steps : 3, speculative_draft_model_path};
  c.topk = speculative_eagle_topk > 0 ? speculative_eagle_topk : 1;
  // Default: what the rounds' frontiers hold (1 + steps x topk nodes), as SGLang's examples verify.
  c.num_draft_tokens = speculative_num_draft_tokens > 0 ? speculative_num_draft_tokens : 1 + c.num_steps * c.topk;
  return c;
}

EngineConfig ServerArgs::engine_config() const {
  EngineConfig config;
  config.context_length = context_length;
  config.schedule_policy = parse_schedule_policy(schedule_policy);
  config.max_running_requests = max_running_requests;
  config.chunked_prefill_size = rank_chunked_prefill_size();
  config.max_prefill_tokens = max_prefill_tokens;
  config.enable_mixed_chunk = enable_mixed_chunk;
  config.disable_overlap_schedule = disable_overlap_schedule;
  config.decode_log_interval = decode_log_interval;
  config.disable_radix_cache = disable_radix_cache;
  config.schedule_conservativeness = schedule_conservativeness;
  config.random_seed = static_cast<uint64_t>(random_seed);
  config.load_balance_method = parse_load_balance_method(load_balance_method);
  config.speculative_num_steps = speculative_config().num_steps;
  config.speculative_topk = speculative_config().topk;
  config.speculative_num_draft_tokens = speculative_config().num_draft_tokens;
  config.validate();
  return config;
}

int64_t ServerArgs::rank_chunked_prefill_size() const {
  if (!enable_dp_attention || dp_size <= 1 || chunked_prefill_size == -1) return chunked_prefill_size;
  return std::max<int64_t>(1, chunked_prefill_size / dp_size);
}

RunnerOptions ServerArgs::runner_options() const {
  RunnerOptions o{model_path, device, page_size, max_total_tokens, cpu_cache_bytes, mem_fraction_static};
  o.parallel = parallel_flags();
  o.load_format = load_format;
  o.cuda_graph_max_bs = cuda_graph_max_bs;
  o.disable_cuda_graph = disable_cuda_graph;
  o.speculative = speculative_config();
  // A step carries at most one prefill budget plus decode tokens (mixed chunks), or one decode token per
  // running request (at most 4096 when --max-running-requests is left to the engine); speculating, a decode is its
  // pending token and num_steps drafts (the GPU pads every one to that).
  // With DP attention each rank's share (the engine splits --max-running-requests over the ranks).
  const int dp = parallel_flags().dp_attention_groups();
  const int64_t per_decode = o.speculative.enabled() ? o.speculative.num_draft_tokens : 1;
  const int64_t max_running = (max_running_requests > 0 ? (max_running_requests + dp - 1) / dp : 4096) * per_decode;
  o.max_tokens_per_step = std::max({rank_chunked_prefill_size(), max_prefill_tokens, max_running}) +
                          std::max(cuda_graph_max_bs, kMaxAutoCudaGraphBs) * per_decode;
  return o;
}

void ServerArgs::register_server_flags(ArgParser& p) {
  p.add("host", &host, "address the HTTP server listens on");
  p.add("port", &port, "port the HTTP server listens on");
  p.add("api-key", &api_key, "when set, requests must send \"Authorization: Bearer KEY\"");
  p.add("served-model-name", &served_model_name, "model id the API reports and accepts (default: --model-path)");
  p.add("tokenizer-path", &tokenizer_path, "directory with tokenizer.json (default: --model-path)");
  p.add("chat-template", &chat_template, "Jinja chat template file overriding tokenizer_config.json's");
  p.add("reasoning-parser", &reasoning_parser, "split reasoning into reasoning_content: deepseek-r1");
  p.add("tool-call-parser", &tool_call_parser, "parse tool calls from the output: deepseekv3");
  p.add("max-request-body", &max_request_body, "largest request body in bytes (larger: 413, before it is read)");
  p.add("max-request-body-in-flight", &max_request_body_in_flight,
        "request body bytes all connections may have in reading, parsing and handling at once (beyond: 503); "
        "bounds the memory of large bodies");
  p.add("limit-concurrency", &limit_concurrency,
        "open connections at most; past it the longest-idle keep-alive connection is closed, or the new one gets "
        "503 (lowered to fit the file descriptor limit)");
  p.add("timeout-keep-alive", &timeout_keep_alive, "seconds an idle connection waits for its next request");
  p.add("timeout-request-head", &timeout_request_head,
        "seconds a client may take from a request's first byte to the end of its headers");
  p.add("min-request-body-rate", &min_request_body_rate,
        "bytes per second a request body must arrive at, after --timeout-request-head of grace (0: any rate)");
  p.add("max-queued-response-bytes", &max_queued_response_bytes,
        "unsent response bytes a connection may pile up; past it the client is too slow: request aborted, "
        "connection closed");
  p.add("http-threads", &http_threads, "threads doing HTTP I/O");
  p.add("max-sequences-per-request", &max_sequences_per_request,
        "most sequences one request may ask for: its prompts x n (larger: 400). Bounds the work and memory one "
        "small request can demand; 2048 is OpenAI's largest prompt batch with n = 1");
  p.add_switch("allow-auto-truncate", &allow_auto_truncate,
               "cut a prompt that leaves no room in the context for its completion (max_tokens, else one token) "
               "to fit, keeping its start, as SGLang does, instead of answering 400");
  p.add("drain-timeout", &drain_timeout, "seconds SIGTERM/SIGINT waits for in-flight requests before aborting them");
  p.add_switch("trust-remote-code", &trust_remote_code, "accepted for SGLang compatibility (narwhal runs no model code)");
  const char* kNoTorch = "narwhal is native code; there is no PyTorch to compile";
  p.add_unsupported("enable-torch-compile", kNoTorch);
  p.add_unsupported("torch-compile-max-bs", kNoTorch);
  p.add_unsupported("quantization", "the checkpoint's own dtype (BF16 or FP8 block-scaled) is used");
  p.add_unsupported("kv-cache-dtype", "the latent cache dtype is fixed");
  p.add_unsupported("disable-mla", "MLA is the only attention narwhal implements");
  p.add_unsupported("enable-flashinfer-mla", "narwhal has its own MLA kernels");
  p.add_unsupported("attention-backend", "narwhal has its own MLA kernels");
  p.add_unsupported("dtype", "activations are BF16 (GPU) or F32 (CPU), weights keep the checkpoint's dtype");
  p.add_unsupported("skip-tokenizer-init", "narwhal always serves text");
  p.add_unsupported("lora-paths", "LoRA adapters are not implemented");
  p.add_unsupported("grammar-backend", "narwhal has its own JSON Schema grammar (response_format json_object / "
                    "json_schema, /generate's json_schema); regex and EBNF constraints are not implemented");
}

void ServerArgs::validate_server() const {
  validate();
  NW_CHECK(port >= 0 && port <= 65535, "--port must be in [0, 65535], got ", port);
  NW_CHECK(max_request_body >= 1024, "--max-request-body must be at least 1024 bytes, got ", max_request_body);
  NW_CHECK(max_request_body_in_flight >= max_request_body, "--max-request-body-in-flight (", max_request_body_in_flight,
           ") must be at least --max-request-body (", max_request_body, ")");
  NW_CHECK(limit_concurrency >= 1, "--limit-concurrency must be at least 1, got ", limit_concurrency);
  NW_CHECK(timeout_keep_alive > 0, "--timeout-keep-alive must be positive, got ", timeout_keep_alive);
  NW_CHECK(timeout_request_head > 0, "--timeout-request-head must be positive, got ", timeout_request_head);
  NW_CHECK(min_request_body_rate >= 0, "--min-request-body-rate must be >= 0, got ", min_request_body_rate);
  NW_CHECK(max_queued_response_bytes >= 1024, "--max-queued-response-bytes must be at least 1024 bytes, got ",
           max_queued_response_bytes);
  NW_CHECK(http_threads >= 1 && http_threads <= 256, "--http-threads must be in [1, 256], got ", http_threads);
  NW_CHECK(max_sequences_per_request >= 1, "--max-sequences-per-request must be >= 1, got ",
           max_sequences_per_request);
  NW_CHECK(drain_timeout >= 0, "--drain-timeout must be >= 0, got ", drain_timeout);
  NW_CHECK(reasoning_parser.empty() || reasoning_parser == "deepseek-r1",
           "--reasoning-parser ", reasoning_parser, ": narwhal knows deepseek-r1");
  NW_CHECK(tool_call_parser.empty() || tool_call_parser == "deepseekv3",
           "--tool-call-parser ", tool_call_parser, ": narwhal knows deepseekv3");
}

void ServerArgs::validate() const {
  set_log_level(parse_log_level(log_level));
  NW_CHECK(!model_path.empty(), "--model-path is required");
  NW_CHECK(device == "cpu" || device == "cuda", "--device ", device, ": expected cuda or cpu");
  NW_CHECK(load_format == "auto" || load_format == "dummy", "--load-format ", load_format, ": expected auto or dummy");
  NW_CHECK(load_format == "auto" || device == "cuda", "--load-format dummy makes its random weights on the GPU: it "
           "needs --device cuda");
  NW_CHECK(cuda_graph_max_bs >= 0 && cuda_graph_max_bs <= 4096, "--cuda-graph-max-bs must be in [0, 4096], got ",
           cuda_graph_max_bs);
  NW_CHECK(page_size > 0 && page_size <= 4096, "--page-size must be in [1, 4096], got ", page_size);
  NW_CHECK(mem_fraction_static > 0.0 && mem_fraction_static < 1.0, "--mem-fraction-static must be in (0, 1), got ",
           mem_fraction_static);
  NW_CHECK(cpu_cache_bytes > 0, "--cpu-cache-bytes must be positive, got ", cpu_cache_bytes);
  NW_CHECK(max_total_tokens >= 0, "--max-total-tokens must be >= 0 (0 = from the memory budget), got ",
           max_total_tokens);
  engine_config();  // checks the scheduling flags
  NW_CHECK(dp_size == 1 || enable_dp_attention, "--dp-size ", dp_size, " without --enable-dp-attention asks for "
           "data-parallel replicas, which narwhal does not run yet: add --enable-dp-attention (DP groups inside the "
           "--tp-size ranks), or start one server per replica behind a load balancer");
  ParallelConfig::validate(parallel_flags());
  validate_speculative();
}

void ServerArgs::validate_speculative() const {
  const std::string& a = speculative_algorithm;
  NW_CHECK(a.empty() || a == "NEXTN" || a == "EAGLE", "--speculative-algorithm ", a, ": narwhal drafts with the "
           "checkpoint's MTP layer: NEXTN (or EAGLE, the same here)");
  if (a.empty()) {
    NW_CHECK(speculative_num_steps == 0 && speculative_eagle_topk == 0 && speculative_num_draft_tokens == 0 &&
                 speculative_draft_model_path.empty(),
             "--speculative-num-steps / --speculative-eagle-topk / --speculative-num-draft-tokens / "
             "--speculative-draft-model-path need --speculative-algorithm NEXTN");
    return;
  }
  NW_CHECK(speculative_draft_model_path.empty() || load_format != "dummy", "--speculative-draft-model-path is not read "
           "with --load-format dummy, whose random weights make a random MTP layer");
  const int steps = speculative_config().num_steps;
  NW_CHECK(steps >= 1 && steps <= 8, "--speculative-num-steps must be in [1, 8], got ", speculative_num_steps);
  const SpeculativeConfig c = speculative_config();
  NW_CHECK(c.topk >= 1 && c.topk <= 8, "--speculative-eagle-topk must be in [1, 8], got ", speculative_eagle_topk);
  if (!c.tree()) {
    NW_CHECK(speculative_num_draft_tokens == 0 || speculative_num_draft_tokens == steps + 1,
             "--speculative-num-draft-tokens ", speculative_num_draft_tokens, ": with chain drafting a verify checks "
             "the pending token and its ", steps, " drafts, so it is --speculative-num-steps + 1 = ", steps + 1);
  } else {
    const int candidates = c.topk + (steps - 1) * c.topk * c.topk;
    NW_CHECK(c.num_draft_tokens >= 2 && c.num_draft_tokens <= 1 + candidates,
             "--speculative-num-draft-tokens ", c.num_draft_tokens, " with --speculative-eagle-topk ", c.topk, " and ",
             steps, " steps: a tree has at most 1 + ", candidates, " nodes (the pending token and the candidates)");
  }
  if (device == "cuda") {  // what CudaModelRunner's speculation does not take yet
    const int64_t most = ops::cuda::kMlaDecodeMaxQLen;
    NW_CHECK(steps + 1 <= most, "--speculative-num-steps ", steps, " on --device cuda: the GPU verifies the pending "
             "token and its drafts in one decode-kernel call of at most ", most, " tokens per sequence, so at most ",
             most - 1, " steps (--device cpu takes up to 8)");
    NW_CHECK(!c.tree() || (c.num_draft_tokens <= most && (steps - 1) * c.topk <= most), "--speculative-num-draft-tokens ",
             c.num_draft_tokens, " with --speculative-eagle-topk ", c.topk, " and ", steps, " steps on --device cuda: "
             "the decode kernel takes at most ", most, " tokens per sequence, in the verify (the draft tokens) and in a "
             "draft round (topk x (steps - 1) candidates); --device cpu takes more");
  }
  NW_CHECK(nnodes == 1, "--speculative-algorithm with --nnodes ", nnodes, ": every rank draws the drafts' tokens, "
           "and the requests' sampling state does not travel to other nodes yet");
}

}  // namespace narwhal
