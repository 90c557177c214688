// `narwhal generate`: runs one or several prompts (token ids or text) through the Engine and prints JSON.
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/server_args.h"
#include "cli/tokenizer_token_text.h"
#include "core/error.h"
#include "core/json.h"
#include "core/logging.h"
#include "runtime/engine.h"
#include "runtime/model_runner_factory.h"
#include "text/tokenizer.h"

namespace narwhal {

namespace {

struct GenerateFlags {
  std::vector<std::string> input_ids;
  std::optional<std::string> input_ids_file;
  std::vector<std::string> texts;
  int64_t max_new_tokens = 16;
  int64_t min_new_tokens = 0;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = -1;
  double min_p = 0.0;
  double frequency_penalty = 0.0;
  double presence_penalty = 0.0;
  double repetition_penalty = 1.0;
  int64_t seed = -1;
  int n = 1;
  std::vector<std::string> stop;
  std::string stop_token_ids;
  bool ignore_eos = false;
  bool json = false;
  bool return_logits = false;
  bool return_logprob = false;
  int top_logprobs_num = 0;
};

constexpr const char* kSummary =
    "Generates tokens for prompts given as token ids (--input-ids, repeatable; --input-ids-file) or as text\n"
    "(--text, repeatable; tokenized with the model directory's tokenizer), all in one continuous batch\n"
    "through the engine, and prints the outputs.\n\n"
    "With --json and one prompt (n = 1) it prints one object {\"output_ids\": [...]}, plus \"logits\" with\n"
    "--return-logits (one full-vocabulary row per generated token, row 0 = the last prompt position), \"text\"\n"
    "when a tokenizer is loaded (--text or --stop) and \"logprobs\" when asked for. With several prompts or\n"
    "--n > 1 it prints one such object per line for every prompt and choice, in prompt order (--input-ids,\n"
    "then --input-ids-file, then --text), adding \"prompt_index\", \"index\" (the choice), \"finish_reason\",\n"
    "\"prompt_tokens\" and \"cached_tokens\" (prompt tokens found in the prefix cache).";

void register_generate_flags(ArgParser& p, GenerateFlags& f) {
  p.add("input-ids", &f.input_ids, "prompt token ids, comma-separated, e.g. 5,17,42");
  p.add("input-ids-file", &f.input_ids_file, "JSONL: one prompt per line, a list of ids or {\"input_ids\": [...]}");
  p.add("text", &f.texts, "prompt text, tokenized with the tokenizer in --model-path (BOS added as it says)");
  p.add("max-new-tokens", &f.max_new_tokens, "tokens to generate at most per choice");
  p.add("min-new-tokens", &f.min_new_tokens, "stop tokens cannot end a choice before this many tokens");
  p.add("temperature", &f.temperature, "sampling temperature; 0 = greedy");
  p.add("top-p", &f.top_p, "sample from the smallest set of tokens holding this probability mass");
  p.add("top-k", &f.top_k, "sample from the k most likely tokens (-1: all)");
  p.add("min-p", &f.min_p, "drop tokens less likely than min-p times the most likely one");
  p.add("frequency-penalty", &f.frequency_penalty, "subtracted from a token's logit per earlier occurrence");
  p.add("presence-penalty", &f.presence_penalty, "subtracted once from the logit of every token already generated");
  p.add("repetition-penalty", &f.repetition_penalty, "divides (positive) or multiplies (negative) generated tokens' logits");
  p.add("seed", &f.seed, "sampling seed of every prompt (-1: derived from --random-seed and the request)");
  p.add("n", &f.n, "choices per prompt; they share the prompt's KV cache");
  p.add("stop", &f.stop, "stop string (needs the tokenizer)");
  p.add("stop-token-ids", &f.stop_token_ids, "comma-separated token ids that end a choice");
  p.add_switch("ignore-eos", &f.ignore_eos, "keep generating after an end-of-sequence token");
  p.add_switch("json", &f.json, "print JSON (see above)");
  p.add_switch("return-logits", &f.return_logits,
               "with --json, add \"logits\": per generated token the full-vocabulary logits it was chosen from");
  p.add_switch("return-logprob", &f.return_logprob, "with --json, add \"logprobs\": each token's log probability");
  p.add("top-logprobs-num", &f.top_logprobs_num, "with --json, also the most likely tokens' logprobs at each step");
}

std::vector<std::vector<int32_t>> read_ids_file(const std::string& path) {
  std::vector<std::vector<int32_t>> prompts;
  std::istringstream lines(read_text_file(path));
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      json value = json::parse(line);
      if (value.is_object()) value = value.at("input_ids");
      prompts.push_back(value.get<std::vector<int32_t>>());
    } catch (const json::exception& e) {
      throw Error(cat(path, ":", number, ": expected a list of token ids or {\"input_ids\": [...]} (", e.what(), ")"));
    }
  }
  return prompts;
}

