// Lookup of the generated Unicode property runs through a two-level table built once.
#include "text/unicode.h"

#include <array>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace narwhal::text {
namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr int kBlockBits = 8;
constexpr uint32_t kBlockSize = 1u << kBlockBits;

// Stage 1 maps cp >> 8 to a block index; stage 2 holds deduplicated 256-entry blocks of property bytes.
struct PropertyTable {
  std::vector<uint16_t> block_of;
  std::vector<uint8_t> blocks;

  PropertyTable() {
    std::vector<uint8_t> flat(kMaxCodePoint + 1);
    for (size_t i = 0; i < detail::kUnicodeRunCount; ++i) {
      const uint32_t end = i + 1 < detail::kUnicodeRunCount ? detail::kUnicodeRuns[i + 1].first : kMaxCodePoint + 1;
      std::memset(flat.data() + detail::kUnicodeRuns[i].first, detail::kUnicodeRuns[i].properties,
                  end - detail::kUnicodeRuns[i].first);
    }
    const uint32_t block_count = (kMaxCodePoint + 1) / kBlockSize;
    block_of.resize(block_count);
    std::unordered_map<std::string, uint16_t> index_of_block;
    for (uint32_t b = 0; b < block_count; ++b) {
      std::string block(reinterpret_cast<const char*>(flat.data()) + b * kBlockSize, kBlockSize);
      const auto [it, inserted] =
          index_of_block.emplace(std::move(block), static_cast<uint16_t>(index_of_block.size()));
      if (inserted) blocks.insert(blocks.end(), flat.data() + b * kBlockSize, flat.data() + (b + 1) * kBlockSize);
      block_of[b] = it->second;
    }
  }
};

const PropertyTable& table() {
  static const PropertyTable instance;
  return instance;
}

// ASCII is hot in every pre-tokenizer pass, so it skips the two-level lookup.
const std::array<uint8_t, 128>& ascii_table() {
  static const std::array<uint8_t, 128> instance = [] {
    std::array<uint8_t, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = table().blocks[table().block_of[0] * kBlockSize + c];
    return t;
  }();
  return instance;
}

}  // namespace

uint8_t unicode_properties(char32_t cp) {
  if (cp < 128) return ascii_table()[cp];
  if (cp > kMaxCodePoint) return 0;
  const PropertyTable& t = table();
  return t.blocks[t.block_of[cp >> kBlockBits] * kBlockSize + (cp & (kBlockSize - 1))];
}

uint32_t category_set(const char* name, size_t length) {
  static constexpr std::string_view kNames[] = {"Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd",
                                                "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm",
                                                "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"};
  const std::string_view wanted(name, length);
  uint32_t set = 0;
  for (size_t i = 0; i < std::size(kNames); ++i) {
    // A one-letter name ("L") selects every category of that major class.
    if (wanted == kNames[i] || (wanted.size() == 1 && wanted[0] == kNames[i][0])) set |= 1u << i;
  }
  return set;
}

}  // namespace narwhal::text
