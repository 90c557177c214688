// Tokenizer rules on small hand-made tokenizer.json files: merge order, added-token options, errors.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace narwhal::text {
namespace {

// Vocabulary in GPT-2's byte-level alphabet: "Ġ" is the space byte.
json tiny_tokenizer_json(const json& merges) {
  return {
      {"version", "1.0"},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"d", 3}, {"Ġ", 4}, {"ab", 5}, {"bc", 6}, {"abc", 7}, {"cd", 8},
                   {"Ġa", 9}}},
        {"merges", merges}}},
  };
}

void write_json(const std::string& path, const json& value) { std::ofstream(path) << value.dump(); }

std::unique_ptr<Tokenizer> load(const testing::TempDir& dir, const json& tokenizer_json,
                                 const json& config = json::object()) {
  write_json(dir.file("tokenizer.json"), tokenizer_json);
  write_json(dir.file("tokenizer_config.json"), config);
  return std::make_unique<Tokenizer>(dir.path());
}

// Loads and expects an Error whose message contains every one of `parts`.
void expect_load_error(const json& tokenizer_json, const json& config, const std::vector<std::string>& parts) {
  testing::TempDir dir;
  try {
    load(dir, tokenizer_json, config);
    ADD_FAILURE() << "loaded without error; expected one naming " << json(parts).dump();
  } catch (const Error& e) {
    for (const std::string& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(TokenizerRules, LowestRankMergesFirst) {
  testing::TempDir dir;
  // "b c" outranks "a b": abc -> a bc, and no merge of a with bc exists.
  EXPECT_EQ(load(dir, tiny_tokenizer_json({"b c", "a b", "ab c", "Ġ a"}))->encode("abc"), (std::vector<int>{0, 6}));
  testing::TempDir other;
  EXPECT_EQ(load(other, tiny_tokenizer_json({"a b", "b c", "ab c"}))->encode("abc"), (std::vector<int>{7}));
  // Pair-array merges (newer tokenizer.json) read the same as "a b" strings.
  testing::TempDir arrays;
  const json pairs = json::array({json::array({"a", "b"}), json::array({"ab", "c"})});
  EXPECT_EQ(load(arrays, tiny_tokenizer_json(pairs))->encode("abc ab"),
            (std::vector<int>{7, 4, 5}));  // " ab" is its own word: Ġ, then a b merged
}

TEST(TokenizerRules, WordCacheDoesNotLeakBetweenTokenizers) {
  // The per-thread word cache must not hand a new tokenizer the ids another one (perhaps at the same
  // address) cached for the same word.
  for (int round = 0; round < 3; ++round) {
    testing::TempDir merging, plain;
    EXPECT_EQ(load(merging, tiny_tokenizer_json({"a b"}))->encode("ab"), (std::vector<int>{5}));
    EXPECT_EQ(load(plain, tiny_tokenizer_json(json::array()))->encode("ab"), (std::vector<int>{0, 1}));
  }
}

TEST(TokenizerRules, AddedTokensFollowLstripRstripAndSingleWord) {
  json tokenizer_json = tiny_tokenizer_json(json::array());
  tokenizer_json["added_tokens"] = {
      {{"id", 20}, {"content", "<x>"}, {"special", true}, {"lstrip", true}, {"rstrip", true}, {"normalized", false}},
      {{"id", 21}, {"content", "<y>"}, {"special", true}, {"normalized", false}},
      {{"id", 22}, {"content", "dd"}, {"special", false}, {"single_word", true}},
  };
  testing::TempDir dir;
  const auto tokenizer = load(dir, tokenizer_json);
  EXPECT_EQ(tokenizer->encode("a  <x>  b"), (std::vector<int>{0, 20, 1}));     // spaces taken by <x>
  EXPECT_EQ(tokenizer->encode("a <y> b"), (std::vector<int>{0, 4, 21, 4, 1}));  // spaces kept
  EXPECT_EQ(tokenizer->encode("a dd"), (std::vector<int>{0, 4, 22}));
  EXPECT_EQ(tokenizer->encode("add"), (std::vector<int>{0, 3, 3}));  // inside a word: not the added token
  EXPECT_EQ(tokenizer->decode({0, 20, 1}), "a<x>b");
  EXPECT_EQ(tokenizer->decode({0, 20, 22, 1}, /*skip_special_tokens=*/true), "addb");
}

TEST(TokenizerRules, BosAndEosFollowTokenizerConfig) {
  json tokenizer_json = tiny_tokenizer_json(json::array());
  tokenizer_json["added_tokens"] = {{{"id", 30}, {"content", "<s>"}, {"special", true}},
                                    {{"id", 31}, {"content", "</s>"}, {"special", true}}};
  testing::TempDir dir;
  const auto tokenizer = load(dir, tokenizer_json,
                              {{"bos_token", "<s>"}, {"eos_token", {{"content", "</s>"}}}, {"add_bos_token", true},
                               {"add_eos_token", true}});
  EXPECT_EQ(tokenizer->encode("a", true), (std::vector<int>{30, 0, 31}));
  EXPECT_EQ(tokenizer->encode("a", false), (std::vector<int>{0}));
  EXPECT_EQ(tokenizer->decode({30, 0, 31}, true), "a");
}

TEST(TokenizerErrors, MissingOrMalformedFilesAreNamed) {
  testing::TempDir empty;
  try {
    Tokenizer tokenizer(empty.path());
    ADD_FAILURE() << "loaded an empty directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(empty.file("tokenizer.json")), std::string::npos) << e.what();
  }
  testing::TempDir broken;
  std::ofstream(broken.file("tokenizer.json")) << "{\"model\": ";
  try {
    Tokenizer tokenizer(broken.path());
    ADD_FAILURE() << "loaded truncated JSON";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: invalid JSON"), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, BadFieldsAreNamed) {
  const json good = tiny_tokenizer_json({"a b"});
  json missing_merge_token = good;
  missing_merge_token["model"]["merges"] = {"a b", "c z"};
  expect_load_error(missing_merge_token, json::object(), {"tokenizer.json", "model.merges[1]", "\"c z\""});

  json bad_id = good;
  bad_id["model"]["vocab"]["a"] = "zero";
  expect_load_error(bad_id, json::object(), {"tokenizer.json", "model.vocab[\"a\"]"});

  json no_model = good;
  no_model.erase("model");
  expect_load_error(no_model, json::object(), {"tokenizer.json", "no \"model\""});

  json unigram = good;
  unigram["model"]["type"] = "Unigram";
  expect_load_error(unigram, json::object(), {"model.type", "Unigram"});

  json whitespace = good;
  whitespace["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Whitespace"}}}}};
  expect_load_error(whitespace, json::object(), {"pre_tokenizer.pretokenizers[0].type", "Whitespace"});

  json bad_regex = good;
  bad_regex["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}}, good["pre_tokenizer"]}}};
  expect_load_error(bad_regex, json::object(), {"pre_tokenizer.pretokenizers[0]"});

  json nfkc = good;
  nfkc["normalizer"] = {{"type", "NFKC"}};
  expect_load_error(nfkc, json::object(), {"normalizer.type", "NFKC"});

  expect_load_error(good, {{"add_bos_token", "yes"}}, {"tokenizer_config.json", "add_bos_token"});
  expect_load_error(good, {{"add_bos_token", true}, {"bos_token", "<nope>"}}, {"add_bos_token", "bos_token"});
}

}  // namespace
}  // namespace narwhal::text
