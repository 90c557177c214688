// GenerationJob: context checks, submission, output bookkeeping, usage, and the end of the response.
#include "server/generation_job.h"

#include <algorithm>

#include "core/error.h"
#include "core/logging.h"

namespace narwhal::server {

namespace {

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

GenerationJob::GenerationJob(ServerContext& context, std::shared_ptr<Responder> responder, GenerationOptions options,
                             std::vector<std::vector<int32_t>> prompts, const char* id_prefix)
    : context_(context),
      responder_(std::move(responder)),
      options_(std::move(options)),
      prompts_(std::move(prompts)),
      id_(random_id(id_prefix)),
      created_(unix_seconds()),
      choices_(prompts_.size() * static_cast<size_t>(options_.params.n)),
      request_ids_(prompts_.size(), 0),
      prompt_started_(prompts_.size(), false),
      prompt_tokens_(prompts_.size(), 0),
      cached_tokens_(prompts_.size(), 0),
      last_output_at_(prompts_.size()) {}

void check_fan_out(const ServerContext& context, size_t prompts, int n) {
  const int64_t limit = context.options.max_sequences_per_request;
  const int64_t sequences = static_cast<int64_t>(prompts) * n;
  if (sequences <= limit) return;
  throw invalid_request(cat("This request asks for ", prompts, " prompt(s) x ", n, " choice(s) = ", sequences,
                            " sequences; the server allows at most ", limit,
                            " per request (--max-sequences-per-request). Send fewer prompts or a smaller 'n'."),
                        prompts > 1 ? "prompt" : "n", "invalid_value");
}

PromptFit fit_to_context(int64_t prompt_len, int64_t context, std::optional<int64_t> max_tokens,
                         bool allow_auto_truncate) {
  const int64_t room = context - prompt_len;
  if (room > 0 && (!max_tokens || *max_tokens <= room)) return {prompt_len, max_tokens};
  if (!allow_auto_truncate || context < 2) {  // a context of one token holds no prompt and completion
    const int64_t asked = prompt_len + max_tokens.value_or(0);
    throw invalid_request(cat("This model's maximum context length is ", context, " tokens. However, you requested ",
                              asked, " tokens (", prompt_len, " in the prompt, ", asked - prompt_len,
                              " in the completion). Please reduce the length of the prompt or completion."),
                          "messages", "context_length_exceeded");
  }
  // SGLang's rule: a prompt with no room left keeps its first tokens, leaving the completion it asks for (at
  // least one token, at most all but one of the context); a completion past the room left is clipped to it.
  if (room <= 0) {
    const int64_t reserve = std::clamp<int64_t>(max_tokens.value_or(1), 1, context - 1);
    return {context - reserve, max_tokens ? std::optional<int64_t>(reserve) : std::nullopt};
  }
  return {prompt_len, room};
}

void GenerationJob::start() {
  const int64_t context = context_.context_length;
  std::vector<SamplingParams> params(prompts_.size(), options_.params);
  std::vector<int64_t> kept(prompts_.size());
  for (size_t i = 0; i < prompts_.size(); ++i) {
    const int64_t len = static_cast<int64_t>(prompts_[i].size());
    const std::optional<int64_t> asked =
        options_.max_tokens_given ? std::optional<int64_t>(options_.params.max_new_tokens) : std::nullopt;
    const PromptFit fit = fit_to_context(len, context, asked, context_.options.allow_auto_truncate);
    kept[i] = fit.prompt_len;
    if (fit.prompt_len < len) {
      NW_LOG(Warning) << "The prompt (" << len << " tokens) leaves no room in the context (" << context
                      << " tokens): its first " << fit.prompt_len << " tokens are kept (--allow-auto-truncate)";
    }
    // A limit the client did not set (a default, or none) is clipped to the room left, as SGLang does; the
    // choice then ends with finish_reason "length" where the room runs out.
    params[i].max_new_tokens = fit.max_tokens.value_or(std::min(params[i].max_new_tokens, context - fit.prompt_len));
  }

  std::lock_guard<std::mutex> lock(mutex_);  // outputs wait until every id is recorded
  unfinished_ = static_cast<int>(choices_.size());
  submitted_at_ = std::chrono::steady_clock::now();
  std::weak_ptr<GenerationJob> weak = weak_from_this();
  for (size_t i = 0; i < prompts_.size(); ++i) {
    RequestInput input;
    input.input_ids.assign(prompts_[i].begin(), prompts_[i].begin() + kept[i]);
    input.params = params[i];
    input.return_logprob = options_.logprobs;
    input.top_logprobs_num = options_.top_logprobs;
    input.fairness_group = i == 0 ? 0 : request_ids_[0];  // all prompts of this request share one fair share
    // Called on the engine loop: the chunk is built and written on an output worker (this job's, in order).
    input.on_output = [self = shared_from_this(), i](RequestOutput&& out) {
      GenerationJob* job = self.get();
      job->context_.outputs.post(reinterpret_cast<uintptr_t>(job) >> 4,
                                 [self, i, out = std::move(out)]() mutable { self->on_output(i, std::move(out)); });
    };
    try {
      request_ids_[i] = context_.engine.submit(std::move(input));
    } catch (const Error& e) {
      abort_submitted();
      throw invalid_request(e.what());
    }
    context_.track(request_ids_[i]);
    context_.metrics.request_submitted();
  }
  responder_->on_disconnect([weak] {
    if (auto self = weak.lock()) {
      std::lock_guard<std::mutex> lock(self->mutex_);
      self->abort_submitted();
    }
  });
  if (options_.stream) {
    responder_->start_stream("text/event-stream");
    on_stream_start();
  }
}

void GenerationJob::abort_submitted() {
  for (uint64_t id : request_ids_)
    if (id != 0) context_.engine.abort(id);
}

void GenerationJob::on_output(size_t prompt, RequestOutput&& out) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  if (!prompt_started_[prompt]) {
    prompt_started_[prompt] = true;
    context_.metrics.first_output(seconds_between(submitted_at_, now));
  } else if (!out.token_ids.empty()) {
    context_.metrics.inter_token(seconds_between(last_output_at_[prompt], now) /
                                 static_cast<double>(out.token_ids.size()));
  }
  last_output_at_[prompt] = now;
  prompt_tokens_[prompt] = out.prompt_tokens;
  cached_tokens_[prompt] = std::max(cached_tokens_[prompt], out.cached_tokens);

