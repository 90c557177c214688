// GrammarVocab: the token mask equals checking every token's bytes against the grammar one by one, in every state a
// random walk of allowed tokens reaches.
#include <gtest/gtest.h>

#include <random>

#include "runtime/grammar_vocab.h"

namespace narwhal {
namespace {

class ListText : public TokenText {
 public:
  explicit ListText(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {}
  std::string_view bytes(int32_t token) const override { return tokens_.at(static_cast<size_t>(token)); }

 private:
  std::vector<std::string> tokens_;
};

// Bytes JSON text is made of, and others, in random short tokens (some shared prefixes, some multi-byte).
std::vector<std::string> random_tokens(size_t count, uint32_t seed) {
  const std::string alphabet = "{}[]\":,. \n-+eE0123456789abtrulnfsx\\/\x01\xc3\xa9";
  std::mt19937 rng(seed);
  std::vector<std::string> tokens = {"", "{", "}", "[", "]", "\"", ":", ",", " ", "\n", "true", "false", "null",
                                     "\"a\"", "\"ab", "{\"", "\"}", "\\n", "\\u00", "e9"};
  while (tokens.size() < count) {
    std::string t;
    const size_t len = 1 + rng() % 4;
    for (size_t i = 0; i < len; ++i) t += alphabet[rng() % alphabet.size()];
    tokens.push_back(t);
  }
  return tokens;
}

std::vector<int32_t> brute_force_banned(const JsonMatcher& m, const ListText& text, int64_t vocab,
                                        const std::vector<int32_t>& stops) {
  std::vector<int32_t> out;
  for (int32_t id = 0; id < vocab; ++id) {
    const std::string_view b = text.bytes(id);
    bool ok = std::find(stops.begin(), stops.end(), id) != stops.end() ? m.can_end() : false;
    if (!b.empty()) {
      JsonMatcher copy = m;
      ok = copy.advance(b);
    }
    if (!ok) out.push_back(id);
  }
  return out;
}

TEST(GrammarVocab, MaskEqualsCheckingEachToken) {
  const std::vector<std::string> tokens = random_tokens(400, 7);
  const ListText text(tokens);
  const int64_t vocab = static_cast<int64_t>(tokens.size());
  const GrammarVocab gv(text, vocab);
  const std::vector<int32_t> stops = {0};  // the empty (special) token, as an eos
  const auto grammars = {
      JsonGrammar::any_object(),
      JsonGrammar::from_schema(SchemaJson::parse(R"({"type": "object", "properties": {"a": {"type": "string"},
          "ab": {"type": "array", "items": {"type": "number"}}, "t": {"type": "boolean"}}, "required": ["t"]})")),
      JsonGrammar::from_schema(SchemaJson::parse(R"({"type": "number"})"))};
  std::mt19937 rng(11);
  for (const auto& g : grammars) {
    for (int walk = 0; walk < 20; ++walk) {
      JsonMatcher m(g);
      for (int step = 0; step < 40; ++step) {
        const std::vector<int32_t> banned = gv.banned(*g, m.state(), stops);
        ASSERT_EQ(banned, brute_force_banned(m, text, vocab, stops)) << "walk " << walk << " step " << step;
        std::vector<int32_t> allowed;
        for (int32_t id = 1; id < vocab; ++id)
          if (!std::binary_search(banned.begin(), banned.end(), id)) allowed.push_back(id);
        if (allowed.empty()) break;
        ASSERT_TRUE(m.advance(text.bytes(allowed[rng() % allowed.size()])));
      }
    }
  }
}

TEST(GrammarVocab, StopIdsOnlyWhereTheValueMayEnd) {
  const ListText text({"", "{", "}", "{}", " "});
  const GrammarVocab gv(text, 5);
  const auto g = JsonGrammar::any_object();
  JsonMatcher m(g);
  EXPECT_EQ(gv.banned(*g, m.state(), {0}), (std::vector<int32_t>{0, 2, 4}));
  ASSERT_TRUE(m.advance("{"));
  EXPECT_EQ(gv.banned(*g, m.state(), {0}), (std::vector<int32_t>{0, 1, 3}));
  ASSERT_TRUE(m.advance("}"));
  EXPECT_EQ(gv.banned(*g, m.state(), {0}), (std::vector<int32_t>{1, 2, 3, 4}));
}

}  // namespace
}  // namespace narwhal
