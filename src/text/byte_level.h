// GPT-2's byte-level alphabet: every byte is written as one printable character in vocabularies.
#pragma once

#include <string>
#include <string_view>

namespace narwhal::text {

// The pattern the ByteLevel pre-tokenizer splits with when its use_regex is true.
inline constexpr std::string_view kByteLevelPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The raw bytes a vocabulary string stands for. As Hugging Face's ByteLevel decoder does, a string with any
// character outside the alphabet (an added token such as "<｜User｜>") stands for its own UTF-8 bytes.
std::string byte_level_to_bytes(std::string_view token);

}  // namespace narwhal::text
