// Sequence: the engine's state of one choice of one request (tokens, cache pages, sampling state).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "runtime/json_grammar.h"
#include "runtime/output_text.h"
#include "runtime/request.h"
#include "runtime/sampler.h"

namespace narwhal {

struct RequestState;

// A sequence is its tokens (prompt, then output) and how many of them have latents in the cache
// (kv_len). Each step feeds tokens[kv_len, kv_len + n): a prefill chunk, a decode step (the one pending
// token), or a re-prefill after retraction are all this. When kv_len reaches tokens.size() the step's
// logits pick the next token. `pages` holds one KvPool reference per page and covers kv_len positions.
struct Sequence {
  RequestState* request = nullptr;
  int index = 0;                  // choice index within the request
  uint64_t group = 0;             // its request's fairness group (RequestInput::fairness_group, else the request id)
  std::vector<int32_t> tokens;
  int64_t prompt_len = 0;
  int64_t kv_len = 0;
  std::vector<int32_t> pages;
  int64_t max_new_tokens = 0;     // after clipping to the context and the cache
  uint64_t seed = 0;
  int forks = 1;                  // > 1: the prompt's owner; the request's other choices split off it when the prompt is done
  bool admitted = false;          // has held pages before (a retracted sequence comes back with this set)
  bool finished = false;
  int64_t cached_tokens = 0;      // prompt tokens its first admission found in the prefix cache
  int64_t spec_verifies = 0;      // its decode steps that verified drafts (SGLang's spec_verify_ct)
  // Output tokens handed out so far (completion_tokens): behind output_len() while accepted tokens wait for
  // flush_outputs, and for good where a stop string ends the sequence before a speculative step's later tokens.
  int64_t emitted = 0;
  TokenCounts output_counts;
  OutputText text;
  // Speculative decoding: tokens the draft model proposes after the pending one, verified by the next decode step
  // (and dropped when the sequence leaves the running batch).
  std::vector<int32_t> draft;
  // Tree drafting: each draft's parent in the verify's tree (0: the pending token; draft i is node i + 1); empty for
  // a chain.
  std::vector<int32_t> draft_parents;
  // Structured output: where its output stands in the request's grammar, and the ids that grammar bans next.
  std::optional<JsonMatcher> grammar;
  bool grammar_waits = false;  // until SamplingParams::grammar_after_token comes
  std::vector<int32_t> grammar_mask;

  int64_t output_len() const { return static_cast<int64_t>(tokens.size()) - prompt_len; }
  // Tokens still to be fed before the next token can be sampled.
  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - kv_len; }
  // Tokens it may still generate (counting every choice it will fork into).
  int64_t remaining_new_tokens() const { return forks * (max_new_tokens - output_len()); }
};

}  // namespace narwhal
