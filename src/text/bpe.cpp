// BPE encoding of one word, merge order identical to Hugging Face's (lowest rank first, then leftmost).
#include "text/bpe.h"

#include <algorithm>
#include <atomic>

#include "core/error.h"
#include "text/byte_level.h"

namespace narwhal::text {
namespace {

// Words up to this many bytes are cached per thread (Hugging Face caches the same way); longer ones are rare.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 16;

struct Symbol {
  int id;
  int prev;
  int next;
};

struct Candidate {
  uint32_t rank;
  int pos;  // index of the left symbol
  int merged_id;
};

// Heap order: the top is the lowest rank, ties broken by the leftmost position.
bool later(const Candidate& a, const Candidate& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; }

}  // namespace

BpeModel::BpeModel(const nlohmann::json& model, const std::string& where) {
  static std::atomic<uint64_t> instances{0};
  instance_ = ++instances;
  const auto field = [&](const char* name) -> const nlohmann::json& {
    NW_CHECK(model.contains(name), where, ": model has no \"", name, "\"");
    return model.at(name);
  };
  NW_CHECK(model.value("type", "BPE") == "BPE", where, ": model.type is \"", model.value("type", ""),
           "\"; only BPE is supported");
  for (const char* unsupported : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    NW_CHECK(!model.contains(unsupported) || model[unsupported].is_null(), where, ": model.", unsupported,
             " is not supported");
  }
  NW_CHECK(!model.value("byte_fallback", false), where, ": model.byte_fallback is not supported");
  ignore_merges_ = model.value("ignore_merges", false);

  const nlohmann::json& vocab = field("vocab");
  NW_CHECK(vocab.is_object(), where, ": model.vocab must be an object");
  id_of_bytes_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.items()) {
    NW_CHECK(id_json.is_number_integer() && id_json.get<int64_t>() >= 0, where, ": model.vocab[\"", token,
             "\"] is not a non-negative integer id");
    const int id = id_json.get<int>();
    std::string bytes = byte_level_to_bytes(token);
    if (static_cast<size_t>(id) >= bytes_of_id_.size()) bytes_of_id_.resize(id + 1);
    bytes_of_id_[id] = bytes;
    id_of_bytes_[std::move(bytes)] = id;
  }
  for (int b = 0; b < 256; ++b) id_of_byte_[b] = token_to_id(std::string(1, static_cast<char>(b)));

  const nlohmann::json& merges = field("merges");
  NW_CHECK(merges.is_array(), where, ": model.merges must be an array");
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const nlohmann::json& m = merges[rank];
    std::string left, right;
    if (m.is_string()) {  // "left right"
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      NW_CHECK(space != std::string::npos, where, ": model.merges[", rank, "] \"", s, "\" is not \"a b\"");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else {
      NW_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), where, ": model.merges[",
               rank, "] is neither \"a b\" nor [a, b]");
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    }
    const int left_id = token_to_id(byte_level_to_bytes(left));
    const int right_id = token_to_id(byte_level_to_bytes(right));
    const int merged_id = token_to_id(byte_level_to_bytes(left + right));
    NW_CHECK(left_id >= 0 && right_id >= 0 && merged_id >= 0, where, ": model.merges[", rank, "] \"", left, " ",
             right, "\" uses a token missing from model.vocab");
    // A repeated pair keeps its last rank, as in Hugging Face's merge map.
    merges_[pair_key(left_id, right_id)] = Merge{static_cast<uint32_t>(rank), merged_id};
  }
}

std::string_view BpeModel::token_bytes(int id) const {
  return id >= 0 && id <= max_id() ? std::string_view(bytes_of_id_[id]) : std::string_view();
}

int BpeModel::token_to_id(std::string_view bytes) const {
  const auto it = id_of_bytes_.find(std::string(bytes));
  return it == id_of_bytes_.end() ? -1 : it->second;
}

void BpeModel::encode_word(std::string_view word, std::vector<int>& out) const {
  if (ignore_merges_) {
    const int whole = token_to_id(word);
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }
  if (word.size() > kMaxCachedWordBytes) {
    merge_symbols(word, out);
    return;
  }
  // Per-thread cache, so tokenizer threads never contend; it belongs to one model at a time.
  struct Hash {
    using is_transparent = void;  // look up by string_view without building a key string
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  struct Cache {
    uint64_t owner = 0;
    std::unordered_map<std::string, std::vector<int>, Hash, std::equal_to<>> ids_of_word;
  };
  thread_local Cache cache;
  if (cache.owner != instance_ || cache.ids_of_word.size() >= kMaxCacheEntries) {
    cache.ids_of_word.clear();
    cache.owner = instance_;
  }
  const auto it = cache.ids_of_word.find(word);
  if (it != cache.ids_of_word.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  const size_t first = out.size();
  merge_symbols(word, out);
  cache.ids_of_word.emplace(std::string(word), std::vector<int>(out.begin() + first, out.end()));
}

void BpeModel::merge_symbols(std::string_view word, std::vector<int>& out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  for (unsigned char byte : word) {
    // A byte missing from the vocabulary is dropped, as Hugging Face does without an unk_token.
    if (id_of_byte_[byte] < 0) continue;
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({id_of_byte_[byte], index - 1, index + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  const auto push_candidate = [&](int pos) {
    const int next = symbols[pos].next;
    if (next < 0) return;
    const auto it = merges_.find(pair_key(symbols[pos].id, symbols[next].id));
    if (it == merges_.end()) return;
    heap.push_back({it->second.rank, pos, it->second.merged_id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push_candidate(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    // Skip stale candidates: the left symbol was merged away, or its pair no longer yields this token.
    if (left.id < 0 || left.next < 0) continue;
    const auto it = merges_.find(pair_key(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.merged_id != top.merged_id) continue;
    Symbol& right = symbols[left.next];
    left.id = top.merged_id;
    left.next = right.next;
    right.id = -1;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push_candidate(left.prev);
    push_candidate(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.id >= 0) out.push_back(s.id);
  }
}

}  // namespace narwhal::text
