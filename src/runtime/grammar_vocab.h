// GrammarVocab: the vocabulary's bytes in sorted order, to find the tokens a grammar state allows (the token mask
// of structured output).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/json_grammar.h"
#include "runtime/output_text.h"

namespace narwhal {

class GrammarVocab {
 public:
  // Tokens whose bytes are empty (special tokens) are never allowed, but for the stop ids where the value may end.
  GrammarVocab(const TokenText& text, int64_t vocab);

  // The ids `state` does not allow next, ascending: a token is allowed when the grammar takes all its bytes;
  // `stop_ids` are allowed (only) where the value may end.
  std::vector<int32_t> banned(const JsonGrammar& grammar, const GrammarState& state,
                              const std::vector<int32_t>& stop_ids) const;
  int64_t size() const { return vocab_; }

 private:
  // Tokens in byte order, each with the length of the prefix it shares with the one before: walking them in order
  // is a walk of their trie, a byte's step taken once for every token that shares it.
  struct Sorted {
    std::vector<int32_t> ids;
    std::vector<int32_t> shared;
  };
  static Sorted sort_tokens(const std::vector<std::string>& bytes, std::vector<int32_t> ids);
  void allow(const JsonGrammar& grammar, const GrammarState& state, const Sorted& tokens,
             std::vector<char>& allowed) const;

  int64_t vocab_;
  std::vector<std::string> bytes_;
  Sorted all_;        // every token with bytes
  Sorted special_;    // those with a quote, a backslash or a control byte: the rest keep a string's characters
  std::vector<int32_t> plain_;  // the rest
};

}  // namespace narwhal
