// Engine per-request behaviour: n > 1 sharing the prompt's pages, stop conditions, structured output, context
// length, bad requests, and abort from another thread while the loop runs.
#include <gtest/gtest.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "runtime/engine.h"
#include "runtime/json_grammar.h"
#include "runtime_test_util.h"

namespace narwhal {
namespace {

using testing::ContextHashRunner;

constexpr int64_t kVocab = 40, kPageSize = 4;

// Each token's text is one letter, so stop strings can be placed on known outputs.
class LetterText : public TokenText {
 public:
  std::string_view bytes(int32_t token) const override { return std::string_view(kLetters).substr(token % 26, 1); }
  static std::string of(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t t : ids) s += kLetters[t % 26];
    return s;
  }

 private:
  static constexpr const char* kLetters = "abcdefghijklmnopqrstuvwxyz";
};

struct Choice {
  std::vector<int32_t> ids;
  std::string text;
  std::optional<FinishReason> finish;
};

struct Collected {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<int, Choice> choices;
  OutputCallback callback() {
    return [this](RequestOutput&& out) {
      std::lock_guard<std::mutex> lock(mutex);
      Choice& c = choices[out.index];
      c.ids.insert(c.ids.end(), out.token_ids.begin(), out.token_ids.end());
      c.text += out.text;
      if (out.finish) c.finish = out.finish;
      changed.notify_all();
    };
  }
};

const std::vector<int32_t> kPrompt = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};  // 10 tokens: 2 full pages and a partial one

SamplingParams greedy(int64_t max_new_tokens) {
  SamplingParams p;
  p.temperature = 0.0;
  p.max_new_tokens = max_new_tokens;
  return p;
}

TEST(EngineRequest, NChoicesShareThePromptPagesAndCopyOnlyThePartialOne) {
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize), EngineConfig{});
  Collected got;
  SamplingParams p = greedy(6);
  p.n = 4;
  engine.submit({kPrompt, p, false, 0, false, got.callback()});
  engine.step();  // the prompt's prefill, then the fork
  // Choice 0 holds 3 pages (10 tokens); the others share its 2 full pages and each copies the partial one.
  EXPECT_EQ(engine.kv_pool().num_pages() - engine.kv_pool().num_free(), 3 + 3);
  engine.run_until_idle();
  const std::vector<int32_t> expected = ContextHashRunner::oracle_greedy(kPrompt, kVocab, 6);
  ASSERT_EQ(got.choices.size(), 4u);
  for (auto& [index, c] : got.choices) EXPECT_EQ(c.ids, expected) << "choice " << index << " (its copied page)";
  EXPECT_EQ(engine.stats().forward_tokens, 10 + 4 * 5) << "the prompt is computed once";
}

TEST(EngineRequest, SampledChoiceZeroEqualsTheSingleRequestAndOthersDiffer) {
  SamplingParams p;
  p.temperature = 1.0;
  p.max_new_tokens = 12;
  p.seed = 1234;
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize), EngineConfig{});
  Collected single, multi;
  engine.submit({kPrompt, p, false, 0, false, single.callback()});
  p.n = 3;
  engine.submit({kPrompt, p, false, 0, false, multi.callback()});
  engine.run_until_idle();
  EXPECT_EQ(multi.choices[0].ids, single.choices[0].ids);
  EXPECT_NE(multi.choices[1].ids, multi.choices[0].ids);
  EXPECT_NE(multi.choices[2].ids, multi.choices[1].ids);
}

TEST(EngineRequest, StopStringCutsTheTextAndEndsTheChoice) {
  const std::vector<int32_t> expected = ContextHashRunner::oracle_greedy(kPrompt, kVocab, 20);
  const std::string full = LetterText::of(expected);
  const std::string stop = full.substr(5, 2);
  const size_t at = full.find(stop);  // the first occurrence wins
  LetterText letters;
  for (const bool keep : {false, true}) {
    Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize), EngineConfig{}, &letters);
    Collected got;
    SamplingParams p = greedy(20);
    p.stop = {"zzzzz", stop};
    p.no_stop_trim = keep;
    engine.submit({kPrompt, p, false, 0, false, got.callback()});
    engine.run_until_idle();
    const Choice& c = got.choices[0];
    ASSERT_TRUE(c.finish && c.finish->kind == FinishReason::Kind::kStop);
    EXPECT_EQ(c.finish->matched_text, stop);
    EXPECT_EQ(c.ids, std::vector<int32_t>(expected.begin(), expected.begin() + static_cast<int64_t>(at + 2)));
    EXPECT_EQ(c.text, full.substr(0, keep ? at + 2 : at));
  }
}

