// `narwhal generate` through the engine: batch input (repeated --input-ids, --input-ids-file) prints one line
// per prompt and choice, each equal to that prompt run alone; the single-prompt output keeps its old form.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/json.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr auto run = testing::run_command;  // stdout, expecting the exit status

// Runs `narwhal generate` on the v3 fixture with `flags`; returns stdout, expecting exit status `status`.
std::string generate(const std::string& flags, int status = 0) {
  return run(testing::narwhal_bin() + " generate --model-path " + testing::fixture_dir("v3") +
                 " --log-level error --temperature 0 --ignore-eos " + flags + " 2>/dev/null",
             status);
}

std::vector<json> lines_of(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

TEST(GenerateCommand, BatchLinesEqualEachPromptAlone) {
  const std::vector<std::string> prompts = {"5,17,42", "9,8,7,6,5"};
  std::vector<json> alone;
  for (const std::string& p : prompts) {
    const std::string out = generate("--json --max-new-tokens 4 --input-ids " + p);
    const json j = json::parse(out);
    EXPECT_EQ(j.size(), 1u) << "one prompt keeps the plain {\"output_ids\": [...]} form: " << out;
    alone.push_back(j);
  }
  testing::TempDir dir;
  std::ofstream(dir.file("ids.jsonl")) << "{\"input_ids\": [9, 8, 7, 6, 5]}\n";
  const std::vector<json> batch =
      lines_of(generate("--json --max-new-tokens 4 --input-ids 5,17,42 --input-ids-file " + dir.file("ids.jsonl") +
                        " --n 2 --chunked-prefill-size 2 --page-size 2"));
  ASSERT_EQ(batch.size(), prompts.size() * 2);
  for (const json& line : batch) {
    const size_t prompt = line.at("prompt_index").get<size_t>();
    EXPECT_EQ(line.at("output_ids"), alone[prompt].at("output_ids")) << line.dump();
    EXPECT_EQ(line.at("finish_reason").at("type"), "length");
  }
}

TEST(GenerateCommand, BadInputIsAnErrorMessage) {
  generate("--input-ids 5,x", 1);
  generate("--input-ids 5 --stop end", 1);  // the fixture has no tokenizer
  generate("--input-ids 999", 1);  // outside the vocabulary
}

// The trained tiny model (models/arith-tiny, whose MTP layer was trained with it) answering word problems: with
// speculative decoding the ids are plain greedy decoding's, on pages of 4 tokens with chunked prefill and the prefix
// cache, and its drafts are really kept (an accept length that random drafts, about 1.0, never reach).
TEST(GenerateCommand, SpeculativeDecodingGivesThePlainGreedyIds) {
  std::string questions;
  for (const char* q : {"Maya has 21 balloons and shares them equally among 3 friends. How many balloons does each "
                        "friend get?",
                        "Isla reads 10 pages every day for 7 days and then 9 more pages. How many pages does Isla "
                        "read in total?",
                        "Noah buys 3 coins for $7 each and pays with a $50 bill. How much change does Noah get?"})
    questions += " --text 'Question: " + std::string(q) + "\nAnswer:'";
  const std::string common = testing::narwhal_bin() + " generate --model-path " +
                             testing::source_path("models/arith-tiny") + " --json --max-new-tokens 40 "
                             "--page-size 4 --chunked-prefill-size 16" + questions;
  testing::TempDir dir;
  const std::string plain = run(common + " --temperature 0 --log-level error 2>/dev/null", 0);
  for (int steps : {1, 3}) {
    const std::string log = dir.file("log" + std::to_string(steps));
    const std::string spec = run(common + " --temperature 0 --decode-log-interval 1 --speculative-algorithm NEXTN "
                                     "--speculative-num-steps " + std::to_string(steps) + " 2>" + log, 0);
    EXPECT_EQ(lines_of(spec), lines_of(plain)) << "--speculative-num-steps " << steps;
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t at = text.find("Speculative decoding: accept len ");
    ASSERT_NE(at, std::string::npos) << text;
    const double accept = std::stod(text.substr(at + 33));
    EXPECT_GT(accept, steps == 1 ? 1.5 : 2.0) << text.substr(at, 80);
    EXPECT_LE(accept, steps + 1.0);
    // SGLang's decode line, with the accept length and whether the step replayed a CUDA graph (never on the CPU).
    EXPECT_NE(text.find(", accept len: "), std::string::npos) << text;
    EXPECT_NE(text.find(", cuda graph: False, gen throughput (token/s): "), std::string::npos) << text;
  }
  // Tree drafting (topk 2 and 3): the greedy walk through the verified tree keeps decoding's ids, and its drafts are
  // kept as the chain's are.
  for (const char* tree : {"--speculative-eagle-topk 2 --speculative-num-draft-tokens 7",
                           "--speculative-eagle-topk 3 --speculative-num-steps 4 --speculative-num-draft-tokens 10"}) {
    const std::string log = dir.file("tree");
    const std::string spec = run(common + " --temperature 0 --speculative-algorithm NEXTN " + tree + " 2>" + log, 0);
    EXPECT_EQ(lines_of(spec), lines_of(plain)) << tree;
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t at = text.find("Speculative decoding: accept len ");
    ASSERT_NE(at, std::string::npos) << text;
    EXPECT_GT(std::stod(text.substr(at + 33)), 2.0) << tree << ": " << text.substr(at, 80);
  }
  // Seeded sampling: every kept token is the one decoding draws at its position (rejection sampling with a
  // deterministic draft), so the tokens are decoding's.
  const std::string sampling = " --temperature 0.7 --random-seed 3 --log-level error 2>/dev/null";
  EXPECT_EQ(lines_of(run(common + " --speculative-algorithm NEXTN" + sampling, 0)), lines_of(run(common + sampling, 0)));
  // So with a tree: each node draws decoding's draw for its depth's position, and the walk follows that draw.
  EXPECT_EQ(lines_of(run(common + " --speculative-algorithm NEXTN --speculative-eagle-topk 2" + sampling, 0)),
            lines_of(run(common + sampling, 0)));
  // The random fixture's MTP layer drafts badly, but the ids stay the greedy ones.
  EXPECT_EQ(generate("--json --max-new-tokens 10 --input-ids 5,17,42 --speculative-algorithm NEXTN"),
            generate("--json --max-new-tokens 10 --input-ids 5,17,42"));
}

TEST(GenerateCommand, SpeculativeFlagsThatCannotWorkAreRefusedByName) {
  const auto refused = [](const std::string& model, const std::string& flags, const std::string& says) {
    const std::string out = run(testing::narwhal_bin() + " generate --model-path " + testing::fixture_dir(model) +
                                    " --input-ids 5 " + flags + " 2>&1",
                                1);
    EXPECT_NE(out.find(says), std::string::npos) << flags << ": " << out;
  };
  refused("v3", "--speculative-algorithm NEXTN --speculative-eagle-topk 9", "--speculative-eagle-topk must be in [1, 8]");
  refused("v3", "--speculative-algorithm NEXTN --speculative-eagle-topk 2 --speculative-num-steps 1 "
          "--speculative-num-draft-tokens 4", "a tree has at most 1 + 2 nodes");
  refused("v3", "--speculative-algorithm NEXTN --speculative-num-steps 3 --speculative-num-draft-tokens 8",
          "--speculative-num-draft-tokens 8");
  refused("v3", "--speculative-algorithm MEDUSA", "--speculative-algorithm MEDUSA");
  refused("v3", "--speculative-num-steps 2", "need --speculative-algorithm NEXTN");
  refused("v2", "--speculative-algorithm NEXTN", "num_nextn_predict_layers");
  refused("v3", "--device cuda --speculative-algorithm NEXTN --load-format dummy --speculative-draft-model-path /tmp",
          "not read with --load-format dummy");
  // What the GPU runner does not speculate with yet, refused before any GPU is looked for.
  refused("v3", "--device cuda --speculative-algorithm NEXTN --speculative-num-steps 8",
          "--speculative-num-steps 8 on --device cuda");
  refused("v3", "--device cuda --speculative-algorithm NEXTN --speculative-eagle-topk 4 --speculative-num-steps 4 "
          "--speculative-num-draft-tokens 8", "a draft round (topk x (steps - 1) candidates)");
}

// Without a usable GPU, the CUDA paths say so and exit 1 (not a raw cudaMalloc / driver-version error).
TEST(GenerateCommand, NoGpuIsAClearError) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) GTEST_SKIP() << "a GPU is here";
  for (const std::string& command :
       {testing::narwhal_bin() + " generate --device cuda --model-path " + testing::fixture_dir("v3") + " --input-ids 5",
        testing::narwhal_bin() + " bench-one-batch --model-path " + testing::fixture_dir("v3")}) {
    const std::string out = run(command + " 2>&1", 1);
    EXPECT_NE(out.find("needs a CUDA GPU, and none is usable here"), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace narwhal
