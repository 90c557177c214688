// Matching of added tokens in text, with Hugging Face's lstrip / rstrip / single_word rules.
#include "text/added_vocabulary.h"

#include <algorithm>

#include "core/error.h"
#include "text/unicode.h"
#include "text/utf8.h"

namespace narwhal::text {
namespace {

bool is_space(char32_t cp) { return unicode_properties(cp) & kSpaceBit; }
bool is_word(char32_t cp) { return unicode_properties(cp) & kWordBit; }

}  // namespace

void AddedVocabulary::Matcher::add(std::string_view content, int token_index) {
  int node = 0;
  for (unsigned char byte : content) {
    int child = -1;
    for (const auto& [b, n] : nodes_[node].children) {
      if (b == byte) child = n;
    }
    if (child < 0) {
      child = static_cast<int>(nodes_.size());
      nodes_[node].children.push_back({byte, child});
      nodes_.emplace_back();
    }
    node = child;
  }
  // A duplicate content keeps its first token, like the first pattern of an Aho-Corasick automaton.
  if (nodes_[node].token_index < 0) nodes_[node].token_index = token_index;
  const unsigned char first = content[0];
  first_bytes_[first >> 6] |= uint64_t{1} << (first & 63);
}

int AddedVocabulary::Matcher::longest_at(std::string_view text, size_t pos, size_t* length) const {
  int node = 0, found = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    int child = -1;
    for (const auto& [b, n] : nodes_[node].children) {
      if (b == static_cast<unsigned char>(text[i])) child = n;
    }
    if (child < 0) break;
    node = child;
    if (nodes_[node].token_index >= 0) {
      found = nodes_[node].token_index;
      *length = i + 1 - pos;
    }
  }
  return found;
}

AddedVocabulary::AddedVocabulary(const nlohmann::json& added_tokens, const std::string& where) {
  if (added_tokens.is_null()) return;
  NW_CHECK(added_tokens.is_array(), where, ": added_tokens must be an array");
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const nlohmann::json& t = added_tokens[i];
    NW_CHECK(t.is_object() && t.contains("id") && t["id"].is_number_integer() && t.contains("content") &&
                 t["content"].is_string(),
             where, ": added_tokens[", i, "] needs an integer \"id\" and a string \"content\"");
    AddedToken token;
    token.id = t["id"].get<int>();
    token.content = t["content"].get<std::string>();
    token.special = t.value("special", false);
    token.single_word = t.value("single_word", false);
    token.lstrip = t.value("lstrip", false);
    token.rstrip = t.value("rstrip", false);
    token.normalized = t.value("normalized", !token.special);
    if (token.content.empty()) continue;  // Hugging Face ignores empty added tokens
    (token.normalized ? normalized_matcher_ : raw_matcher_).add(token.content, static_cast<int>(tokens_.size()));
    tokens_.push_back(std::move(token));
  }
}

void AddedVocabulary::split(std::string_view text, std::vector<Segment>& out) const {
  thread_local std::vector<Segment> first_pass;
  first_pass.clear();
  split_pass(text, 0, raw_matcher_, first_pass);
  out.clear();
  for (const Segment& s : first_pass) {
    if (s.id >= 0) out.push_back(s);
    else split_pass(text.substr(s.begin, s.end - s.begin), s.begin, normalized_matcher_, out);
  }
}

// One pass of Hugging Face's AddedVocabulary::find_matches over `piece` (at `offset` in the whole text).
// Like its Aho-Corasick iterator, the search resumes after each match's own end, even when the match is
// discarded (single_word) or widened (rstrip).
void AddedVocabulary::split_pass(std::string_view piece, size_t offset, const Matcher& matcher,
                                 std::vector<Segment>& out) const {
  const auto push = [&](size_t begin, size_t end, int id) { out.push_back({offset + begin, offset + end, id}); };
  size_t start_offset = 0;
  for (size_t pos = 0; pos < piece.size(); ++pos) {
    if (!matcher.may_start_with(static_cast<unsigned char>(piece[pos]))) continue;
    size_t length;
    const int index = matcher.longest_at(piece, pos, &length);
    if (index < 0) continue;
    const AddedToken& token = tokens_[index];
    size_t start = pos, stop = pos + length;
    pos = stop - 1;  // the loop's ++pos resumes the search at the match end
    size_t at;
    if (token.single_word) {
      const bool word_before = start > 0 && is_word(previous_code_point(piece, start, &at));
      at = stop;
      const bool word_after = stop < piece.size() && is_word(next_code_point(piece, at));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        const char32_t cp = previous_code_point(piece, new_start, &at);
        if (!is_space(cp)) break;
        new_start = at;
      }
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < piece.size()) {
        at = stop;
        if (!is_space(next_code_point(piece, at))) break;
        stop = at;
      }
    }
    if (start_offset < start) push(start_offset, start, -1);
    push(start, stop, token.id);
    start_offset = stop;
  }
  if (start_offset < piece.size()) push(start_offset, piece.size(), -1);
}

}  // namespace narwhal::text
