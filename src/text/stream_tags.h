// Shared by the streaming parsers: how much of a text's end may be the start of a tag still arriving.
#pragma once

#include <algorithm>
#include <initializer_list>
#include <string_view>

namespace narwhal::text {

// Length of the longest suffix of `text` that is a proper prefix of one of `tags`: the bytes a streaming
// parser holds back until the next delta says whether they begin a tag.
inline size_t partial_tag_suffix(std::string_view text, std::initializer_list<std::string_view> tags) {
  size_t longest = 0;
  for (std::string_view tag : tags) {
    for (size_t n = std::min(text.size(), tag.size() - 1); n > longest; --n) {
      if (text.substr(text.size() - n) == tag.substr(0, n)) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

}  // namespace narwhal::text
