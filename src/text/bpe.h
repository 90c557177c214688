// The byte-level BPE model of tokenizer.json: vocabulary, merge ranks and the merge loop.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace narwhal::text {

class BpeModel {
 public:
  // Reads tokenizer.json's "model" object (type BPE); `where` names the file in errors.
  BpeModel(const nlohmann::json& model, const std::string& where);

  // Appends the ids of one pre-tokenized word, given as raw bytes.
  void encode_word(std::string_view word, std::vector<int>& out) const;

  // Raw bytes of a vocabulary token; empty for ids outside the vocabulary.
  std::string_view token_bytes(int id) const;
  int token_to_id(std::string_view bytes) const;  // -1 when absent
  int max_id() const { return static_cast<int>(bytes_of_id_.size()) - 1; }

 private:
  struct Merge {
    uint32_t rank;
    int merged_id;
  };
  static uint64_t pair_key(int left, int right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void merge_symbols(std::string_view word, std::vector<int>& out) const;

  std::unordered_map<std::string, int> id_of_bytes_;
  std::vector<std::string> bytes_of_id_;
  std::unordered_map<uint64_t, Merge> merges_;
  int id_of_byte_[256];
  uint64_t instance_;  // unique per model ever built: keys the per-thread word cache (addresses get reused)
  bool ignore_merges_ = false;
};

}  // namespace narwhal::text