TEST(EngineRequest, StopTokensEosAndMinNewTokens) {
  const std::vector<int32_t> expected = ContextHashRunner::oracle_greedy(kPrompt, kVocab, 30);
  const int32_t stop_token = expected[4];
  const int64_t first = std::find(expected.begin(), expected.end(), stop_token) - expected.begin();
  {  // stop_token_ids
    Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize), EngineConfig{});
    Collected got;
    SamplingParams p = greedy(30);
    p.stop_token_ids = {stop_token};
    engine.submit({kPrompt, p, false, 0, false, got.callback()});
    engine.run_until_idle();
    EXPECT_EQ(got.choices[0].ids, std::vector<int32_t>(expected.begin(), expected.begin() + first + 1));
    EXPECT_EQ(got.choices[0].finish->matched_token, stop_token);
  }
  for (const bool ignore_eos : {false, true}) {  // the model's eos, unless ignore_eos
    Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize, 1 << 20, std::vector<int>{stop_token}),
                  EngineConfig{});
    Collected got;
    SamplingParams p = greedy(30);
    p.ignore_eos = ignore_eos;
    engine.submit({kPrompt, p, false, 0, false, got.callback()});
    engine.run_until_idle();
    EXPECT_EQ(got.choices[0].ids.size(), ignore_eos ? 30u : static_cast<size_t>(first + 1));
    EXPECT_EQ(got.choices[0].finish->kind, ignore_eos ? FinishReason::Kind::kLength : FinishReason::Kind::kStop);
  }
  {  // min_new_tokens masks the stop token until enough was generated
    Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize), EngineConfig{});
    Collected got;
    SamplingParams p = greedy(30);
    p.stop_token_ids = {stop_token};
    p.min_new_tokens = first + 3;
    engine.submit({kPrompt, p, false, 0, false, got.callback()});
    engine.run_until_idle();
    const std::vector<int32_t>& ids = got.choices[0].ids;
    ASSERT_GE(static_cast<int64_t>(ids.size()), first + 3);
    for (int64_t i = 0; i < first + 3; ++i) EXPECT_NE(ids[i], stop_token) << "position " << i;
  }
}

