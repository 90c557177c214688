// The pre-tokenizer steps of Hugging Face tokenizers that byte-level BPE tokenizers use.
#include "text/pre_tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "text/byte_level.h"
#include "text/utf8.h"

namespace narwhal::text {
namespace {

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}

  void split(std::string_view piece, std::vector<std::string_view>& out, TextArena& arena) const override {
    // Each step splits every piece the previous one produced.
    std::vector<std::string_view> current{piece}, next;
    for (const auto& step : steps_) {
      next.clear();
      for (std::string_view p : current) step->split(p, next, arena);
      current.swap(next);
    }
    out.insert(out.end(), current.begin(), current.end());
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// Hugging Face's SplitDelimiterBehavior.
enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::string_view pattern, Behavior behavior, bool invert)
      : regex_(pattern), behavior_(behavior), invert_(invert) {}

  void split(std::string_view piece, std::vector<std::string_view>& out, TextArena&) const override {
    // (begin, end, is_match) spans covering the piece, as Hugging Face's Pattern::find_matches lists them.
    struct Span {
      size_t begin, end;
      bool is_match;
    };
    thread_local std::vector<Span> spans;
    spans.clear();
    size_t previous = 0, begin, end;
    for (size_t from = 0; from <= piece.size() && regex_.find(piece, from, &begin, &end);) {
      if (previous != begin) spans.push_back({previous, begin, invert_});
      spans.push_back({begin, end, !invert_});
      previous = end;
      from = end;
      if (begin == end) {  // an empty match: search on from the next character
        if (end == piece.size()) break;
        size_t next = end;
        next_code_point(piece, next);
        from = next;
      }
    }
    if (previous != piece.size()) spans.push_back({previous, piece.size(), invert_});
    emit(piece, spans, out);
  }

 private:
  template <typename Spans>
  void emit(std::string_view piece, const Spans& spans, std::vector<std::string_view>& out) const {
    const size_t first = out.size();
    const auto add = [&](size_t b, size_t e) { out.push_back(piece.substr(b, e - b)); };
    const auto extend_last = [&](size_t e) {
      std::string_view& last = out.back();
      last = std::string_view(last.data(), piece.data() + e - last.data());
    };
    bool previous_match = false;
    switch (behavior_) {
      case Behavior::kRemoved:
        for (const auto& s : spans) {
          if (!s.is_match) add(s.begin, s.end);
        }
        break;
      case Behavior::kIsolated:
        for (const auto& s : spans) add(s.begin, s.end);
        break;
      case Behavior::kMergedWithPrevious:
        for (const auto& s : spans) {
          if (s.is_match && !previous_match && out.size() > first) extend_last(s.end);
          else add(s.begin, s.end);
          previous_match = s.is_match;
        }
        break;
      case Behavior::kContiguous:
        for (const auto& s : spans) {
          if (s.is_match == previous_match && out.size() > first) extend_last(s.end);
          else add(s.begin, s.end);
          previous_match = s.is_match;
        }
        break;
      case Behavior::kMergedWithNext:
        // Walks right to left: a match joins the piece that follows it.
        for (auto s = spans.rbegin(); s != spans.rend(); ++s) {
          if (s->is_match && !previous_match && out.size() > first) {
            std::string_view& last = out.back();
            last = std::string_view(piece.data() + s->begin, last.data() + last.size() - (piece.data() + s->begin));
          } else {
            add(s->begin, s->end);
          }
          previous_match = s->is_match;
        }
        std::reverse(out.begin() + first, out.end());
        break;
    }
    // Empty pieces never reach the model.
    size_t kept = first;
    for (size_t i = first; i < out.size(); ++i) {
      if (!out[i].empty()) out[kept++] = out[i];
    }
    out.resize(kept);
  }

  Regex regex_;
  Behavior behavior_;
  bool invert_;
};

// Byte-level mapping itself is implicit (the BPE model reads raw bytes); this step only adds the optional
// prefix space and the GPT-2 split.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) gpt2_split_ = std::make_unique<SplitPreTokenizer>(kByteLevelPattern, Behavior::kIsolated, false);
  }

  void split(std::string_view piece, std::vector<std::string_view>& out, TextArena& arena) const override {
    // Hugging Face's NormalizedString::prepend does nothing to an empty string.
    if (add_prefix_space_ && !piece.empty() && piece[0] != ' ') piece = arena.emplace_back(" " + std::string(piece));
    if (gpt2_split_) gpt2_split_->split(piece, out, arena);
    else if (!piece.empty()) out.push_back(piece);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitPreTokenizer> gpt2_split_;
};

std::string regex_escape(const std::string& literal) {
  std::string escaped;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-").find(c) != std::string_view::npos) escaped.push_back('\\');
    escaped.push_back(c);
  }
  return escaped;
}

std::unique_ptr<PreTokenizer> make_step(const nlohmann::json& config, const std::string& where,
                                        const std::string& field, bool* has_byte_level) {
  NW_CHECK(config.is_object() && config.contains("type"), where, ": ", field, " needs a \"type\"");
  const std::string type = config["type"].get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    const nlohmann::json& list = config.value("pretokenizers", nlohmann::json::array());
    for (size_t i = 0; i < list.size(); ++i) {
      steps.push_back(make_step(list[i], where, cat(field, ".pretokenizers[", i, "]"), has_byte_level));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") {
    const nlohmann::json& pattern = config.value("pattern", nlohmann::json::object());
    std::string regex;
    if (pattern.contains("Regex")) regex = pattern["Regex"].get<std::string>();
    else if (pattern.contains("String")) regex = regex_escape(pattern["String"].get<std::string>());
    else throw Error(cat(where, ": ", field, ".pattern needs \"Regex\" or \"String\""));
    static const std::pair<const char*, Behavior> kBehaviors[] = {
        {"Removed", Behavior::kRemoved}, {"Isolated", Behavior::kIsolated},
        {"MergedWithPrevious", Behavior::kMergedWithPrevious}, {"MergedWithNext", Behavior::kMergedWithNext},
        {"Contiguous", Behavior::kContiguous}};
    const std::string name = config.value("behavior", "");
    for (const auto& [behavior_name, behavior] : kBehaviors) {
      if (name == behavior_name) {
        try {
          return std::make_unique<SplitPreTokenizer>(regex, behavior, config.value("invert", false));
        } catch (const Error& e) {
          throw Error(cat(where, ": ", field, ": ", e.what()));
        }
      }
    }
    throw Error(cat(where, ": ", field, ".behavior \"", name, "\" is unknown"));
  }
  if (type == "ByteLevel") {
    *has_byte_level = true;
    return std::make_unique<ByteLevelPreTokenizer>(config.value("add_prefix_space", false),
                                                   config.value("use_regex", true));
  }
  throw Error(cat(where, ": ", field, ".type \"", type, "\" is not supported (Sequence, Split, ByteLevel are)"));
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config, const std::string& where) {
  bool has_byte_level = false;
  NW_CHECK(!config.is_null(), where, ": pre_tokenizer is null; only byte-level BPE tokenizers are supported");
  auto pre_tokenizer = make_step(config, where, "pre_tokenizer", &has_byte_level);
  NW_CHECK(has_byte_level, where,
           ": pre_tokenizer has no ByteLevel step; only byte-level BPE tokenizers are supported");
  return pre_tokenizer;
}

}  // namespace narwhal::text
