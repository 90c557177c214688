// /generate (SGLang's native API: text or input_ids, sampling_params, stream) and the info endpoints.
#include "server/native_api.h"

#include "core/error.h"
#include "server/generation_job.h"
#include "server/native_protocol.h"

namespace narwhal::server {

namespace {

// SGLang's output: {"text", "output_ids", "meta_info"}; streamed, every event carries the text so far.
class NativeJob : public GenerationJob {
 public:
  using GenerationJob::GenerationJob;

 protected:
  const char* chunk_object() const override { return "generate"; }

  void on_delta(int choice, const std::string&, const RequestOutput& output) override {
    if (!options_.stream) return;
    json event = result(static_cast<size_t>(choice));
    event["index"] = choice;
    responder_->write("data: " + dump_json(event) + "\n\n");
  }

  json final_response() override {
    if (choices_.size() == 1) return result(0);
    json all = json::array();
    for (size_t i = 0; i < choices_.size(); ++i) all.push_back(result(i));
    return all;
  }

 private:
  json result(size_t i) const {
    const ChoiceState& c = choices_[i];
    json meta = {{"id", id_},
                 {"prompt_tokens", prompt_tokens(0)},
                 {"completion_tokens", c.completion_tokens},
                 {"cached_tokens", cached_tokens()},
                 {"finish_reason", c.finish ? c.finish->to_json(c.completion_tokens) : json(nullptr)}};
    // As SGLang when it speculates: the verify steps, from which clients (its bench_speculative) get the accept length.
    if (context_.engine.speculating()) meta["spec_verify_ct"] = c.spec_verify_ct;
    if (options_.logprobs) {
      json lp = json::array();
      for (const SampledToken& t : c.logprobs) lp.push_back({t.logprob, t.token, nullptr});
      meta["output_token_logprobs"] = std::move(lp);
    }
    return {{"text", c.text}, {"output_ids", c.token_ids}, {"meta_info", std::move(meta)}};
  }
};

}  // namespace

void handle_generate(ServerContext& context, const HttpRequest& request, std::shared_ptr<Responder> responder) {
  GenerateRequest parsed = parse_generate_request(parse_body(request));
  check_fan_out(context, 1, parsed.options.params.n);
  std::vector<int32_t> ids = std::move(parsed.input_ids);
  if (parsed.text) {
    try {
      for (int id : context.tokenizer.encode(*parsed.text, true)) ids.push_back(id);
    } catch (const std::exception& e) {
      throw invalid_request(std::string("Invalid 'text': ") + e.what(), "text");
    }
    if (ids.empty()) throw invalid_request("The prompt is empty.", "text", "empty_array");
  }
  auto job = std::make_shared<NativeJob>(context, std::move(responder), std::move(parsed.options),
                                         std::vector<std::vector<int32_t>>{std::move(ids)}, "");
  job->start();
}

json models_response(const ServerContext& context) {
  return {{"object", "list"},
          {"data", json::array({{{"id", context.options.model_name},
                                 {"object", "model"},
                                 {"created", context.started_at},
                                 {"owned_by", "narwhal"},
                                 {"root", context.options.model_path},
                                 {"max_model_len", context.context_length}}})}};
}

json model_info(const ServerContext& context) {
  return {{"model_path", context.options.model_path},
          {"vocab_size", context.engine.model_config().vocab_size},
          {"tokenizer_path", context.options.tokenizer_path},
          {"is_generation", true},
          {"served_model_name", context.options.model_name},
          {"context_length", context.context_length}};
}

json server_info(const ServerContext& context) {
  const EngineStats& s = context.engine.stats();
  // SGLang's scheduler state, as its bench_serving and bench_one_batch_server read it: the mean accept length of a
  // speculating server (0 before any verify; absent without speculation).
  json state = json::object();
  if (context.engine.speculating()) state["avg_spec_accept_length"] = s.spec_accept_length();
  return {{"model_path", context.options.model_path},
          {"served_model_name", context.options.model_name},
          {"context_length", context.context_length},
          {"max_running_requests", context.engine.max_running_requests()},
          {"reasoning_parser", context.options.reasoning_parser},
          {"tool_call_parser", context.options.tool_call_parser},
          {"num_running_reqs", context.metrics.running()},
          {"num_queue_reqs", context.metrics.queued()},
          {"prompt_tokens_total", s.prompt_tokens.load()},
          {"generation_tokens_total", s.generated_tokens.load()},
          {"internal_states", json::array({state})},
          {"version", "narwhal"}};
}

}  // namespace narwhal::server