SamplingParams sampling_params(const GenerateFlags& f) {
  SamplingParams p;
  p.max_new_tokens = f.max_new_tokens;
  p.min_new_tokens = f.min_new_tokens;
  p.temperature = f.temperature;
  p.top_p = f.top_p;
  p.top_k = f.top_k;
  p.min_p = f.min_p;
  p.frequency_penalty = f.frequency_penalty;
  p.presence_penalty = f.presence_penalty;
  p.repetition_penalty = f.repetition_penalty;
  if (f.seed >= 0) p.seed = static_cast<uint64_t>(f.seed);
  p.n = f.n;
  p.ignore_eos = f.ignore_eos;
  p.stop = f.stop;
  if (!f.stop_token_ids.empty())
    for (int id : parse_id_list(f.stop_token_ids, "stop-token-ids")) p.stop_token_ids.push_back(id);
  p.validate();
  return p;
}

// Everything one choice produced, gathered from its streamed outputs.
struct ChoiceResult {
  std::vector<int32_t> ids;
  std::string text;
  std::vector<SampledToken> logprobs;
  std::vector<std::vector<float>> logits;
  std::optional<FinishReason> finish;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
};

void append_float_row(std::string& out, const std::vector<float>& row) {
  char buf[32];
  out += '[';
  for (size_t i = 0; i < row.size(); ++i) {
    // %.9g round-trips every float32 exactly.
    int len = std::snprintf(buf, sizeof buf, "%s%.9g", i ? "," : "", static_cast<double>(row[i]));
    out.append(buf, static_cast<size_t>(len));
  }
  out += ']';
}

json logprobs_json(const std::vector<SampledToken>& tokens) {
  json out = json::array();
  for (const SampledToken& t : tokens) {
    json top = json::array();
    for (const TokenLogprob& alt : t.top) top.push_back({{"token", alt.token}, {"logprob", alt.logprob}});
    out.push_back({{"token", t.token}, {"logprob", t.logprob}, {"top_logprobs", std::move(top)}});
  }
  return out;
}

std::string choice_json(const ChoiceResult& c, const GenerateFlags& f, bool has_text, std::optional<json> batch_fields) {
  json j = {{"output_ids", c.ids}};
  if (has_text) j["text"] = c.text;
  if (f.return_logprob || f.top_logprobs_num > 0) j["logprobs"] = logprobs_json(c.logprobs);
  if (batch_fields) j.update(*batch_fields);
  // Invalid UTF-8 (random models, cut multi-byte characters) is replaced, not an error.
  std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (f.return_logits) {
    // Written by hand: %.9g keeps every float32 exact, where json would print the widened double.
    std::string rows;
    for (const std::vector<float>& row : c.logits) {
      rows += rows.empty() ? "" : ",";
      append_float_row(rows, row);
    }
    line.insert(line.size() - 1, ",\"logits\":[" + rows + "]");
  }
  return line + "\n";
}

}  // namespace

