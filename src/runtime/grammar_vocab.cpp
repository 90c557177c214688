// GrammarVocab: the token mask of a grammar state, by a walk over the sorted vocabulary.
#include "runtime/grammar_vocab.h"

#include <algorithm>

namespace narwhal {

namespace {

bool keeps_string_chars(const std::string& bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) {
    const auto b = static_cast<unsigned char>(c);
    return b >= 0x20 && b != '"' && b != '\\';
  });
}

}  // namespace

GrammarVocab::Sorted GrammarVocab::sort_tokens(const std::vector<std::string>& bytes, std::vector<int32_t> ids) {
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return bytes[a] < bytes[b]; });
  Sorted s{std::move(ids), {}};
  s.shared.resize(s.ids.size(), 0);
  for (size_t i = 1; i < s.ids.size(); ++i) {
    const std::string& a = bytes[s.ids[i - 1]];
    const std::string& b = bytes[s.ids[i]];
    const auto [end_a, end_b] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    s.shared[i] = static_cast<int32_t>(end_b - b.begin());
  }
  return s;
}

GrammarVocab::GrammarVocab(const TokenText& text, int64_t vocab) : vocab_(vocab), bytes_(static_cast<size_t>(vocab)) {
  std::vector<int32_t> with_bytes, special;
  for (int32_t id = 0; id < vocab; ++id) {
    bytes_[id] = std::string(text.bytes(id));
    if (bytes_[id].empty()) continue;
    with_bytes.push_back(id);
    if (keeps_string_chars(bytes_[id])) plain_.push_back(id);
    else special.push_back(id);
  }
  all_ = sort_tokens(bytes_, std::move(with_bytes));
  special_ = sort_tokens(bytes_, std::move(special));
}

void GrammarVocab::allow(const JsonGrammar& grammar, const GrammarState& state, const Sorted& tokens,
                         std::vector<char>& allowed) const {
  std::vector<GrammarState> at(1, state);  // at[d]: the state after the current token's first d bytes
  size_t alive = 0;                        // bytes of the current path the grammar took
  for (size_t i = 0; i < tokens.ids.size(); ++i) {
    const std::string& b = bytes_[tokens.ids[i]];
    const size_t shared = static_cast<size_t>(tokens.shared[i]);
    if (alive < shared) continue;  // it holds the byte that ended the token before
    alive = shared;
    if (at.size() < b.size() + 1) at.resize(b.size() + 1);
    bool taken = true;
    for (size_t d = shared; d < b.size(); ++d) {
      if (!grammar.advance(at[d], static_cast<unsigned char>(b[d]), at[d + 1])) {
        taken = false;
        break;
      }
      alive = d + 1;
    }
    if (taken) allowed[tokens.ids[i]] = 1;
  }
}

std::vector<int32_t> GrammarVocab::banned(const JsonGrammar& grammar, const GrammarState& state,
                                          const std::vector<int32_t>& stop_ids) const {
  std::vector<char> allowed(static_cast<size_t>(vocab_), 0);
  if (grammar.in_plain_string(state)) {
    for (int32_t id : plain_) allowed[id] = 1;
    allow(grammar, state, special_, allowed);
  } else {
    allow(grammar, state, all_, allowed);
  }
  if (grammar.can_end(state))
    for (int32_t id : stop_ids)
      if (id >= 0 && id < vocab_) allowed[id] = 1;
  std::vector<int32_t> out;
  for (int32_t id = 0; id < vocab_; ++id)
    if (!allowed[id]) out.push_back(id);
  return out;
}

}  // namespace narwhal
