// A Hugging Face byte-level BPE tokenizer loaded from tokenizer.json + tokenizer_config.json.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "text/added_vocabulary.h"
#include "text/bpe.h"
#include "text/pre_tokenizer.h"
#include "text/tokenizer_config.h"

namespace narwhal::text {

// Encodes exactly as tokenizers' Tokenizer.encode does (and, with add_special_tokens, adds BOS/EOS as the
// tokenizer class named by tokenizer_config.json does). Thread-safe: encode/decode may run concurrently.
class Tokenizer {
 public:
  // Loads DIR/tokenizer.json and DIR/tokenizer_config.json. Throws Error naming the file and field at fault.
  explicit Tokenizer(const std::string& dir);

  // `text` must be valid UTF-8 (Error otherwise).
  std::vector<int> encode(std::string_view text, bool add_special_tokens = false) const;
  std::string decode(const std::vector<int>& ids, bool skip_special_tokens = false) const;

  // The bytes token `id` contributes to decoded text; empty for ids that are no token.
  std::string_view token_bytes(int id) const;
  bool is_special(int id) const;
  // Id of an added token's content or of a vocabulary token (written in the byte-level alphabet); -1 if none.
  int token_to_id(std::string_view token) const;
  int vocab_size() const { return static_cast<int>(decode_bytes_.size()); }
  // The BPE vocabulary alone, without added tokens past it: what transformers calls `tokenizer.vocab_size`.
  int model_vocab_size() const { return model_->max_id() + 1; }

  int bos_id() const { return bos_id_; }  // -1 when the config names no BOS
  int eos_id() const { return eos_id_; }
  const TokenizerConfig& config() const { return config_; }

 private:
  Tokenizer(const std::string& dir, const std::string& where, const nlohmann::json& json);
  void read_post_processor(const nlohmann::json& post_processor, const std::string& where);

  TokenizerConfig config_;
  AddedVocabulary added_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::vector<std::string> decode_bytes_;  // by id
  std::vector<bool> special_;              // by id
  std::vector<int> prefix_ids_, suffix_ids_;  // added around the text when add_special_tokens
  int bos_id_ = -1, eos_id_ = -1;
};

}  // namespace narwhal::text
