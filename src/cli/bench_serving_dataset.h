// The prompts of a serving benchmark, drawn as SGLang's bench_serving draws them: random, random-ids, sharegpt.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace narwhal {

struct DatasetRow {
  std::string text;       // the prompt, unless it is sent as token ids
  std::vector<int> ids;   // the prompt as token ids, when as_ids
  bool as_ids = false;
  int64_t prompt_len = 0;  // the input tokens the benchmark counts for it
  int64_t output_len = 0;  // the tokens its request asks for
};

struct DatasetOptions {
  std::string name = "sharegpt";  // sharegpt, random or random-ids
  std::string path;               // a ShareGPT JSON file
  int num_prompts = 1000;
  int random_input_len = 1024;
  int random_output_len = 1024;
  double random_range_ratio = 0.0;  // lengths are drawn uniformly from [len * ratio, len]
  int sharegpt_output_len = 0;      // 0: the length of the conversation's answer
  int sharegpt_context_len = 0;     // 0: no limit; else longer prompt + output pairs are dropped
  bool send_ids = false;            // random-ids: the backend takes token ids, so send them as they are
  int64_t max_vocab = 0;            // > 0: random tokens also stay below this (a served vocabulary smaller than the
                                    // tokenizer's, as a dummy model's may be)
};

// Draws the rows with `rng` (seeded from --seed) and prints "#Input tokens" / "#Output tokens" as SGLang does.
// Throws Error for a missing or malformed ShareGPT file and impossible lengths.
std::vector<DatasetRow> sample_dataset(const DatasetOptions& options, const text::Tokenizer& tokenizer,
                                       std::mt19937_64& rng);

}  // namespace narwhal