// The overlapped loop (each step's tokens become text and are streamed while the next step runs; a stop string
// therefore ends its sequence one step late) gives exactly the outputs of the plain loop: a mixed workload of
// stop strings, stop tokens with min_new_tokens, sampled n = 3 choices sharing a prompt, and a cache small
// enough to retract, submitted together; every choice's ids, text and finish reason compared.
TEST(EngineRequest, OverlapScheduleGivesThePlainLoopsOutputs) {
  LetterText letters;
  std::vector<std::map<std::pair<int, int>, Choice>> runs;
  for (const bool overlap : {true, false}) {
    EngineConfig config;
    config.disable_overlap_schedule = !overlap;
    Engine engine(std::make_unique<ContextHashRunner>(kVocab, 24, kPageSize), config, &letters);
    std::vector<std::unique_ptr<Collected>> got;
    for (int r = 0; r < 12; ++r) {
      std::vector<int32_t> prompt = kPrompt;
      prompt[0] = r;
      SamplingParams p = greedy(6 + r % 5);
      if (r % 3 == 0) p.stop = {LetterText::of(ContextHashRunner::oracle_greedy(prompt, kVocab, 4)).substr(2, 2)};
      if (r % 3 == 1) {
        p.stop_token_ids = {ContextHashRunner::oracle_greedy(prompt, kVocab, 3)[2]};
        p.min_new_tokens = 2;
      }
      if (r % 4 == 2) {
        p.temperature = 0.8;
        p.n = 3;
        p.seed = 100 + r;
      }
      got.push_back(std::make_unique<Collected>());
      engine.submit({prompt, p, false, 0, false, got.back()->callback()});
    }
    engine.run_until_idle();
    EXPECT_EQ(engine.kv_pool().num_free() + engine.kv_pool().num_evictable(), engine.kv_pool().num_pages());
    std::map<std::pair<int, int>, Choice> all;
    for (size_t r = 0; r < got.size(); ++r)
      for (auto& [index, choice] : got[r]->choices) {
        ASSERT_TRUE(choice.finish.has_value()) << "request " << r << " choice " << index;
        all[{static_cast<int>(r), index}] = choice;
      }
    runs.push_back(std::move(all));
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (const auto& [key, on] : runs[0]) {
    const Choice& off = runs[1].at(key);
    EXPECT_EQ(on.ids, off.ids) << "request " << key.first << " choice " << key.second;
    EXPECT_EQ(on.text, off.text) << "request " << key.first << " choice " << key.second;
    EXPECT_EQ(on.finish->kind, off.finish->kind) << "request " << key.first;
    EXPECT_EQ(on.finish->matched_text, off.finish->matched_text) << "request " << key.first;
    EXPECT_EQ(on.finish->matched_token, off.finish->matched_token) << "request " << key.first;
  }
}

TEST(EngineRequest, ContextLengthClipsTheOutput) {
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize, 16), EngineConfig{});
  Collected got;
  engine.submit({kPrompt, greedy(100), false, 0, false, got.callback()});
  engine.run_until_idle();
  EXPECT_EQ(got.choices[0].ids.size(), 6u);
  EXPECT_EQ(got.choices[0].finish->kind, FinishReason::Kind::kLength);
  EXPECT_THROW(engine.submit({std::vector<int32_t>(16, 1), greedy(1), false, 0, false, nullptr}), Error);
}

// Pieces of JSON (and letters that may only go inside strings) as a vocabulary; token 0 is the eos.
class JsonPiecesText : public TokenText {
 public:
  std::string_view bytes(int32_t token) const override {
    static const std::vector<std::string> kPieces = {"", "{", "}", "\"", "k", ":", "1", ",", " ", "[", "]", "true",
                                                     "\"k\"", "2", "\"l\":", "\n", "{\"", "2]", ", "};
    if (token < static_cast<int32_t>(kPieces.size())) return kPieces[static_cast<size_t>(token)];
    return std::string_view("abcdefghijklmnopqrstuvwxyz").substr(static_cast<size_t>(token - 19) % 26, 1);
  }
};