int run_generate(int argc, char** argv) {
  ServerArgs args;
  GenerateFlags f;
  ArgParser parser("generate", kSummary);
  args.register_flags(parser);
  register_generate_flags(parser, f);
  if (!parser.parse(argc, argv, 2)) return 0;
  args.validate();
  NW_CHECK(!(f.return_logits || f.return_logprob || f.top_logprobs_num > 0) || f.json,
           "--return-logits, --return-logprob and --top-logprobs-num need --json");

  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& ids : f.input_ids) {
    std::vector<int> parsed = parse_id_list(ids, "input-ids");
    prompts.emplace_back(parsed.begin(), parsed.end());
  }
  if (f.input_ids_file)
    for (auto& ids : read_ids_file(*f.input_ids_file)) prompts.push_back(std::move(ids));
  std::unique_ptr<text::Tokenizer> tokenizer;
  std::unique_ptr<TokenizerTokenText> token_text;
  if (!f.texts.empty() || !f.stop.empty()) {
    tokenizer = std::make_unique<text::Tokenizer>(args.tokenizer_path.empty() ? args.model_path : args.tokenizer_path);
    token_text = std::make_unique<TokenizerTokenText>(*tokenizer);
  }
  for (const std::string& t : f.texts) {
    std::vector<int> ids = tokenizer->encode(t, true);
    prompts.emplace_back(ids.begin(), ids.end());
  }
  NW_CHECK(!prompts.empty(), "give a prompt: --input-ids, --input-ids-file or --text");
  const SamplingParams params = sampling_params(f);

  RunnerOptions options = args.runner_options();
  if (options.max_total_tokens == 0) {
    // A batch job needs no more cache than all of its choices at full length: do not allocate the whole budget.
    int64_t tokens = 0;
    for (const auto& p : prompts)
      tokens += f.n * ((static_cast<int64_t>(p.size()) + f.max_new_tokens + args.page_size - 1) / args.page_size) *
                args.page_size;
    options.max_total_tokens = tokens;
  }
  if (is_worker_node(options)) {  // node 0 runs the engine and prints; this node runs its ranks' part of each step
    run_worker_node(options);
    return 0;
  }
  Engine engine(make_model_runners(options), args.engine_config(), token_text.get());

  std::vector<std::vector<ChoiceResult>> results(prompts.size(), std::vector<ChoiceResult>(f.n));
  std::map<uint64_t, size_t> prompt_of;
  for (size_t i = 0; i < prompts.size(); ++i) {
    RequestInput input;
    input.input_ids = prompts[i];
    input.params = params;
    input.return_logprob = f.return_logprob;
    input.top_logprobs_num = f.top_logprobs_num;
    input.return_logits = f.return_logits;
    // The loop runs on this thread (run_until_idle), so the callback needs no lock.
    input.on_output = [&results, &prompt_of](RequestOutput&& out) {
      ChoiceResult& c = results[prompt_of.at(out.request_id)][out.index];
      c.ids.insert(c.ids.end(), out.token_ids.begin(), out.token_ids.end());
      c.text += out.text;
      for (auto& lp : out.logprobs) c.logprobs.push_back(std::move(lp));
      for (auto& row : out.logits) c.logits.push_back(std::move(row));
      if (out.finish) c.finish = out.finish;
      c.prompt_tokens = out.prompt_tokens;
      c.cached_tokens = out.cached_tokens;
    };
    prompt_of[engine.submit(std::move(input))] = i;
  }
  engine.run_until_idle();
  if (const EngineStats& s = engine.stats(); s.spec_verifies > 0) {
    char line[96];
    std::snprintf(line, sizeof line, "Speculative decoding: accept len %.2f over %lld decode steps",
                  s.spec_accept_length(), static_cast<long long>(s.spec_verifies.load()));
    NW_LOG(Info) << line;
  }

  const bool batch = prompts.size() > 1 || f.n > 1;
  for (size_t i = 0; i < results.size(); ++i) {
    for (size_t k = 0; k < results[i].size(); ++k) {
      const ChoiceResult& c = results[i][k];
      std::string line;
      if (f.json) {
        std::optional<json> batch_fields;
        if (batch)
          batch_fields = json{{"prompt_index", i},
                              {"index", k},
                              {"finish_reason", c.finish ? c.finish->to_json(static_cast<int64_t>(c.ids.size())) : json()},
                              {"prompt_tokens", c.prompt_tokens},
                              {"cached_tokens", c.cached_tokens}};
        line = choice_json(c, f, tokenizer != nullptr, batch_fields);
      } else {
        line = "output_ids: ";
        for (size_t t = 0; t < c.ids.size(); ++t) line += (t ? "," : "") + std::to_string(c.ids[t]);
        line += "\n";
        if (tokenizer) line += "text: " + c.text + "\n";
      }
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
  }
  return 0;
}

}  // namespace narwhal
