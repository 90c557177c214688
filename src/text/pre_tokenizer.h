// tokenizer.json's pre_tokenizer: splits text into the words BPE encodes one by one.
#pragma once

#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "text/regex.h"

namespace narwhal::text {

// Owns text that a step creates (a prefix space), so pieces can stay string views during one encode.
using TextArena = std::deque<std::string>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Appends the non-empty sub-pieces of `piece` to `out`.
  virtual void split(std::string_view piece, std::vector<std::string_view>& out, TextArena& arena) const = 0;
};

// Builds the pre_tokenizer described by `config` (Sequence, Split, ByteLevel). Throws Error naming `where`
// and the field for anything else, and when no ByteLevel step is present, since the BPE model reads raw bytes.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config, const std::string& where);

}  // namespace narwhal::text