// Every choice, greedy or sampled, is a complete value of the schema: the mask keeps the random model's tokens in
// it, and the choice ends where the value does.
TEST(EngineRequest, StructuredOutputKeepsEveryChoiceInsideTheSchema) {
  const JsonPiecesText pieces;
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 512, kPageSize, 1 << 20, std::vector<int>{0}),
                EngineConfig{}, &pieces);
  SamplingParams p = greedy(400);
  p.grammar = JsonGrammar::from_schema(SchemaJson::parse(
      R"({"type": "object", "properties": {"k": {"enum": [1, true]}, "l": {"type": "array", "items": {"const": 2},
          "maxItems": 3}}, "required": ["k", "l"]})"));
  for (const double temperature : {0.0, 1.0}) {
    p.temperature = temperature;
    p.n = temperature == 0.0 ? 1 : 4;
    Collected got;
    engine.submit({kPrompt, p, false, 0, false, got.callback()});
    engine.run_until_idle();
    ASSERT_EQ(got.choices.size(), static_cast<size_t>(p.n));
    for (const auto& [index, choice] : got.choices) {
      ASSERT_TRUE(choice.finish);
      EXPECT_EQ(choice.finish->kind, FinishReason::Kind::kStop) << choice.text;
      const json value = json::parse(choice.text);
      EXPECT_TRUE(value["k"] == 1 || value["k"] == true) << choice.text;
      EXPECT_LE(value["l"].size(), 3u) << choice.text;
      for (const json& item : value["l"]) EXPECT_EQ(item, 2) << choice.text;
    }
  }
  // After a trigger token (a reasoning model's "</think>"): free before it, inside the schema after it.
  SamplingParams reasoning = p;
  reasoning.temperature = 1.0;
  reasoning.n = 1;
  reasoning.grammar_after_token = 25;
  reasoning.ignore_eos = true;  // the grammar's end ends it
  reasoning.seed = 1;
  Collected thought;
  engine.submit({kPrompt, reasoning, false, 0, false, thought.callback()});
  engine.run_until_idle();
  const std::vector<int32_t>& ids = thought.choices[0].ids;
  const auto trigger = std::find(ids.begin(), ids.end(), 25);
  ASSERT_NE(trigger, ids.end());
  EXPECT_GT(trigger - ids.begin(), 0) << "free tokens first: the grammar would not start with this letter";
  std::string after;
  for (auto it = trigger + 1; it != ids.end(); ++it) after += pieces.bytes(*it);
  EXPECT_EQ(json::parse(after)["l"].size() <= 3, true) << after;
  EXPECT_EQ(thought.choices[0].finish->kind, FinishReason::Kind::kStop);

  // A value the vocabulary cannot spell ('z' has no token): the choice ends refused, not with broken JSON.
  SamplingParams unspellable = greedy(8);
  unspellable.grammar = JsonGrammar::from_schema(SchemaJson::parse(R"({"const": "zz"})"));
  Collected refused;
  engine.submit({kPrompt, unspellable, false, 0, false, refused.callback()});
  engine.run_until_idle();
  ASSERT_TRUE(refused.choices[0].finish);
  EXPECT_EQ(refused.choices[0].finish->kind, FinishReason::Kind::kAbort);
  EXPECT_EQ(refused.choices[0].text, "\"");
  SamplingParams no_text = greedy(4);
  no_text.grammar = JsonGrammar::any_object();
  Engine textless(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize), EngineConfig{});
  EXPECT_THROW(textless.submit({kPrompt, no_text, false, 0, false, nullptr}), Error) << "a grammar needs token text";
}

// --context-length lowers config.json's context (16 here) and may not raise it.
TEST(EngineRequest, ContextLengthFlagLowersTheModelsContext) {
  EngineConfig config;
  config.context_length = 12;
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize, 16), config);
  EXPECT_EQ(engine.max_sequence_len(), 12);
  Collected got;
  engine.submit({kPrompt, greedy(100), false, 0, false, got.callback()});
  engine.run_until_idle();
  EXPECT_EQ(got.choices[0].ids.size(), 12 - kPrompt.size());
  EXPECT_THROW(engine.submit({std::vector<int32_t>(12, 1), greedy(1), false, 0, false, nullptr}), Error);
  config.context_length = 17;
  try {
    Engine longer(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize, 16), config);
    ADD_FAILURE() << "a context past max_position_embeddings was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--context-length 17 exceeds the model's max_position_embeddings (16"),
              std::string::npos) << e.what();
  }
}

TEST(EngineRequest, BadRequestsAreErrors) {
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 8, kPageSize), EngineConfig{});
  EXPECT_THROW(engine.submit({{}, greedy(1), false, 0, false, nullptr}), Error);
  EXPECT_THROW(engine.submit({{1, kVocab}, greedy(1), false, 0, false, nullptr}), Error);
  EXPECT_THROW(engine.submit({std::vector<int32_t>(40, 1), greedy(1), false, 0, false, nullptr}), Error)
      << "longer than the whole cache";
  SamplingParams stops = greedy(1);
  stops.stop = {"x"};
  EXPECT_THROW(engine.submit({{1}, stops, false, 0, false, nullptr}), Error) << "stop strings without a tokenizer";
  SamplingParams bad = greedy(1);
  bad.top_p = 0.0;
  EXPECT_THROW(engine.submit({{1}, bad, false, 0, false, nullptr}), Error);
  SamplingParams biased = greedy(1);
  biased.logit_bias = {{kVocab, 1.0f}};
  EXPECT_THROW(engine.submit({{1}, biased, false, 0, false, nullptr}), Error) << "logit_bias outside the vocabulary";
  EXPECT_THROW(engine.submit({{1}, greedy(1), true, 21, false, nullptr}), Error) << "top logprobs beyond 20";
}

