// Tokenizer: added tokens, then pre-tokenizer, then BPE per word; decode through the byte-level alphabet.
#include "text/tokenizer.h"

#include <filesystem>

#include "core/error.h"
#include "core/json.h"
#include "text/byte_level.h"
#include "text/utf8.h"

namespace narwhal::text {
namespace {

void check_normalizer(const nlohmann::json& normalizer, const std::string& where, const std::string& field) {
  if (normalizer.is_null()) return;
  const std::string type = normalizer.value("type", "");
  NW_CHECK(type == "Sequence", where, ": ", field, ".type \"", type,
           "\" is not supported (only no normalization: null or an empty Sequence)");
  const nlohmann::json& list = normalizer.value("normalizers", nlohmann::json::array());
  for (size_t i = 0; i < list.size(); ++i) check_normalizer(list[i], where, cat(field, ".normalizers[", i, "]"));
}

std::string tokenizer_json_path(const std::string& dir) {
  return (std::filesystem::path(dir) / "tokenizer.json").string();
}

}  // namespace

Tokenizer::Tokenizer(const std::string& dir)
    : Tokenizer(dir, tokenizer_json_path(dir), read_json_file(tokenizer_json_path(dir))) {}

Tokenizer::Tokenizer(const std::string& dir, const std::string& where, const nlohmann::json& json)
    : config_(TokenizerConfig::load(dir)),
      added_(json.value("added_tokens", nlohmann::json::array()), where) {
  NW_CHECK(json.is_object() && json.contains("model"), where, ": no \"model\"");
  check_normalizer(json.value("normalizer", nlohmann::json()), where, "normalizer");
  model_ = std::make_unique<BpeModel>(json["model"], where);
  pre_tokenizer_ = make_pre_tokenizer(json.value("pre_tokenizer", nlohmann::json()), where);
  const nlohmann::json& decoder = json.value("decoder", nlohmann::json());
  NW_CHECK(decoder.is_null() || decoder.value("type", "") == "ByteLevel", where, ": decoder.type \"",
           decoder.value("type", ""), "\" is not supported (ByteLevel is)");

  int max_id = model_->max_id();
  for (const AddedToken& t : added_.tokens()) max_id = std::max(max_id, t.id);
  decode_bytes_.resize(max_id + 1);
  special_.resize(max_id + 1);
  for (int id = 0; id <= model_->max_id(); ++id) decode_bytes_[id] = model_->token_bytes(id);
  // An added token wins over a vocabulary token of the same id, as in Hugging Face's id_to_token.
  for (const AddedToken& t : added_.tokens()) {
    NW_CHECK(t.id >= 0, where, ": added token \"", t.content, "\" has a negative id");
    decode_bytes_[t.id] = byte_level_to_bytes(t.content);
    special_[t.id] = t.special;
  }

  const auto role_id = [&](const char* role) {
    const std::string* token = config_.special_token(role);
    return token ? token_to_id(*token) : -1;
  };
  bos_id_ = role_id("bos_token");
  eos_id_ = role_id("eos_token");
  if (config_.add_bos_token || config_.add_eos_token) {
    // transformers' Llama-style classes rebuild the post-processor from these two flags.
    if (config_.add_bos_token.value_or(false)) {
      NW_CHECK(bos_id_ >= 0, dir, "/tokenizer_config.json: add_bos_token is set but bos_token is not a token");
      prefix_ids_.push_back(bos_id_);
    }
    if (config_.add_eos_token.value_or(false)) {
      NW_CHECK(eos_id_ >= 0, dir, "/tokenizer_config.json: add_eos_token is set but eos_token is not a token");
      suffix_ids_.push_back(eos_id_);
    }
  } else {
    read_post_processor(json.value("post_processor", nlohmann::json()), where);
  }
}

void Tokenizer::read_post_processor(const nlohmann::json& post_processor, const std::string& where) {
  if (post_processor.is_null()) return;
  const std::string type = post_processor.value("type", "");
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "Sequence") {
    for (const nlohmann::json& step : post_processor.value("processors", nlohmann::json::array())) {
      read_post_processor(step, where);
    }
    return;
  }
  NW_CHECK(type == "TemplateProcessing", where, ": post_processor.type \"", type,
           "\" is not supported (ByteLevel, TemplateProcessing, Sequence are)");
  // The "single" template: special tokens before the sequence "$A" go in front, those after it behind.
  bool after_sequence = false;
  for (const nlohmann::json& item : post_processor.value("single", nlohmann::json::array())) {
    if (item.contains("Sequence")) {
      after_sequence = true;
      continue;
    }
    const std::string name = item.at("SpecialToken").at("id").get<std::string>();
    const nlohmann::json& ids = post_processor.at("special_tokens").at(name).at("ids");
    for (const nlohmann::json& id : ids) (after_sequence ? suffix_ids_ : prefix_ids_).push_back(id.get<int>());
  }
}

std::vector<int> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const size_t invalid = find_invalid_utf8(text);
  NW_CHECK(invalid == std::string_view::npos, "text to encode is not valid UTF-8 (byte ", invalid, ")");
  thread_local std::vector<AddedVocabulary::Segment> segments;
  thread_local std::vector<std::string_view> words;
  TextArena arena;
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids.insert(ids.end(), prefix_ids_.begin(), prefix_ids_.end());
  added_.split(text, segments);
  for (const AddedVocabulary::Segment& segment : segments) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    words.clear();
    pre_tokenizer_->split(text.substr(segment.begin, segment.end - segment.begin), words, arena);
    for (std::string_view word : words) model_->encode_word(word, ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    bytes.append(token_bytes(id));
  }
  return utf8_lossy(bytes);
}

std::string_view Tokenizer::token_bytes(int id) const {
  return id >= 0 && id < vocab_size() ? std::string_view(decode_bytes_[id]) : std::string_view();
}

bool Tokenizer::is_special(int id) const { return id >= 0 && id < vocab_size() && special_[id]; }

int Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& t : added_.tokens()) {
    if (t.content == token) return t.id;
  }
  return model_->token_to_id(byte_level_to_bytes(token));
}

}  // namespace narwhal::text
