// Completions: prompts (text tokenized with BOS, or ids) through a GenerationJob, OpenAI's text_completion format.
#include "server/completions.h"

#include "server/generation_job.h"
#include "server/openai_logprobs.h"

namespace narwhal::server {

namespace {

class CompletionJob : public GenerationJob {
 public:
  CompletionJob(ServerContext& context, std::shared_ptr<Responder> responder, CompletionRequest request,
                std::vector<std::vector<int32_t>> prompts, std::vector<std::string> prompt_texts)
      : GenerationJob(context, std::move(responder), request.options, std::move(prompts), "cmpl-"),
        echo_(request.echo),
        prompt_texts_(std::move(prompt_texts)),
        logprobs_sent_(choices_.size(), 0),
        echoed_(choices_.size(), false) {}

 protected:
  const char* chunk_object() const override { return "text_completion"; }

  void on_delta(int choice, const std::string& delta, const RequestOutput& output) override {
    if (!options_.stream) return;
    std::string text = delta;
    if (echo_ && !echoed_[choice]) {
      text = prompt_text(choice) + text;
      echoed_[choice] = true;
    }
    const ChoiceState& state = choices_[choice];
    if (text.empty() && !output.finish && state.logprobs.size() == logprobs_sent_[choice]) return;
    json c = {{"index", choice}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
    if (options_.logprobs) {
      const int64_t offset = count_characters(echo_ ? prompt_text(choice) : "") +
                             count_characters(state.text) - count_characters(delta);
      c["logprobs"] = completion_logprobs(context_.tokenizer, state.logprobs, logprobs_sent_[choice], offset);
      logprobs_sent_[choice] = state.logprobs.size();
    }
    if (output.finish) c["finish_reason"] = finish_reason_name(*output.finish);
    json chunk = base(chunk_object());
    chunk["choices"] = json::array({std::move(c)});
    send_chunk(chunk);
  }

  json final_response() override {
    json out = base("text_completion");
    json choices = json::array();
    for (size_t i = 0; i < choices_.size(); ++i) {
      const ChoiceState& state = choices_[i];
      const std::string prefix = echo_ ? prompt_text(static_cast<int>(i)) : "";
      json c = {{"index", i}, {"text", prefix + state.text}, {"logprobs", nullptr},
                {"finish_reason", state.finish ? json(finish_reason_name(*state.finish)) : json(nullptr)}};
      if (options_.logprobs)
        c["logprobs"] = completion_logprobs(context_.tokenizer, state.logprobs, 0, count_characters(prefix));
      choices.push_back(std::move(c));
    }
    out["choices"] = std::move(choices);
    out["usage"] = usage();
    return out;
  }

 private:
  const std::string& prompt_text(int choice) const {
    return prompt_texts_[static_cast<size_t>(choice / options_.params.n)];
  }

  bool echo_;
  std::vector<std::string> prompt_texts_;  // per prompt, for echo
  std::vector<size_t> logprobs_sent_;
  std::vector<bool> echoed_;
};

}  // namespace

void check_model(const ServerContext& context, const std::string& model) {
  if (!model.empty() && model != context.options.model_name)
    throw not_found("The model `" + model + "` does not exist or you do not have access to it.", "model",
                    "model_not_found");
}

void handle_completions(ServerContext& context, const HttpRequest& request, std::shared_ptr<Responder> responder) {
  CompletionRequest parsed = parse_completion_request(parse_body(request));
  check_model(context, parsed.options.model);
  check_fan_out(context, parsed.prompts.size(), parsed.options.params.n);
  if (parsed.echo && parsed.options.logprobs)
    throw invalid_request("'echo' with 'logprobs' (prompt logprobs) is not supported by narwhal.", "echo",
                          "unsupported_parameter");
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> texts;
  for (const CompletionPrompt& p : parsed.prompts) {
    if (p.text) {
      std::vector<int> ids;
      try {
        ids = context.tokenizer.encode(*p.text, true);
      } catch (const std::exception& e) {
        throw invalid_request(std::string("Invalid 'prompt': ") + e.what(), "prompt");
      }
      prompts.emplace_back(ids.begin(), ids.end());
      texts.push_back(*p.text);
    } else {
      prompts.push_back(p.ids);
      texts.push_back(context.tokenizer.decode(std::vector<int>(p.ids.begin(), p.ids.end()), true));
    }
  }
  auto job = std::make_shared<CompletionJob>(context, std::move(responder), std::move(parsed), std::move(prompts),
                                             std::move(texts));
  job->start();
}

}  // namespace narwhal::server
