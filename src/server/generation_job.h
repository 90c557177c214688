// GenerationJob: one API request's engine requests (one per prompt, n choices each), streamed or gathered.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/http_server.h"
#include "server/openai_protocol.h"
#include "server/server_context.h"

namespace narwhal::server {

// 400 when `prompts` x `n` exceeds --max-sequences-per-request. Handlers call it right after parsing, before
// tokenizing the prompts or making room for the choices.
void check_fan_out(const ServerContext& context, size_t prompts, int n);

// How a prompt of `prompt_len` tokens and its completion (max_tokens when the client set it) fit the context:
// unchanged, or with --allow-auto-truncate the prompt's first tokens and a clipped max_tokens. Without it, a prompt
// that leaves no room, or a max_tokens past the room left, is a 400 (context_length_exceeded).
struct PromptFit {
  int64_t prompt_len;
  std::optional<int64_t> max_tokens;  // the client's limit, clipped; none where it set none
};
PromptFit fit_to_context(int64_t prompt_len, int64_t context, std::optional<int64_t> max_tokens,
                         bool allow_auto_truncate);

// Everything one choice produced so far.
struct ChoiceState {
  std::string text;                      // all text so far
  std::vector<int32_t> token_ids;
  std::vector<SampledToken> logprobs;
  std::optional<FinishReason> finish;
  int64_t completion_tokens = 0;
  int64_t spec_verify_ct = 0;  // speculating: the choice's verify steps (completion_tokens / it: its accept length)
};

// The engine side is shared; subclasses say how outputs become OpenAI chunks and the final body.
// Outputs leave the engine's loop thread at once and are handled on an output worker, under the job's mutex.
class GenerationJob : public std::enable_shared_from_this<GenerationJob> {
 public:
  GenerationJob(ServerContext& context, std::shared_ptr<Responder> responder, GenerationOptions options,
                std::vector<std::vector<int32_t>> prompts, const char* id_prefix);
  virtual ~GenerationJob() = default;

  // Checks the prompts against the context (400 on failure, nothing submitted), then submits every prompt.
  // Throws ApiError; after it returns the job answers the client by itself.
  void start();

 protected:
  // A choice's new tokens and text (`delta` already appended to choice.text). Streaming subclasses write chunks.
  virtual void on_delta(int choice, const std::string& delta, const RequestOutput& output) = 0;
  // Streaming only: the chunks sent before any output (chat's role chunks).
  virtual void on_stream_start() {}
  // The non-streamed response body, once every choice finished.
  virtual json final_response() = 0;
  // The "object" of streamed chunks ("chat.completion.chunk", "text_completion").
  virtual const char* chunk_object() const = 0;

  void send_chunk(const json& chunk);
  json usage() const;
  int64_t prompt_tokens(size_t prompt) const { return prompt_tokens_[prompt]; }  // as submitted (maybe truncated)
  int64_t cached_tokens() const;  // of every prompt, found in the prefix cache
  json base(const char* object) const;  // id, object, created, model
  static const char* finish_reason_name(const FinishReason& finish);

  ServerContext& context_;
  std::shared_ptr<Responder> responder_;
  const GenerationOptions options_;
  const std::vector<std::vector<int32_t>> prompts_;
  const std::string id_;
  const int64_t created_;
  std::vector<ChoiceState> choices_;  // prompt * n + index

 private:
  void on_output(size_t prompt, RequestOutput&& output);
  void finish();
  void abort_submitted();

  std::mutex mutex_;
  std::vector<uint64_t> request_ids_;  // per prompt
  std::vector<bool> prompt_started_;
  std::vector<int64_t> prompt_tokens_, cached_tokens_;
  std::chrono::steady_clock::time_point submitted_at_;
  std::vector<std::chrono::steady_clock::time_point> last_output_at_;  // per prompt
  int unfinished_ = 0;
};

}  // namespace narwhal::server
