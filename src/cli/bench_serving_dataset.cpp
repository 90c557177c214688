// Dataset sampling of the serving benchmarks; SGLang's rules, with the C++ standard RNG seeded from --seed.
#include "cli/bench_serving_dataset.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/json.h"

namespace narwhal {

namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;  // first turn, second turn

// The first two turns of every conversation that has them, shuffled: SGLang keeps neither more turns nor the
// roles, and samples in file order after a shuffle.
Pairs load_sharegpt(const std::string& path, std::mt19937_64& rng) {
  NW_CHECK(!path.empty(), "--dataset-path FILE is required: a ShareGPT JSON file (a list of {\"conversations\": "
                          "[{\"from\": \"human\", \"value\": ...}, {\"from\": \"gpt\", \"value\": ...}]}); "
                          "narwhal downloads nothing");
  const json dataset = read_json_file(path);
  NW_CHECK(dataset.is_array(), path, ": expected a JSON list of conversations");
  Pairs pairs;
  for (const json& entry : dataset) {
    if (!entry.is_object()) continue;
    const json* turns = entry.contains("conversations") ? &entry["conversations"]
                        : entry.contains("conversation") ? &entry["conversation"]
                                                         : nullptr;
    if (turns == nullptr || !turns->is_array() || turns->size() < 2) continue;
    const json& first = (*turns)[0];
    const json& second = (*turns)[1];
    if (!first.is_object() || !second.is_object() || !first.contains("value") || !second.contains("value") ||
        !first["value"].is_string() || !second["value"].is_string())
      continue;
    pairs.emplace_back(first["value"].get<std::string>(), second["value"].get<std::string>());
  }
  NW_CHECK(!pairs.empty(), path, ": no conversation with two turns");
  std::shuffle(pairs.begin(), pairs.end(), rng);
  return pairs;
}

// SGLang's lengths: uniform over [max(len * ratio, 1), len].
std::vector<int64_t> draw_lengths(int len, double ratio, int count, std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> dist(std::max<int64_t>(static_cast<int64_t>(len * ratio), 1), len);
  std::vector<int64_t> lengths(static_cast<size_t>(count));
  for (int64_t& l : lengths) l = dist(rng);
  return lengths;
}

void print_totals(const std::vector<DatasetRow>& rows) {
  int64_t input = 0, output = 0;
  for (const DatasetRow& r : rows) input += r.prompt_len, output += r.output_len;
  std::printf("#Input tokens: %lld\n#Output tokens: %lld\n", static_cast<long long>(input),
              static_cast<long long>(output));
}

std::vector<DatasetRow> sample_sharegpt(const DatasetOptions& o, const text::Tokenizer& tokenizer,
                                        std::mt19937_64& rng) {
  NW_CHECK(o.sharegpt_output_len == 0 || o.sharegpt_output_len >= 4, "--sharegpt-output-len ", o.sharegpt_output_len,
           " is too small (at least 4)");
  std::vector<DatasetRow> rows;
  for (const auto& [prompt, completion] : load_sharegpt(o.path, rng)) {
    if (rows.size() == static_cast<size_t>(o.num_prompts)) break;
    DatasetRow row;
    row.text = prompt;
    // As transformers' tokenizer.encode: with the special tokens (BOS) the server adds too.
    row.prompt_len = static_cast<int64_t>(tokenizer.encode(prompt, true).size());
    row.output_len = o.sharegpt_output_len > 0 ? o.sharegpt_output_len
                                               : static_cast<int64_t>(tokenizer.encode(completion, true).size());
    if (row.prompt_len < 2 || row.output_len < 2) continue;
    if (o.sharegpt_context_len > 0 && row.prompt_len + row.output_len > o.sharegpt_context_len) continue;
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<DatasetRow> sample_random(const DatasetOptions& o, const text::Tokenizer& tokenizer,
                                      std::mt19937_64& rng) {
  NW_CHECK(o.random_input_len >= 1 && o.random_output_len >= 1, "--random-input-len and --random-output-len must "
           "be >= 1");
  NW_CHECK(o.random_range_ratio >= 0 && o.random_range_ratio <= 1, "--random-range-ratio must be in [0, 1], got ",
           o.random_range_ratio);
  std::vector<int64_t> input_lens = draw_lengths(o.random_input_len, o.random_range_ratio, o.num_prompts, rng);
  const std::vector<int64_t> output_lens = draw_lengths(o.random_output_len, o.random_range_ratio, o.num_prompts, rng);
  const bool as_ids = o.name == "random-ids" && o.send_ids;
  if (!as_ids) {
    // Text is encoded by the server with its special tokens (BOS): leave room for them.
    const int64_t special = static_cast<int64_t>(tokenizer.encode("", true).size());
    for (int64_t& l : input_lens) l = std::max<int64_t>(0, l - special);
  }
  const int vocab = o.max_vocab > 0 ? static_cast<int>(std::min<int64_t>(o.max_vocab, tokenizer.model_vocab_size()))
                                    : tokenizer.model_vocab_size();
  std::vector<DatasetRow> rows;
  auto add_row = [&](std::vector<int> ids, size_t i) {
    DatasetRow row;
    row.prompt_len = input_lens[i];
    row.output_len = output_lens[i];
    row.as_ids = as_ids;
    if (as_ids) row.ids = std::move(ids);
    else row.text = tokenizer.decode(ids);
    rows.push_back(std::move(row));
  };
  if (o.name == "random-ids") {
    // Consecutive ids from a random offset per prompt (SGLang's), so that prompts share no prefix.
    std::uniform_int_distribution<int> offset_dist(0, vocab - 1);
    for (size_t i = 0; i < input_lens.size(); ++i) {
      const int64_t offset = offset_dist(rng);
      std::vector<int> ids(static_cast<size_t>(input_lens[i]));
      for (size_t j = 0; j < ids.size(); ++j) ids[j] = static_cast<int>((offset + i + j) % vocab);
      add_row(std::move(ids), i);
    }
  } else if (!o.path.empty()) {
    // SGLang's random: ShareGPT prompts' tokens, repeated or cut to the drawn length.
    for (const auto& [prompt, completion] : load_sharegpt(o.path, rng)) {
      const size_t i = rows.size();
      if (i == input_lens.size()) break;
      const std::vector<int> source = tokenizer.encode(prompt, true);
      if (source.empty()) continue;
      std::vector<int> ids(static_cast<size_t>(input_lens[i]));
      for (size_t j = 0; j < ids.size(); ++j) ids[j] = source[j % source.size()];
      add_row(std::move(ids), i);
    }
  } else {
    // Without a ShareGPT file (SGLang would download one): tokens drawn uniformly from the vocabulary.
    std::printf("#random: no --dataset-path; prompts are random vocabulary tokens\n");
    std::uniform_int_distribution<int> token_dist(0, vocab - 1);
    for (size_t i = 0; i < input_lens.size(); ++i) {
      std::vector<int> ids(static_cast<size_t>(input_lens[i]));
      for (int& id : ids) id = token_dist(rng);
      add_row(std::move(ids), i);
    }
  }
  return rows;
}

}  // namespace

std::vector<DatasetRow> sample_dataset(const DatasetOptions& options, const text::Tokenizer& tokenizer,
                                       std::mt19937_64& rng) {
  NW_CHECK(options.num_prompts >= 1, "--num-prompts must be >= 1, got ", options.num_prompts);
  std::vector<DatasetRow> rows;
  if (options.name == "sharegpt") rows = sample_sharegpt(options, tokenizer, rng);
  else if (options.name == "random" || options.name == "random-ids") rows = sample_random(options, tokenizer, rng);
  else throw Error(cat("--dataset-name ", options.name, ": expected sharegpt, random or random-ids"));
  NW_CHECK(!rows.empty(), "the dataset gave no prompt (every conversation of ", options.path,
           " was too short or too long)");
  print_totals(rows);
  return rows;
}

}  // namespace narwhal