  const int choice_index = static_cast<int>(prompt) * options_.params.n + out.index;
  ChoiceState& choice = choices_[static_cast<size_t>(choice_index)];
  choice.text += out.text;
  choice.token_ids.insert(choice.token_ids.end(), out.token_ids.begin(), out.token_ids.end());
  choice.logprobs.insert(choice.logprobs.end(), out.logprobs.begin(), out.logprobs.end());
  choice.completion_tokens = out.completion_tokens;
  choice.spec_verify_ct = out.spec_verify_ct;
  if (out.finish) choice.finish = out.finish;
  on_delta(choice_index, out.text, out);
  if (!out.finish) return;

  bool prompt_done = true;
  for (int c = 0; c < options_.params.n; ++c)
    prompt_done = prompt_done && choices_[prompt * static_cast<size_t>(options_.params.n) + c].finish.has_value();
  if (prompt_done) {
    context_.untrack(request_ids_[prompt]);
    context_.metrics.request_finished(true, seconds_between(submitted_at_, now));
  }
  if (--unfinished_ == 0) finish();
}

void GenerationJob::finish() {
  if (!options_.stream) {
    responder_->respond(200, "application/json", dump_json(final_response()));
    return;
  }
  if (options_.include_usage) {
    json chunk = base(chunk_object());
    chunk["choices"] = json::array();
    chunk["usage"] = usage();
    send_chunk(chunk);
  }
  responder_->write("data: [DONE]\n\n");
  responder_->end_stream();
}

void GenerationJob::send_chunk(const json& chunk) {
  if (options_.include_usage && !chunk.contains("usage")) {
    json with_usage = chunk;
    with_usage["usage"] = nullptr;  // as OpenAI: every chunk but the last has "usage": null
    responder_->write("data: " + dump_json(with_usage) + "\n\n");
    return;
  }
  responder_->write("data: " + dump_json(chunk) + "\n\n");
}

int64_t GenerationJob::cached_tokens() const {
  int64_t cached = 0;
  for (int64_t c : cached_tokens_) cached += c;
  return cached;
}

json GenerationJob::usage() const {
  int64_t prompt = 0, completion = 0;
  for (int64_t p : prompt_tokens_) prompt += p;
  for (const ChoiceState& c : choices_) completion += c.completion_tokens;
  const int64_t cached = cached_tokens();
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json GenerationJob::base(const char* object) const {
  json j = {{"id", id_}, {"object", object}, {"created", created_}, {"model", context_.options.model_name}};
  return j;
}

const char* GenerationJob::finish_reason_name(const FinishReason& finish) {
  switch (finish.kind) {
    case FinishReason::Kind::kStop: return "stop";
    case FinishReason::Kind::kLength: return "length";
    case FinishReason::Kind::kAbort: return "abort";
  }
  return "stop";
}

}  // namespace narwhal::server
