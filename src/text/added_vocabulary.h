// Added tokens of tokenizer.json (special or not) and how they are cut out of the text before BPE.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace narwhal::text {

struct AddedToken {
  int id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
};

class AddedVocabulary {
 public:
  // Reads tokenizer.json's "added_tokens" array; `where` names the file in errors.
  AddedVocabulary(const nlohmann::json& added_tokens, const std::string& where);

  // A piece of the text: an added token (id >= 0) or ordinary text for the pre-tokenizer (id -1).
  struct Segment {
    size_t begin, end;
    int id;
  };
  // Splits `text` as Hugging Face does: the tokens with normalized=false are matched in the text first, then
  // the others in the remaining pieces; each pass takes the leftmost, then longest, match. Empty ordinary
  // pieces are dropped.
  void split(std::string_view text, std::vector<Segment>& out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // A byte trie over token contents for leftmost-longest matching.
  class Matcher {
   public:
    void add(std::string_view content, int token_index);
    // Longest token starting at text[pos]: its token index and length, or -1.
    int longest_at(std::string_view text, size_t pos, size_t* length) const;
    bool may_start_with(unsigned char byte) const { return (first_bytes_[byte >> 6] >> (byte & 63)) & 1; }

   private:
    struct Node {
      std::vector<std::pair<unsigned char, int>> children;
      int token_index = -1;
    };
    std::vector<Node> nodes_{1};
    std::array<uint64_t, 4> first_bytes_{};
  };

  void split_pass(std::string_view piece, size_t offset, const Matcher& matcher, std::vector<Segment>& out) const;

  std::vector<AddedToken> tokens_;
  Matcher raw_matcher_;         // normalized == false
  Matcher normalized_matcher_;  // normalized == true
};

}  // namespace narwhal::text