TEST(EngineRequest, AbortFromAnotherThreadWhileTheLoopRuns) {
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 512, kPageSize), EngineConfig{});
  engine.start();
  Collected got;
  const uint64_t id = engine.submit({kPrompt, greedy(1500), false, 0, false, got.callback()});
  {
    std::unique_lock<std::mutex> lock(got.mutex);
    got.changed.wait(lock, [&] { return got.choices[0].ids.size() >= 5; });
  }
  engine.abort(id);
  {
    std::unique_lock<std::mutex> lock(got.mutex);
    got.changed.wait(lock, [&] { return got.choices[0].finish.has_value(); });
    EXPECT_EQ(got.choices[0].finish->kind, FinishReason::Kind::kAbort);
    EXPECT_LT(got.choices[0].ids.size(), 1500u);
  }
  // The loop goes on serving.
  Collected after;
  engine.submit({kPrompt, greedy(3), false, 0, false, after.callback()});
  {
    std::unique_lock<std::mutex> lock(after.mutex);
    after.changed.wait(lock, [&] { return after.choices[0].finish.has_value(); });
  }
  engine.stop();
  EXPECT_EQ(after.choices[0].ids, ContextHashRunner::oracle_greedy(kPrompt, kVocab, 3));
  EXPECT_EQ(engine.stats().aborted_requests, 1);
  EXPECT_EQ(engine.kv_pool().num_free() + engine.kv_pool().num_evictable(), engine.kv_pool().num_pages());
}

TEST(EngineRequest, LoopPublishesLivenessAndOccupancy) {
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 512, kPageSize), EngineConfig{});
  const EngineStats& stats = engine.stats();
  EXPECT_FALSE(stats.loop_running);
  engine.start();
  EXPECT_TRUE(stats.loop_running);
  Collected got;
  const uint64_t id = engine.submit({kPrompt, greedy(1500), false, 0, false, got.callback()});
  {
    std::unique_lock<std::mutex> lock(got.mutex);
    got.changed.wait(lock, [&] { return got.choices[0].ids.size() >= 5; });
  }
  const auto eventually = [](const std::function<bool()>& condition) {
    for (int i = 0; i < 300 && !condition(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return condition();
  };
  EXPECT_TRUE(eventually([&] { return stats.running_requests == 1 && stats.kv_used_pages > 0; }));
  EXPECT_EQ(stats.kv_total_pages, engine.kv_pool().num_pages());
  engine.abort(id);
  EXPECT_TRUE(eventually([&] { return stats.running_requests == 0 && stats.waiting_requests == 0; }));
  // Idle, the heartbeat still moves (about once a second).
  const int64_t beat = stats.heartbeat_ns;
  EXPECT_TRUE(eventually([&] { return stats.heartbeat_ns > beat; }));
  EXPECT_EQ(stats.kv_used_pages, stats.kv_evictable_pages) << "only the radix cache holds pages once idle";
  engine.stop();
  EXPECT_FALSE(stats.loop_running);
}

TEST(OutputText, HoldsBackWhatMayStartAStopStringAndCutCharacters) {
  OutputText text({"END"});
  EXPECT_FALSE(text.append("abcE", false));
  EXPECT_EQ(text.take(false), "ab") << "'cE' may be the start of END";
  EXPECT_FALSE(text.append("\xC3\xA9xyz", false));
  EXPECT_EQ(text.take(false), "cE\xC3\xA9x");
  EXPECT_EQ(text.append("EN", false), std::nullopt);
  EXPECT_EQ(text.append("Dtail", false), "END");
  EXPECT_EQ(text.take(true), "yz");
}

TEST(OutputText, NeverSplitsAUtf8Character) {
  OutputText text;
  EXPECT_FALSE(text.append("a\xC3", false));  // the first byte of a two-byte character
  EXPECT_EQ(text.take(false), "a");
  EXPECT_FALSE(text.append("\xA9", false));
  EXPECT_EQ(text.take(false), "\xC3\xA9");
}

}  // namespace
}  // namespace narwhal
